"""Training with validation-based model selection, atomic checkpoints and exact resume.

``fit`` follows METHOD.md: Adam (lr 1e-3), batch 512, StepLR(100, 0.1), up to 500 epochs,
validate every 20 epochs, stop after 5 validations in a row without a new best on any metric,
and test the last model that set a best. The validation schedule follows the profile: the
paper profile validates after epochs 21, 41, ..., 481 as the authors' counter does (never at
500); the clean profile after 20, 40, ..., 500. The reported validation metrics are those of
the selected model (not the best value of each metric over all validations). The hot loop has no host sync: loss terms are summed
on the device in one buffer (:class:`LossTracker`) and read once per epoch, which is also when a NaN or infinite loss is
caught. The evaluation inputs go to the device once per run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from .config import config_hash, from_dict
from .data import SequentialDataset
from .metrics import EvalProtocol, evaluate
from .models import build_model, model_config_class
from .models.base import Recommender
from .results import DEFAULT_RESULTS, append_rows
from .utils import configure_precision, device_name, git_commit, resolve_device, runtime_info, seed_everything

log = logging.getLogger(__name__)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# TrainConfig fields that change speed, not the numbers a run should produce: left out of the run hash.
SPEED_FIELDS = ("fused_adam", "tf32", "amp_bf16", "compile", "compile_mode", "eval_batch_size")


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
    eval_batch_size: int = 1024
    max_users: int | None = None  # a deterministic subset of users, for quick runs
    last_k_samples: int | None = None  # train on each user's k most recent prefixes only (quick runs)
    fused_adam: bool = False
    tf32: bool = False  # set both ways at the start of every run (utils.configure_precision)
    amp_bf16: bool = False
    compile: bool = False  # torch.compile of the loss, static shapes (compile_loss)
    # torch.compile's mode when compile is on; "reduce-overhead" captures CUDA graphs (untested on GPU here)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_every", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
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
    runtime: dict = field(default_factory=dict)  # utils.runtime_info: precision, compilation, determinism

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "profile": self.profile, "config_hash": self.config_hash,
                "seed": self.train_config["seed"], "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "device": self.device, "wall_time_s": round(self.wall_time_s, 2),
                "model_config": self.model_config, "train_config": self.train_config,
                "runtime": self.runtime, "val": self.val, **self.test}


def run_config_hash(dataset: SequentialDataset, model: str, model_config, train_config: TrainConfig) -> str:
    """Identifies a run: what changes its numbers (not the speed flags of the train config)."""
    from .models import MODELS

    train = {k: v for k, v in asdict(train_config.resolved(model_config.profile)).items() if k not in SPEED_FIELDS}
    model_speed = getattr(model_config, "SPEED_FIELDS", ())  # e.g. FMRec's rec_loss: the same function, faster
    model_cfg = {k: v for k, v in asdict(model_config).items() if k not in model_speed}
    return config_hash({"dataset": dataset.name, "users": len(dataset.train), "items": dataset.num_items,
                        "model": model, "model_version": MODELS[model][0].version,
                        "model_config": model_cfg, "train": train, "amp_bf16": train_config.amp_bf16})


def compile_loss(loss_fn: Callable, mode: str = "default") -> Callable:
    """``torch.compile`` of a model's loss with static shapes.

    An epoch has two batch sizes, the full one and the last, smaller one. ``dynamic=False``
    compiles one graph for each, specialised to its size (the fastest kernels, and the fixed
    shapes CUDA graphs need), instead of recompiling at the first small batch with a symbolic
    batch size. The models also trace with a symbolic batch size (tests/test_train.py)."""
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
        sums, finite = torch.cat([self.sums, self.finite_batches.to(self.sums.dtype)]).cpu().view(2, -1).tolist()
        means = {k: v / self.n_batches for k, v in zip(self.names, sums)}
        first_bad = {k: (None if math.isfinite(v) else int(f)) for k, v, f in zip(self.names, sums, finite)}
        return means, first_bad


def evaluate_model(model: Recommender, dataset: SequentialDataset, split: str, *, seed: int = 0,
                   batch_size: int = 1024, protocol: EvalProtocol | None = None, progress: bool = False,
                   data: tuple[torch.Tensor, torch.Tensor] | None = None, **score_options) -> dict[str, float]:
    """Full-ranking metrics of a model on ``split``; evaluation noise from a generator seeded
    with ``seed`` on the model's device, so the same model and seed give the same numbers.

    ``data``: the split's checked inputs (U, L) and targets (U,) already on the model's device
    (``fit`` prepares them once per run); by default they are built from the dataset. The
    batch size matters to the numbers of a model with noise: it decides which draws of the
    generator each user gets."""
    device = next(model.parameters(), torch.empty(0)).device
    protocol = protocol or EvalProtocol.for_profile(model.config.profile)
    if data is None:
        data = dataset.eval_inputs(split, model.config.max_len)
        model.check_inputs(data[0])
    inputs, targets = data
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return evaluate(lambda h: model.score(h, generator, **score_options), inputs, targets, protocol,
                            batch_size=batch_size, device=device, progress=progress)
    finally:
        model.train(was_training)


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def best_model_path(checkpoint_dir: str | Path, model: str, run_hash: str) -> Path:
    """Where ``fit`` leaves the selected model of a finished run."""
    return Path(checkpoint_dir) / f"{model}-{run_hash}.best.pt"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recommender:
    """Rebuild a selected model saved by ``fit`` (weights only, no code is unpickled)."""
    ckpt = load_checkpoint(path)
    cfg = from_dict(model_config_class(ckpt["model_name"]), ckpt["model_config"])
    net = build_model(ckpt["model_name"], _ItemCount(ckpt["num_items"]), cfg)
    net.load_state_dict(ckpt["model"])
    return net.to(resolve_device(device)).eval()


class _ItemCount:
    """Stands in for a dataset where only the item count is needed (popularity is never saved)."""

    def __init__(self, num_items: int):
        self.num_items = num_items


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded with ``weights_only=True`` (no arbitrary code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def fit(
    dataset: SequentialDataset,
    model: str = "fmrec",
    model_config: dict | Any | None = None,
    train_config: dict | TrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    results_path: str | Path | None = DEFAULT_RESULTS,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Train ``model`` on ``dataset``, select on validation, test the selected model.

    With ``checkpoint_dir`` a checkpoint is written atomically at every evaluation and an
    interrupted run resumes from it (same final numbers as an uninterrupted run). The finished
    run is appended to ``results_path`` (None: not recorded).
    """
    t_start = time.perf_counter()
    tc = train_config if isinstance(train_config, TrainConfig) else from_dict(TrainConfig, train_config)
    cfg_cls = model_config_class(model)
    mc = model_config if isinstance(model_config, cfg_cls) else from_dict(cfg_cls, model_config)
    tc = tc.resolved(mc.profile)
    if not any(tc.validates_after(e) for e in range(1, tc.epochs + 1)):
        raise ValueError(f"no validation would happen: {tc.epochs} epochs with eval_every={tc.eval_every} under the "
                         f"{tc.eval_schedule!r} schedule (the authors' first validation follows epoch eval_every + 1)")
    dataset = dataset.subset(tc.max_users)
    device = resolve_device(device)
    configure_precision(tc.tf32)
    run_hash = run_config_hash(dataset, model, mc, tc)

    seed_everything(tc.seed)
    net = build_model(model, dataset, mc).to(device)
    protocol = EvalProtocol.for_profile(mc.profile)
    history: list[dict] = []
    best: dict[str, float] = {}  # per-metric maxima over validations: the "new best on any metric" rule
    selected_val: dict[str, float] = {}  # validation metrics of the selected model
    best_epoch, bad_evals, start_epoch = 0, 0, 0
    best_state = None
    shuffle = torch.Generator().manual_seed(tc.seed)
    eval_data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def evaluate_split(split: str) -> dict[str, float]:
        if split not in eval_data:  # built, checked and moved to the device once per run
            split_inputs, split_targets = dataset.eval_inputs(split, mc.max_len)
            net.check_inputs(split_inputs)
            eval_data[split] = (split_inputs.to(device), split_targets.to(device))
        return evaluate_model(net, dataset, split, seed=tc.eval_seed, batch_size=tc.eval_batch_size,
                              protocol=protocol, data=eval_data[split])

    if not net.trainable:
        val, test = evaluate_split("val"), evaluate_split("test")
        return _finish(dataset, model, mc, tc, run_hash, val, test, 0, 0, t_start, device, history, protocol, net,
                       results_path)

    inputs, targets = dataset.training_samples(mc.max_len, tc.last_k_samples)
    net.check_inputs(inputs)
    inputs, targets = inputs.to(device), targets.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                 **({"fused": True} if tc.fused_adam and device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.lr_step, gamma=tc.lr_gamma)

    ckpt_path = None
    if checkpoint_dir is not None:
        ckpt_path = Path(checkpoint_dir) / f"{model}-{run_hash}.pt"
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            if ckpt["config_hash"] != run_hash:
                raise ValueError(f"{ckpt_path} belongs to another configuration ({ckpt['config_hash']} != {run_hash})")
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch, best, best_epoch = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"]
            selected_val = ckpt["selected_val"]
            bad_evals, history, best_state = ckpt["bad_evals"], ckpt["history"], ckpt["best_state"]
            _restore_rng(ckpt["rng"], shuffle)
            t_start -= ckpt.get("wall_time_s", 0.0)  # wall time counts the interrupted part too
            log.info("resumed %s at epoch %d (best epoch %d)", ckpt_path, start_epoch, best_epoch)

    loss_fn = compile_loss(net.loss, tc.compile_mode) if tc.compile else net.loss
    mark_step = tc.compile and tc.compile_mode == "reduce-overhead"  # CUDA graphs: outputs are reused per step
    n = len(targets)
    n_batches = math.ceil(n / tc.batch_size)
    stopped = bad_evals >= tc.patience
    epoch = start_epoch
    bar = None
    if progress and not stopped:
        from tqdm import tqdm
        bar = tqdm(total=tc.epochs, initial=start_epoch, desc=f"{model} {dataset.name}", unit="epoch")
    while not stopped and epoch < tc.epochs:
        epoch += 1
        net.train()
        perm = torch.randperm(n, generator=shuffle).to(device)
        tracker = LossTracker()
        for b in range(n_batches):
            idx = perm[b * tc.batch_size:(b + 1) * tc.batch_size]
            if mark_step:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp_bf16):
                terms = loss_fn(inputs[idx], targets[idx])
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            tracker.update(terms)
        scheduler.step()
        means, first_bad = tracker.read()  # the epoch's one host sync
        if not all(math.isfinite(v) for v in means.values()):
            bad = {k: v for k, v in first_bad.items() if k != "loss" and v is not None}
            term = min(bad, key=bad.get) if bad else "loss"
            where = f"; the last checkpoint ({ckpt_path}) is kept" if ckpt_path else ""
            raise NonFiniteLossError(
                f"epoch {epoch}: loss term {term!r} is {means[term]} from batch {first_bad[term]} on "
                f"(epoch means: {means}){where}")
        record = {"epoch": epoch, **{f"loss_{k}": v for k, v in means.items()}}
        if tc.validates_after(epoch):
            val = evaluate_split("val")
            record.update({f"val_{k}": v for k, v in val.items()})
            improved = [k for k, v in val.items() if v > best.get(k, -math.inf)]
            if improved:
                best.update({k: max(v, best.get(k, -math.inf)) for k, v in val.items()})
                best_epoch, bad_evals, selected_val = epoch, 0, dict(val)
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                bad_evals += 1
            stopped = bad_evals >= tc.patience
            history.append(record)
            if ckpt_path is not None:
                _atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "config_hash": run_hash,
                              "model_name": model, "model_config": asdict(mc), "train_config": asdict(tc),
                              "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad_evals": bad_evals,
                              "selected_val": selected_val,
                              "history": history, "best_state": best_state, "rng": _rng_state(shuffle),
                              "wall_time_s": time.perf_counter() - t_start}, ckpt_path)
            log.info("epoch %d val %s%s", epoch, {k: round(v, 3) for k, v in val.items()},
                     " (new best)" if improved else f" ({bad_evals}/{tc.patience} without a best)")
        else:
            history.append(record)
        if bar is not None:
            bar.update(1)
            last_val = next((h for h in reversed(history) if "val_HR@10" in h), {})
            bar.set_postfix(loss=f"{means['loss']:.4f}", **({"val_HR@10": f"{last_val['val_HR@10']:.2f}"} if last_val else {}))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    if bar is not None:
        bar.close()

    if best_state is not None:
        net.load_state_dict(best_state)
    if ckpt_path is not None:
        _atomic_save({"model": net.state_dict(), "model_name": model, "model_config": asdict(mc),
                      "train_config": asdict(tc), "config_hash": run_hash, "num_items": dataset.num_items,
                      "best_epoch": best_epoch}, best_model_path(checkpoint_dir, model, run_hash))
    val = dict(selected_val)
    test = evaluate_split("test")
    return _finish(dataset, model, mc, tc, run_hash, val, test, best_epoch, epoch, t_start, device, history,
                   protocol, net, results_path)


