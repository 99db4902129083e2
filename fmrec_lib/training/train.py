"""Training with validation-based model selection, atomic checkpoints and exact resume.

``fit`` follows METHOD.md: Adam (lr 1e-3), batch 512, StepLR(100, 0.1), up to 500 epochs,
validate every 20 epochs, stop after 5 validations in a row without a new best on any metric,
and test the last model that set a best. The validation schedule follows the profile: the
paper profile validates after epochs 21, 41, ..., 481 as the authors' counter does (never at
500); the clean profile after 20, 40, ..., 500. The reported validation metrics are those of
the selected model (not the best value of each metric over all validations).

The hot loop has no host sync: loss terms are summed on the device and read once per epoch,
which is also when a NaN or infinite loss is caught. ``fit`` writes nothing unless it is given
a checkpoint folder; recording the result is the experiment layer's job.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
from tqdm import tqdm

from . import checkpoints
from ..config import check_settings, config_hash, from_dict
from ..data import SequentialDataset
from ..evaluation.metrics import EvalProtocol, beyond_accuracy, evaluate
from ..flow.solvers import SamplerConfig
from ..models import MODELS, build_model, model_config_class
from ..models.base import Recommender
from ..utils import configure_precision, device_name, resolve_device, runtime_info, seed_everything

log = logging.getLogger(__name__)

LISTS_K = 10  # length of the top-k lists whose beyond-accuracy measures every run records
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Optimisation, selection and speed settings (paper defaults)."""

    epochs: int = 500
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step: int = 100
    lr_gamma: float = 0.1
    eval_every: int = 20
    # "authors": after epochs eval_every + 1, 2 eval_every + 1, ... (never the last); "regular":
    # after eval_every, 2 eval_every, ... and the last; "auto": "authors" for the paper profile.
    eval_schedule: Literal["auto", "authors", "regular"] = "auto"
    patience: int = 5
    seed: int = 1997
    eval_seed: int = 0  # seed of the evaluation noise generator (x_0, lambda), fixed per evaluation
    last_k_samples: int | None = None  # train on each user's k most recent prefixes only (quick runs)
    eval_batch_size: int = 1024
    fused_adam: bool = False
    tf32: bool = False  # set both ways at the start of every run (utils.configure_precision)
    amp_bf16: bool = False
    compile: bool = False  # torch.compile of the loss, static shapes (compile_loss)
    # torch.compile's mode when compile is on; "reduce-overhead" captures CUDA graphs
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"

    # Settings that change speed, not numbers: left out of the run's identity. (The evaluation
    # batch size is not one of them: it decides which evaluation noise each user gets.)
    SPEED_FIELDS: ClassVar[tuple[str, ...]] = ("fused_adam", "tf32", "compile", "compile_mode")

    def __post_init__(self):
        check_settings(self, positive=("epochs", "batch_size", "lr_step", "eval_every", "patience", "eval_batch_size"),
                       non_negative=("weight_decay", "lr_gamma"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if self.last_k_samples is not None and self.last_k_samples < 1:
            raise ValueError(f"TrainConfig.last_k_samples must be >= 1 or None, got {self.last_k_samples}")
        if self.eval_schedule not in ("auto", "authors", "regular"):
            raise ValueError(f"eval_schedule must be 'auto', 'authors' or 'regular', got {self.eval_schedule!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")

    def resolved(self, profile: str) -> "TrainConfig":
        """This config with ``eval_schedule="auto"`` resolved for a model profile."""
        if self.eval_schedule != "auto":
            return self
        return dataclasses.replace(self, eval_schedule="authors" if profile == "paper" else "regular")

    def validates_after(self, epoch: int) -> bool:
        """Whether a validation follows epoch ``epoch`` (1-based) under the resolved schedule."""
        if self.eval_schedule == "auto":
            raise ValueError("resolve eval_schedule for the model's profile first (TrainConfig.resolved)")
        if self.eval_schedule == "authors":  # the authors validate when their 0-based epoch i > 0 and i % every == 0
            return epoch > 1 and (epoch - 1) % self.eval_every == 0
        return epoch % self.eval_every == 0 or epoch == self.epochs


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the last checkpoint is left untouched."""


class DeadlineReached(RuntimeError):
    """The run was stopped before its deadline; its running checkpoint, written after the last
    epoch it trained, is kept for a resume."""


@dataclass
class RunResult:
    dataset: str
    model: str
    profile: str
    model_config: dict
    train_config: dict
    config_hash: str
    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    device: str
    history: list[dict] = field(default_factory=list)
    protocol: str = ""
    n_model_calls: int = 1
    fingerprint: str = ""
    stop_reason: str = ""  # "patience", "max_epochs" or "not trained"
    runtime: dict = field(default_factory=dict)
    test_ranks: torch.Tensor | None = None  # 0-based rank of each user's test target, for paired tests
    epoch_seconds: list[float] = field(default_factory=list)  # wall time per epoch trained in this process


def compile_loss(loss_fn: Callable, mode: str = "default") -> Callable:
    """``torch.compile`` of a model's loss with static shapes.

    An epoch has two batch sizes, the full one and the last, smaller one. ``fit`` calls the
    compiled loss at the full size only (one graph, specialised to it:
    the fastest kernels, and the fixed shapes CUDA graphs need) and the eager loss for the last
    batch: a second graph costs a second compilation (25 to 29 s on an H100, measured) to
    save about 7 ms once per epoch. ``dynamic=False`` keeps a caller that passes another size
    from recompiling with a symbolic batch size; the models also trace with one
    (tests/training/test_train.py)."""
    return torch.compile(loss_fn, dynamic=False, mode=mode)


class LossTracker:
    """An epoch's loss terms summed on the device in one buffer and read with one host sync.

    ``update`` stacks a batch's terms into a (T,) tensor and adds it in place; ``finite_batches``
    (T,) counts, per term, the batches after which its running sum was still finite. A NaN or
    infinite value keeps the sum non-finite from then on (it absorbs finite values), so for a
    non-finite sum that count is the index of the first batch where the term was NaN or infinite."""

    def __init__(self):
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None  # (T,) float32
        self.finite_batches: torch.Tensor | None = None  # (T,) int64
        self.n_batches = 0

    def update(self, terms: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float() for v in terms.values()])  # (T,)
        if self.sums is None:
            self.names = list(terms)
            self.sums = torch.zeros_like(values)
            self.finite_batches = torch.zeros(values.shape, dtype=torch.int64, device=values.device)
        elif list(terms) != self.names:
            raise ValueError(f"loss terms changed within an epoch: {list(terms)} after {self.names}")
        self.sums += values
        self.finite_batches += torch.isfinite(self.sums)
        self.n_batches += 1

    def read(self) -> tuple[dict[str, float], dict[str, int | None]]:
        """Epoch means per term, and per term the first batch (0-based) where it was not finite
        (None while finite). The epoch's one host sync."""
        packed = torch.cat([self.sums, self.finite_batches.to(self.sums.dtype)])
        sums, finite = packed.cpu().view(2, -1).tolist()
        means = {k: v / self.n_batches for k, v in zip(self.names, sums)}
        first_bad = {k: (None if math.isfinite(v) else int(f)) for k, v, f in zip(self.names, sums, finite)}
        return means, first_bad


def resolve_configs(model: str, model_config: dict | Any | None, train_config: dict | TrainConfig | None):
    """Typed (model config, train config) with the validation schedule resolved for the profile.
    Unknown keys and impossible values fail here, before any work is spent."""
    cfg_cls = model_config_class(model)
    mc = model_config if isinstance(model_config, cfg_cls) else from_dict(cfg_cls, model_config)
    tc = train_config if isinstance(train_config, TrainConfig) else from_dict(TrainConfig, train_config)
    tc = tc.resolved(getattr(mc, "profile", "paper"))
    if MODELS[model][0].trainable and not any(tc.validates_after(e) for e in range(1, tc.epochs + 1)):
        raise ValueError(f"no validation would happen: {tc.epochs} epochs with eval_every={tc.eval_every} under the "
                         f"{tc.eval_schedule!r} schedule (the authors' first validation follows epoch eval_every + 1)")
    return mc, tc


def run_identity(dataset: SequentialDataset, model: str, model_config, train_config: TrainConfig) -> dict:
    """What determines a run's numbers: the split's content (not its file name), the model,
    its code version and config, and the train config without its speed-only fields."""
    tc = train_config.resolved(getattr(model_config, "profile", "paper"))
    train = {k: v for k, v in asdict(tc).items() if k not in TrainConfig.SPEED_FIELDS}
    model_speed = getattr(model_config, "SPEED_FIELDS", ())  # e.g. FMRec's rec_loss: the same function, faster
    mc = {k: v for k, v in asdict(model_config).items() if k not in model_speed}
    return {"data": dataset.fingerprint(), "model": model, "model_version": MODELS[model][0].version,
            "model_config": mc, "train": train}


def run_config_hash(dataset: SequentialDataset, model: str, model_config, train_config: TrainConfig) -> str:
    """12 hex digits identifying a run (:func:`run_identity`)."""
    return config_hash(run_identity(dataset, model, model_config, train_config))


def evaluate_model(model: Recommender, dataset: SequentialDataset, split: str, *, seed: int = 0,
                   batch_size: int = 1024, protocol: EvalProtocol | None = None, progress: bool = False,
                   sampler: SamplerConfig | None = None, keep_ranks: bool = False, lists_k: int | None = None,
                   inputs: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Full-ranking metrics of a model on ``split``; evaluation noise from a generator seeded
    with ``seed`` on the model's device, so the same model and seed give the same numbers.
    ``sampler`` overrides FMRec's configured sampler. With ``keep_ranks``/``lists_k`` the
    accumulator is returned (metrics, per-user ranks, top-k lists). ``inputs`` may pass the
    split's (histories, targets) already on the device."""
    device = model_device(model)
    protocol = protocol or EvalProtocol.for_profile(model.config.profile)
    if inputs is None:
        inputs = dataset.eval_inputs(split, model.config.max_len)
        model.check_inputs(inputs[0])
    generator = torch.Generator(device=device).manual_seed(seed)
    if sampler is None:
        score = lambda h: model.score(h, generator)  # noqa: E731
    else:
        score = lambda h: model.score(h, generator, sampler)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return evaluate(score, inputs[0], inputs[1], protocol, batch_size=batch_size, device=device,
                            progress=progress, keep_ranks=keep_ranks, lists_k=lists_k)
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model lives: its parameters', or its buffers' (popularity has only a buffer)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recommender:
    """Rebuild a selected model saved by ``fit`` (weights only, no code is unpickled)."""
    ckpt = checkpoints.load(path, kind="selected")
    cfg = from_dict(model_config_class(ckpt["model_name"]), ckpt["model_config"])
    net = build_model(ckpt["model_name"], _ItemCount(ckpt["num_items"]), cfg)
    missing, unexpected = net.load_state_dict(ckpt["model"], strict=False)
    if unexpected or any(not k.startswith(net.training_only) for k in missing):
        raise checkpoints.CheckpointError(f"{path} does not fit {ckpt['model_name']} (missing {missing[:3]}, "
                                          f"unexpected {unexpected[:3]})")
    return net.to(resolve_device(device)).eval()


class _ItemCount:
    """Stands in for a dataset where only the item count is needed (popularity is never saved)."""

    def __init__(self, num_items: int):
        self.num_items = num_items


def _rng_state(shuffle: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
             "python": list(_to_lists(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x):
    return [(_to_lists(v) if isinstance(v, tuple) else v) for v in x]


def _to_tuples(x):
    return tuple((_to_tuples(v) if isinstance(v, list) else v) for v in x)


def _restore_rng(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Selection:
    """The selection state: per-metric maxima (the "new best on any metric" rule), the
    selected model's epoch, validation metrics and weights (without training-only parts),
    and the count of validations in a row without a new best."""

    def __init__(self):
        self.best: dict[str, float] = {}
        self.val: dict[str, float] = {}
        self.epoch = 0
        self.bad = 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val: dict[str, float], net: Recommender) -> bool:
        improved = any(v > self.best.get(k, -math.inf) for k, v in val.items())
        if improved:
            self.best.update({k: max(v, self.best.get(k, -math.inf)) for k, v in val.items()})
            self.epoch, self.bad, self.val = epoch, 0, dict(val)
            self.weights = checkpoints.without_training_only(net.state_dict(), net.training_only)
        else:
            self.bad += 1
        return improved

    def to_dict(self, current_epoch: int) -> dict:
        # lean: when the latest validation set the best, the selected weights are the model's own
        return {"best": self.best, "selected_val": self.val, "best_epoch": self.epoch, "bad_evals": self.bad,
                "best_state": None if self.epoch == current_epoch else self.weights}

    def load(self, ckpt: dict, net: Recommender) -> None:
        """Restore from a running checkpoint whose model weights are already loaded into ``net``."""
        self.best, self.val, self.epoch, self.bad = ckpt["best"], ckpt["selected_val"], ckpt["best_epoch"], ckpt["bad_evals"]
        self.weights = (ckpt["best_state"] if ckpt["best_state"] is not None
                        else checkpoints.without_training_only(net.state_dict(), net.training_only))


def finish_run(net: Recommender, dataset: SequentialDataset, model: str, mc, tc: TrainConfig, run_hash: str,
               protocol: EvalProtocol, device: torch.device, *, history: list[dict], val: dict[str, float],
               best_epoch: int, epochs_run: int, stop_reason: str, epoch_seconds=(), t_start: float,
               progress: bool) -> RunResult:
    """Test the selected model ``net``; the run's wall time runs from ``t_start``
    (``time.perf_counter()``) to the end of the test."""
    test_acc = evaluate_model(net, dataset, "test", seed=tc.eval_seed, batch_size=tc.eval_batch_size,
                              protocol=protocol, keep_ranks=True, lists_k=LISTS_K,
                              inputs=_device_inputs(net, dataset, "test", device),
                              progress=progress)
    test = {**test_acc.result(), **beyond_accuracy(test_acc.lists(), dataset.item_counts())}
    runtime = runtime_info(device, compiled=tc.compile, compile_mode=tc.compile_mode, amp_bf16=tc.amp_bf16)
    return RunResult(dataset=dataset.name, model=model, profile=mc.profile, model_config=asdict(mc),
                     train_config=asdict(tc), config_hash=run_hash, val=val, test=test, best_epoch=best_epoch,
                     epochs_run=epochs_run, wall_time_s=time.perf_counter() - t_start, device=device_name(device),
                     history=history, protocol=str(protocol), n_model_calls=net.n_model_calls(),
                     fingerprint=dataset.fingerprint(), stop_reason=stop_reason, runtime=runtime,
                     test_ranks=test_acc.ranks(), epoch_seconds=list(epoch_seconds))


def fit(
    dataset: SequentialDataset,
    model: str = "fmrec",
    model_config: dict | Any | None = None,
    train_config: dict | TrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    deadline: float | None = None,
) -> RunResult:
    """Train ``model`` on ``dataset``, select on validation, test the selected model.

    Writes nothing unless asked: with ``checkpoint_dir`` a running checkpoint is written
    atomically at every validation (an interrupted run resumes from it to the same numbers)
    and the selected model is kept there (the caller records the result and then removes the
    running checkpoint: :func:`fmrec_lib.experiments.runs.run`). ``deadline`` (a ``time.time()`` value) stops the
    run with :class:`DeadlineReached` when the next epoch would end after it.
    """
    t_start = time.perf_counter()
    mc, tc = resolve_configs(model, model_config, train_config)
    device = resolve_device(device)
    configure_precision(tf32=tc.tf32)
    run_hash = run_config_hash(dataset, model, mc, tc)
    seed_everything(tc.seed)
    net = build_model(model, dataset, mc).to(device)
    protocol = EvalProtocol.for_profile(mc.profile)
    val_inputs = _device_inputs(net, dataset, "val", device)

    def finish(history, val, best_epoch, epochs_run, stop_reason, epoch_seconds=()):
        return finish_run(net, dataset, model, mc, tc, run_hash, protocol, device, history=history, val=val,
                          best_epoch=best_epoch, epochs_run=epochs_run, stop_reason=stop_reason,
                          epoch_seconds=epoch_seconds, t_start=t_start, progress=progress)

    if not net.trainable:
        val = evaluate_model(net, dataset, "val", seed=tc.eval_seed, batch_size=tc.eval_batch_size, protocol=protocol,
                             inputs=val_inputs)
        return finish([], val, 0, 0, "not trained")

    trainer = _Trainer(net, dataset, mc, tc, device, run_hash, model, protocol, val_inputs, progress)
    ckpt_path = checkpoints.running_path(checkpoint_dir, model, run_hash) if checkpoint_dir is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        t_start -= trainer.resume(ckpt_path)  # wall time counts the interrupted part too
    stop_reason = trainer.train(ckpt_path, on_epoch_end, deadline, t_start)
    selected = trainer.selection.weights
    net.load_state_dict(selected, strict=False)  # training-only parts are not needed any more
    if checkpoint_dir is not None:
        checkpoints.save({"kind": "selected", "model": selected, "model_name": model,
                          "model_config": asdict(mc), "train_config": asdict(tc), "config_hash": run_hash,
                          "num_items": dataset.num_items, "best_epoch": trainer.selection.epoch},
                         checkpoints.selected_path(checkpoint_dir, model, run_hash))
    sel = trainer.selection
    return finish(trainer.history, sel.val, sel.epoch, trainer.epoch, stop_reason, trainer.epoch_seconds)


def _device_inputs(net: Recommender, dataset: SequentialDataset, split: str, device: torch.device):
    """The split's (histories, targets), checked once and moved to the device once per run."""
    histories, targets = dataset.eval_inputs(split, net.config.max_len)
    net.check_inputs(histories)
    return histories.to(device), targets.to(device)


class _Trainer:
    """The training loop of one run: epochs, validations, the running checkpoint."""

    def __init__(self, net, dataset, mc, tc: TrainConfig, device, run_hash, model_name, protocol, val_inputs, progress):
        self.net, self.dataset, self.mc, self.tc, self.device = net, dataset, mc, tc, device
        self.run_hash, self.model_name, self.protocol, self.val_inputs = run_hash, model_name, protocol, val_inputs
        self.progress = progress
        inputs, targets = dataset.training_samples(mc.max_len, tc.last_k_samples)
        net.check_inputs(inputs)
        self.inputs, self.targets = inputs.to(device), targets.to(device)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                          **({"fused": True} if tc.fused_adam and device.type == "cuda" else {}))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=tc.lr_step, gamma=tc.lr_gamma)
        loss = net.loss
        # under compile, an epoch's last, smaller batch runs the eager loss (compile_loss says why)
        self.eager_loss = loss
        self.loss_fn = compile_loss(loss, tc.compile_mode) if tc.compile else loss
        self.mark_step = tc.compile and tc.compile_mode == "reduce-overhead"  # CUDA graphs reuse outputs per step
        self.shuffle = torch.Generator().manual_seed(tc.seed)
        self.selection = _Selection()
        self.history: list[dict] = []
        self.epoch_seconds: list[float] = []  # wall time of each epoch trained in this process
        self.epoch = 0
        self.saved_epoch = 0  # the epoch the running checkpoint on disk was written after

    def resume(self, path: Path) -> float:
        """Restore the state saved at the last validation; returns the wall time already spent."""
        ckpt = checkpoints.load(path, kind="running")
        if ckpt["config_hash"] != self.run_hash:
            raise checkpoints.CheckpointError(
                f"{path} belongs to another configuration ({ckpt['config_hash']} != {self.run_hash}): move it aside")
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.selection.load(ckpt, self.net)
        self.epoch, self.history = ckpt["epoch"], ckpt["history"]
        self.saved_epoch = self.epoch
        _restore_rng(ckpt["rng"], self.shuffle)
        log.info("resumed %s at epoch %d (best epoch %d)", path, self.epoch, self.selection.epoch)
        return ckpt.get("wall_time_s", 0.0)

    def _save(self, path: Path, t_start: float) -> None:
        self.saved_epoch = self.epoch
        checkpoints.save({"kind": "running", "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                          "scheduler": self.scheduler.state_dict(), "config_hash": self.run_hash,
                          "model_name": self.model_name, "model_config": asdict(self.mc),
                          "train_config": asdict(self.tc), "num_items": self.dataset.num_items, "epoch": self.epoch,
                          "history": self.history, "rng": _rng_state(self.shuffle), **self.selection.to_dict(self.epoch),
                          "wall_time_s": time.perf_counter() - t_start}, path)

    def train(self, ckpt_path: Path | None, on_epoch_end, deadline: float | None, t_start: float) -> str:
        """Epochs until the patience rule or the last epoch; returns why it stopped."""
        tc = self.tc
        n_batches = math.ceil(len(self.targets) / tc.batch_size)
        if self.selection.bad >= tc.patience:
            return "patience"
        bar = self._bar(n_batches)
        try:
            while self.epoch < tc.epochs:
                t_epoch = time.perf_counter()
                if deadline is not None and self.epoch_seconds and \
                        time.time() + max(self.epoch_seconds[-3:]) > deadline:
                    if ckpt_path is not None and self.epoch > self.saved_epoch:
                        self._save(ckpt_path, t_start)  # the epochs since the last validation are not lost
                    where = (f"running checkpoint after epoch {self.saved_epoch}: {ckpt_path}" if ckpt_path
                             else "no checkpoint folder: nothing kept")
                    raise DeadlineReached(f"stopped before epoch {self.epoch + 1}: the deadline is near ({where})")
                self.epoch += 1
                means = self._train_epoch(n_batches, bar)
                record = {"epoch": self.epoch, **{f"loss_{k}": v for k, v in means.items()}}
                validated = tc.validates_after(self.epoch)
                if validated:
                    self._validate(record)
                self.history.append(record)
                self.epoch_seconds.append(time.perf_counter() - t_epoch)  # timing is kept apart from the numbers
                if validated and ckpt_path is not None:
                    self._save(ckpt_path, t_start)
                if bar is not None:
                    last = next((h for h in reversed(self.history) if "val_NDCG@10" in h), {})
                    bar.set_postfix(epoch=self.epoch, loss=f"{means['loss']:.4f}",
                                    **({"val_NDCG@10": f"{last['val_NDCG@10']:.2f}"} if last else {}))
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch, {**record, "seconds": self.epoch_seconds[-1]})
                if self.selection.bad >= tc.patience:
                    return "patience"
            return "max_epochs"
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, n_batches: int):
        if not self.progress:
            return None
        return tqdm(total=self.tc.epochs * n_batches, initial=self.epoch * n_batches, unit="batch",
                    desc=f"{self.model_name} {self.dataset.name}", dynamic_ncols=True, mininterval=1.0)

    def _train_epoch(self, n_batches: int, bar) -> dict[str, float]:
        """One pass over a fresh permutation; the loss terms' means, read with one host sync."""
        tc, net = self.tc, self.net
        net.train()
        perm = torch.randperm(len(self.targets), generator=self.shuffle).to(self.device)
        tracker = LossTracker()
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if tc.amp_bf16 else nullcontext())
        # the epoch's last, smaller batch (eager under compile: compile_loss says why)
        partial = n_batches - 1 if n_batches > 1 and len(self.targets) % tc.batch_size else None
        for b in range(n_batches):
            idx = perm[b * tc.batch_size:(b + 1) * tc.batch_size]
            if self.mark_step:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast:
                terms = (self.eager_loss if b == partial else self.loss_fn)(self.inputs[idx], self.targets[idx])
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            tracker.update(terms)
            if bar is not None:
                bar.update(1)
        self.scheduler.step()
        means, first_bad = tracker.read()  # the epoch's one host sync
        if not all(math.isfinite(v) for v in means.values()):
            bad = {k: v for k, v in first_bad.items() if k != "loss" and v is not None}
            term = min(bad, key=bad.get) if bad else "loss"
            raise NonFiniteLossError(
                f"epoch {self.epoch}: loss term {term!r} is {means[term]} from batch {first_bad[term]} on "
                f"(epoch means: {means}); the last checkpoint is kept")
        return means

    def _validate(self, record: dict) -> None:
        val = evaluate_model(self.net, self.dataset, "val", seed=self.tc.eval_seed,
                             batch_size=self.tc.eval_batch_size, protocol=self.protocol, inputs=self.val_inputs)
        record.update({f"val_{k}": v for k, v in val.items()})
        improved = self.selection.update(self.epoch, val, self.net)
        log.info("epoch %d val %s%s", self.epoch, {k: round(v, 3) for k, v in val.items()},
                 " (new best)" if improved else f" ({self.selection.bad}/{self.tc.patience} without a best)")
