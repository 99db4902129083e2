"""Several runs of one architecture trained as one: stacked parameters and one vmapped step.

At paper size a training step of FMRec on ML-100k is a few hundred kernels of a 64-wide
network on a batch of 512: an H100 is mostly idle inside each kernel. The suite trains about
thirty runs of the same architecture on the same data that differ only in their seed or in a
loss weight (alpha, beta, the fusion noise delta, the flow-matching weight). ``fit_stacked``
trains K of them at once: each parameter is stacked into a (K, ...) tensor
(``torch.func.stack_module_state``), the loss of all K models is one ``torch.func.vmap`` of the
model's own ``loss`` over the stacked parameters and K batches, and one Adam steps all of them.
Each kernel is K times larger and there are as many as for one run.

What each run gets is what ``fit`` would give it, except for the random draws:

* its initial weights (its seed), its batches (its own shuffling generator, seeded as in ``fit``),
  its loss weights (non-persistent buffers, stacked like the weights), Adam, the learning-rate
  schedule, validation, selection and the patience rule (per run; a run that stops is tested and
  recorded at once, the others go on);
* the training noise (x_0, t, dropout, lambda, the reconstruction's zero cells) is drawn for the
  K runs together from the global generator, which continues after the last member's
  initialisation (``vmap(randomness="different")``). A stack of one draws exactly what ``fit`` draws
  (tests/test_stacked.py); in a larger stack each run gets other, equally distributed draws, so its
  numbers differ from its single run's within seed noise. The stack (its members' hashes, in
  order) is recorded in each run's ``runtime`` column: the same stack trained again (the members'
  configurations are in their rows) gives the same numbers.

Exact parts, tested: the vmapped loss and gradients equal each model's own (same draws), one Adam
over stacked parameters equals K Adams (it is elementwise).

Not stackable: GRU4Rec (``nn.GRU`` has no vmap rule), runs that differ in anything but the seed
and the loss weights of :data:`STACKABLE` (a different architecture, time sampler, path or
learning rate), and runs whose loss terms switch on or off differently (alpha = 0, beta = 0).
With a checkpoint folder the stack writes one running checkpoint at every validation, and after
the last epoch trained when a deadline stops it (``<model>-stack-<id>.pt``: the stacked weights, Adam, the schedule, each run's selection, history,
shuffling state and whether it has ended, the global RNG states) and a small ``.json`` beside it
naming its runs and their configurations. The same stack called again resumes from it to the same
numbers as an uninterrupted stack (tests/test_stacked.py); runs that had ended are not tested or
recorded again, and runs recorded elsewhere meanwhile (``already_recorded``) are carried along
untouched. Both files are removed when every run of the stack has ended.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import random
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.func import functional_call, stack_module_state, vmap

from . import checkpoints
from .config import config_hash
from .data import SequentialDataset
from .metrics import EvalProtocol
from .models import build_model
from .models.base import LossModule
from .train import (DeadlineReached, NonFiniteLossError, RunResult, TrainConfig, _device_inputs, _Selection,
                    _to_lists, _to_tuples, compile_loss, evaluate_model, finish_run, resolve_configs,
                    run_config_hash)
from .utils import configure_precision, resolve_device, seed_everything

log = logging.getLogger(__name__)

# Per model: the configuration fields that live in (non-persistent) buffers and may differ
# within a stack. Every other field of the model and train configurations must be equal, the seed aside.
STACKABLE: dict[str, tuple[str, ...]] = {"fmrec": ("alpha", "beta", "delta", "fm_weight"),
                                         "diffurec": ("delta",), "sasrec": ()}


def stack_key(model: str, model_config: Any, train_config: TrainConfig) -> str | None:
    """Runs with the same key can be trained in one stack; None: this run cannot be stacked."""
    if model not in STACKABLE:
        return None
    varying = STACKABLE[model]
    mc = {k: v for k, v in asdict(model_config).items() if k not in varying}
    # Python branches of the loss: which terms are computed must agree within a stack
    mc["_terms"] = {k: getattr(model_config, k) > 0 for k in ("alpha", "beta") if k in varying}
    if "fm_weight" in varying:
        mc["_terms"]["fm_weight_is_1"] = model_config.fm_weight == 1
    tc = {k: v for k, v in asdict(train_config).items() if k != "seed"}
    return config_hash({"model": model, "model_config": mc, "train_config": tc})


def stacked_loss(nets: list[torch.nn.Module], randomness: str = "different", rand_dropout: bool = False
                 ) -> tuple[Callable, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(loss_fn, params, buffers) for K models of one architecture: ``loss_fn(params, buffers,
    inputs (K, B, L), targets (K, B))`` returns each loss term as a (K,) tensor. ``params`` are new
    leaf tensors (K, ...) (the models' own are copied, not shared).

    ``rand_dropout`` (for torch.compile): every dropout draws its mask with ``rand_like``
    (:func:`fmrec_lib.models.transformer.dropout`: inductor turned the vmapped ``bernoulli`` into
    NaN losses), the same distribution with other draws."""
    params, buffers = stack_module_state(nets)
    template = LossModule(copy.deepcopy(nets[0]).to("meta"))
    if rand_dropout:
        from .models.transformer import Dropout, SelfAttention

        for module in template.modules():
            if isinstance(module, torch.nn.Dropout) and not isinstance(module, Dropout):
                raise TypeError(f"{type(module).__name__} in {type(nets[0]).__name__} cannot draw rand-based masks: "
                                f"use fmrec_lib.models.transformer.Dropout")
            if isinstance(module, (Dropout, SelfAttention)):
                module.rand_based = True
    params = {f"net.{k}": v for k, v in params.items()}
    buffers = {f"net.{k}": v for k, v in buffers.items()}

    def one(p, b, inputs, targets):
        return functional_call(template, (p, b), (inputs, targets))

    return vmap(one, in_dims=(0, 0, 0, 0), randomness=randomness), params, buffers