def _finish(dataset, model, mc, tc, run_hash, val, test, best_epoch, epochs_run, t_start, device, history, protocol,
            net, results_path) -> RunResult:
    result = RunResult(dataset=dataset.name, model=model, profile=mc.profile, model_config=asdict(mc),
                       train_config=asdict(tc), config_hash=run_hash, val=val, test=test, best_epoch=best_epoch,
                       epochs_run=epochs_run, wall_time_s=time.perf_counter() - t_start,
                       device=device_name(device), history=history, protocol=str(protocol),
                       n_model_calls=net.n_model_calls(),
                       runtime=runtime_info(device, compiled=tc.compile, compile_mode=tc.compile_mode,
                                            amp_bf16=tc.amp_bf16))
    if results_path is not None:
        append_rows(result_rows(result), results_path)
    return result


def result_rows(result: RunResult) -> list[dict]:
    """Tidy rows (one per split x metric) with provenance."""
    run_id = f"{result.config_hash}-{time.strftime('%Y%m%dT%H%M%S')}"
    config = json.dumps({"model_config": result.model_config, "train_config": result.train_config}, sort_keys=True)
    common = {"run_id": run_id, "config_hash": result.config_hash, "dataset": result.dataset, "model": result.model,
              "profile": result.profile, "seed": result.train_config["seed"], "epochs_run": result.epochs_run,
              "best_epoch": result.best_epoch, "n_model_calls": result.n_model_calls, "device": result.device,
              "torch": torch.__version__, "wall_time_s": round(result.wall_time_s, 2), "commit": git_commit(),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "protocol": result.protocol, "config": config,
              "runtime": json.dumps(result.runtime, sort_keys=True)}
    return [{**common, "split": split, "metric": name, "value": value}
            for split, metrics in (("val", result.val), ("test", result.test)) for name, value in metrics.items()]