def unstack_into(params: dict[str, torch.Tensor], k: int, net: torch.nn.Module) -> None:
    """Copy model k's slice of the stacked parameters into ``net`` (for evaluation)."""
    own = dict(net.named_parameters())
    with torch.no_grad():
        for name, value in params.items():
            own[name.removeprefix("net.")].copy_(value[k])


@dataclasses.dataclass
class _Member:
    """One run of a stack and its selection state."""

    index: int
    mc: Any
    tc: TrainConfig
    run_hash: str
    net: torch.nn.Module
    shuffle: torch.Generator
    selection: _Selection = dataclasses.field(default_factory=_Selection)
    history: list[dict] = dataclasses.field(default_factory=list)
    done: bool = False
    ended: tuple[str, int] | None = None  # (stop reason, epoch) once the run has stopped training
    result: RunResult | None = None
    error: BaseException | None = None


def stack_id(hashes: list[str]) -> str:
    """A stack's name: its runs' configuration hashes, in order."""
    return config_hash({"stack": list(hashes)})


def stack_paths(folder: str | Path, model: str, hashes: list[str]) -> tuple[Path, Path]:
    """(running checkpoint, its members file) of a stack."""
    base = Path(folder) / f"{model}-stack-{stack_id(hashes)}"
    return base.with_suffix(".pt"), base.with_suffix(".json")


def interrupted_stacks(folder: str | Path, model: str) -> list[dict]:
    """The members files of the stacks of ``model`` with a running checkpoint in ``folder``:
    ``{"members": [hash, ...], "configs": [[model config, train config], ...], "path": ...}``."""
    found = []
    for members_file in sorted(Path(folder).glob(f"{model}-stack-*.json")):
        if members_file.with_suffix(".pt").exists():
            found.append({**json.loads(members_file.read_text()), "path": str(members_file)})
    return found


def _global_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(_to_lists(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_global_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit_stacked(dataset: SequentialDataset, model: str, configs: list[tuple[dict | Any, dict | TrainConfig]], *,
                device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
                resume: bool = True, results_path: str | Path | None = None, progress: bool = True,
                already_recorded: set[str] | frozenset[str] = frozenset(),
                on_epoch_end: Callable[[int, dict], None] | None = None, deadline: float | None = None,
                on_run_end: Callable[[RunResult | None, BaseException | None, int], None] | None = None,
                ) -> list[RunResult | BaseException | None]:
    """Train the runs ``configs`` [(model config, train config), ...] as one stack (module
    docstring). Each run is tested and recorded (``results_path``; its selected model in
    ``checkpoint_dir``) as soon as its patience rule stops it, exactly as ``fit`` records it.
    Returns each run's RunResult, the exception that ended it (a non-finite loss ends that
    run only), or None for a run that had ended before this call resumed the stack or whose hash
    is in ``already_recorded`` (recorded elsewhere meanwhile: it is carried along untouched, its
    model file and rows are not written). ``on_run_end(result, error, index)`` is called as each
    run ends, with the stack's RNG state set aside (whatever it draws does not change the stack)."""
    t_start = time.perf_counter()
    resolved = [resolve_configs(model, mc, tc) for mc, tc in configs]
    keys = {stack_key(model, mc, tc) for mc, tc in resolved}
    if None in keys:
        raise ValueError(f"{model} runs cannot be stacked (stackable: {', '.join(STACKABLE)})")
    if len(keys) != 1:
        raise ValueError("these runs differ in more than the seed and the loss weights "
                         f"{STACKABLE[model]}: they cannot share a stack")
    device = resolve_device(device)
    tc0 = resolved[0][1]
    configure_precision(tf32=tc0.tf32)
    hashes = [run_config_hash(dataset, model, mc, tc) for mc, tc in resolved]
    if len(set(hashes)) != len(hashes):
        raise ValueError("a stack holds each run once: two of these configurations are the same run")
    members = []
    for i, ((mc, tc), run_hash) in enumerate(zip(resolved, hashes)):
        seed_everything(tc.seed)  # the run's own initial weights, as in fit
        net = build_model(model, dataset, mc).to(device)
        members.append(_Member(i, mc, tc, run_hash, net, torch.Generator().manual_seed(tc.seed)))
    # the training noise continues the global generator after the last member's initialisation
    # (for a stack of one: exactly where fit's continues)
    K = len(members)
    protocol = EvalProtocol.for_profile(resolved[0][0].profile)
    val_inputs = _device_inputs(members[0].net, dataset, "val", device)
    inputs, targets = dataset.training_samples(resolved[0][0].max_len, tc0.last_k_samples)
    members[0].net.check_inputs(inputs)
    inputs, targets = inputs.to(device), targets.to(device)
    for m in members:
        m.net.train()
    eager_loss, params, buffers = stacked_loss([m.net for m in members], rand_dropout=tc0.compile)
    loss_fn = compile_loss(eager_loss, tc0.compile_mode) if tc0.compile else eager_loss
    mark_step = tc0.compile and tc0.compile_mode == "reduce-overhead"
    optimizer = torch.optim.Adam(params.values(), lr=tc0.lr, weight_decay=tc0.weight_decay,
                                 **({"fused": True} if tc0.fused_adam and device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc0.lr_step, gamma=tc0.lr_gamma)
    runtime_extra = {"stacked": K, "stack": hashes}
    n = len(targets)
    n_batches = math.ceil(n / tc0.batch_size)
    partial = n_batches - 1 if n_batches > 1 and n % tc0.batch_size else None  # the last batch, eager (as in fit)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if tc0.amp_bf16 else nullcontext()
    epoch_seconds: list[float] = []  # epochs trained by this call (training and validation)
    earlier_seconds: list[float] = []  # those of the interrupted call this one resumed (deadline estimate only)
    bar = _bar(progress, tc0.epochs * n_batches, f"{model} {dataset.name} x{K}")

    ckpt_path = members_path = None
    start = 1
    if checkpoint_dir is not None:
        ckpt_path, members_path = stack_paths(checkpoint_dir, model, hashes)
        if resume and ckpt_path.exists():
            start, spent = _resume(ckpt_path, hashes, members, params, optimizer, scheduler, earlier_seconds)
            t_start -= spent
            log.info("resumed the stack %s at epoch %d (%d of %d runs ended)", ckpt_path, start - 1,
                     sum(m.done for m in members), K)
    for m in members:
        if m.run_hash in already_recorded and not m.done:
            m.done, m.ended = True, ("recorded elsewhere", 0)

    def write_members() -> None:  # which runs the stack holds, their configurations, which have ended
        members_path.parent.mkdir(parents=True, exist_ok=True)
        members_path.write_text(json.dumps({"model": model, "dataset": dataset.name, "members": hashes,
                                            "configs": [[asdict(mc), asdict(tc)] for mc, tc in resolved],
                                            "ended": [m.run_hash for m in members if m.done]}, default=str))
    if members_path is not None:
        write_members()
    if bar is not None:
        bar.update((start - 1) * n_batches)

    saved = start - 1  # the epoch the stack's checkpoint on disk was written after

    def save(epoch: int) -> None:
        nonlocal saved
        saved = epoch
        checkpoints.save({"kind": "stack", "model": {k: v.detach() for k, v in params.items()},
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "members": hashes, "epoch": epoch, "rng": _global_rng(),
                          "epoch_seconds": earlier_seconds + epoch_seconds,
                          "wall_time_s": time.perf_counter() - t_start,
                          "runs": [{"history": m.history, "done": m.done, "shuffle": m.shuffle.get_state(),
                                    "ended": None if m.ended is None else list(m.ended),
                                    "error": None if m.error is None else [type(m.error).__name__, str(m.error)],
                                    **m.selection.to_dict(epoch)} for m in members]}, ckpt_path)
        write_members()

    def end(m: _Member, stop_reason: str, epoch: int) -> None:
        m.done, m.ended, m.error = True, (stop_reason, epoch), None
        rng = _global_rng()  # testing, recording and the caller's callback draw nothing from the stack's stream
        try:
            unstack_into(params, m.index, m.net)  # training-only parts (the reconstructor) as trained
            m.net.load_state_dict(m.selection.weights, strict=False)
            if checkpoint_dir is not None:
                checkpoints.save({"kind": "selected", "model": m.selection.weights, "model_name": model,
                                  "model_config": asdict(m.mc), "train_config": asdict(m.tc),
                                  "config_hash": m.run_hash, "num_items": dataset.num_items,
                                  "best_epoch": m.selection.epoch},
                                 checkpoints.selected_path(checkpoint_dir, model, m.run_hash))
            m.result = finish_run(m.net, dataset, model, m.mc, m.tc, m.run_hash, protocol, device,
                                  history=m.history, val=m.selection.val, best_epoch=m.selection.epoch,
                                  epochs_run=epoch, stop_reason=stop_reason, epoch_seconds=epoch_seconds,
                                  t_start=t_start, results_path=results_path, progress=False,
                                  runtime_extra=runtime_extra)
        except Exception as error:  # one run's failure (a NaN validation, a full disk) ends that run only
            m.error = error
        if on_run_end is not None:
            on_run_end(m.result, m.error, m.index)
        _restore_global_rng(rng)

    for m in members:  # a run whose recording failed before the interruption (a full disk) is recorded now
        if m.done and m.ended is not None and m.error is not None and not isinstance(m.error, NonFiniteLossError):
            end(m, *m.ended)

    try:
        for epoch in range(start, tc0.epochs + 1):
            if all(m.done for m in members):
                break
            recent = (earlier_seconds + epoch_seconds)[-3:]
            if deadline is not None and recent and time.time() + max(recent) > deadline:
                if ckpt_path is not None and epoch - 1 > saved:
                    save(epoch - 1)  # the epochs since the last validation are not lost
                raise DeadlineReached(f"stack of {K} stopped before epoch {epoch}: the deadline is near "
                                      f"({sum(m.done for m in members)} of its runs recorded)")
            t_epoch = time.perf_counter()
            perms = torch.stack([torch.randperm(n, generator=m.shuffle) for m in members]).to(device)  # (K, n)
            sums = None
            for b in range(n_batches):
                idx = perms[:, b * tc0.batch_size:(b + 1) * tc0.batch_size]  # (K, B)
                if mark_step:
                    torch.compiler.cudagraph_mark_step_begin()
                with autocast:
                    terms = (eager_loss if b == partial else loss_fn)(params, buffers, inputs[idx], targets[idx])  # each (K,)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].sum().backward()  # the runs are independent: each slice gets its own gradient
                optimizer.step()
                values = torch.stack([v.detach().float() for v in terms.values()])  # (T, K)
                sums = values if sums is None else sums + values
                if bar is not None:
                    bar.update(1)
            scheduler.step()
            means = (sums / n_batches).cpu()  # the epoch's one host sync
            stopping = []
            for m in members:
                if m.done:
                    continue
                record = {"epoch": epoch, **{f"loss_{k}": means[t, m.index].item() for t, k in enumerate(terms)}}
                if not all(math.isfinite(v) for k, v in record.items() if k != "epoch"):
                    m.history.append(record)
                    m.done, m.ended = True, ("non-finite loss", epoch)
                    m.error = NonFiniteLossError(f"{m.run_hash}: a loss term is not finite at epoch {epoch} "
                                                 f"({record}); the other runs of the stack go on")
                    log.warning("%s", m.error)
                    if on_run_end is not None:
                        on_run_end(None, m.error, m.index)
                    continue
                if m.tc.validates_after(epoch):
                    unstack_into(params, m.index, m.net)
                    val = evaluate_model(m.net, dataset, "val", seed=m.tc.eval_seed, batch_size=m.tc.eval_batch_size,
                                         protocol=protocol, inputs=val_inputs)
                    record.update({f"val_{k}": v for k, v in val.items()})
                    improved = m.selection.update(epoch, val, m.net)
                    log.info("%s epoch %d val %s%s", m.run_hash, epoch, {k: round(v, 3) for k, v in val.items()},
                             " (new best)" if improved else f" ({m.selection.bad}/{m.tc.patience} without a best)")
                m.history.append(record)
                if m.selection.bad >= m.tc.patience:
                    stopping.append(m)
            seconds = time.perf_counter() - t_epoch  # training and validation, as fit times an epoch
            epoch_seconds.append(seconds)
            for m in stopping:
                end(m, "patience", epoch)
            if ckpt_path is not None and tc0.validates_after(epoch):
                save(epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, {"seconds": seconds, "running": sum(not m.done for m in members)})
        for m in members:
            if not m.done:
                end(m, "max_epochs", tc0.epochs)
    finally:
        if bar is not None:
            bar.close()
    if ckpt_path is not None and results_path is not None:  # every run recorded: the stack is over
        ckpt_path.unlink(missing_ok=True)
        members_path.unlink(missing_ok=True)
    return [m.result if m.error is None else m.error for m in members]


def _resume(path: Path, hashes: list[str], members: list[_Member], params: dict[str, torch.Tensor],
            optimizer: torch.optim.Optimizer, scheduler, earlier_seconds: list[float]) -> tuple[int, float]:
    """Load a stack's running checkpoint; returns (the first epoch to train, wall time spent)."""
    ckpt = checkpoints.load(path, kind="stack")
    if ckpt["members"] != hashes:
        raise checkpoints.CheckpointError(f"{path} belongs to another stack ({ckpt['members']} != {hashes}): "
                                          "move it aside")
    with torch.no_grad():
        for name, value in ckpt["model"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    for m, state in zip(members, ckpt["runs"]):
        m.history, m.done = state["history"], state["done"]
        m.ended = tuple(state["ended"]) if state.get("ended") else None
        if state.get("error"):  # a run the stack had ended with an error before the interruption
            kind, text = state["error"]
            m.error = (NonFiniteLossError if kind == NonFiniteLossError.__name__ else RuntimeError)(text)
        m.shuffle.set_state(state["shuffle"])
        unstack_into(params, m.index, m.net)
        m.selection.load(state, m.net)
    _restore_global_rng(ckpt["rng"])
    earlier_seconds.extend(ckpt["epoch_seconds"])
    return ckpt["epoch"] + 1, ckpt.get("wall_time_s", 0.0)


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="batch", desc=desc, dynamic_ncols=True, mininterval=1.0)

