"""Run-or-reuse, tuning and cached evaluation sweeps: the experiment layer over ``fit``.

Every training run is identified by its configuration hash (:func:`fmrec_lib.train.run_identity`:
the split's content, the model, its version and configs). A run already recorded in a store is
reused, never retrained, so re-rendering a notebook is cheap and nothing computed is lost.
Sweeps (evaluations of a trained model with other settings) are cached in JSON-lines files by
a key naming the run and the settings; an interrupted sweep keeps everything it finished.

At paper size nothing is trained on a CPU by accident: a missing run, or a reused run whose
model file is not here (it was trained in a GPU window whose checkpoints could not come back),
raises an error naming the campaign job that produces it.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import pandas as pd

from . import checkpoints
from .config import from_dict
from .models import model_config_class
from .results import append_text, find_run, import_run, locked, read_per_user_ranks
from .train import TrainConfig, fit, load_model, resolve_configs, run_config_hash

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger(__name__)

CAMPAIGN_HINT = ("python -m fmrec_lib campaign --size paper --device cuda --deadline SECONDS on a GPU "
                 "(README: 'GPU windows'), then merge its archive with python -m fmrec_lib merge ARCHIVE")


class MissingRunError(RuntimeError):
    """A run is not in any results store and this context should not train it: a paper-size
    run on a CPU, or any run in a reuse-only context."""


class MissingModelError(FileNotFoundError):
    """A reused run's selected model is not on this machine and may not be retrained here."""


def _plain(value: Any) -> Any:
    """JSON-able form of an override value (dataclasses as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """One training run a notebook needs: dataset, model, seed and overrides of the size's
    settings (any field of the model's config or of ``TrainConfig``)."""

    dataset: str
    model: str = "fmrec"
    seed: int = 1997
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = ", ".join(f"{k}={_plain(v)}" for k, v in sorted(self.overrides.items()))
        return f"{self.dataset} {self.model} seed {self.seed}" + (f" ({extra})" if extra else "")

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed,
                "overrides": {k: _plain(v) for k, v in self.overrides.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "RunSpec":
        return cls(data["dataset"], data["model"], int(data["seed"]), dict(data.get("overrides", {})))


@dataclass
class Run:
    """A finished training run (fresh or reused from a store)."""

    spec: RunSpec
    size: str
    config_hash: str
    model_config: dict
    train_config: dict
    val: dict[str, float]
    test: dict[str, float]
    device: str
    reused: bool
    wall_time_s: float
    best_epoch: int
    epochs_run: int
    stop_reason: str
    ctx: "Context" = field(repr=False)
    results_path: Path | None = None  # the runs.csv that holds it
    seconds_per_epoch: float | None = None  # measured when trained here (median epoch), None when reused
    stack: int = 1  # the number of runs it was trained with (fmrec_lib.stacked), when trained here

    @property
    def dataset(self) -> str:
        return self.spec.dataset

    @property
    def model(self) -> str:
        return self.spec.model

    def checkpoint(self) -> Path | None:
        """The selected model's file in any store, or None."""
        for store in self.ctx.stores:
            path = checkpoints.selected_path(store.checkpoints, self.spec.model, self.config_hash)
            if path.exists():
                return path
        return None

    def load_model(self, device=None):
        """The selected model. A reused run whose model file is missing is retrained on demand
        at smoke and quick size (same seed, same numbers); at paper size this is an error."""
        path = self.checkpoint()
        if path is None:
            if self.size == "paper":
                raise MissingModelError(
                    f"the model of run {self.config_hash} ({self.spec.name}, paper size) is not on this machine: its "
                    f"evaluation sweeps must run right after it is trained, on the GPU, in the campaign job "
                    f"'{self.spec.name}'. Run: {CAMPAIGN_HINT}")
            if self.ctx.reuse_only:
                raise MissingModelError(
                    f"the model of run {self.config_hash} ({self.spec.name}, {self.size} size) is not on this machine "
                    f"and this context trains nothing (reuse only): run without reuse-only to retrain it")
            log.warning("run %s (%s): model file missing (results came from elsewhere); retraining it",
                        self.config_hash, self.spec.name)
            path = retrain(self)
        return load_model(path, device or self.ctx.device)

    def per_user_ranks(self):
        """Per-user 0-based test ranks (numpy, users in dataset order) recorded with this run's
        rows (the store that holds them), or None."""
        return read_per_user_ranks(self.results_path, self.config_hash) if self.results_path else None


RETRAIN_TOLERANCE = 1e-6  # points (%): a retrained model whose test metrics differ by more is not the recorded one


def retrain(r: "Run") -> Path:
    """Train a recorded run again to get its model back (its file was lost), check that it
    reproduces the recorded test metrics, and drop the running checkpoint. A mismatch (CUDA
    training is not bit-reproducible; another device or torch) is logged loudly: the sweeps of
    such a model describe a sibling of the recorded one."""
    ds, mc, tc = _resolve(r.ctx, r.spec)
    result = fit(ds, r.spec.model, mc, tc, device=r.ctx.device, checkpoint_dir=r.ctx.store.checkpoints,
                 progress=r.ctx.progress, deadline=r.ctx.deadline)
    checkpoints.running_path(r.ctx.store.checkpoints, r.spec.model, r.config_hash).unlink(missing_ok=True)
    worst = max((abs(result.test[k] - v) for k, v in r.test.items() if k in result.test), default=0.0)
    if worst > RETRAIN_TOLERANCE:
        log.warning("run %s (%s) retrained on %s does not reproduce its recorded test metrics (largest difference "
                    "%.4f points); its sweeps describe the retrained model", r.config_hash, r.spec.name,
                    result.device, worst)
    return checkpoints.selected_path(r.ctx.store.checkpoints, r.spec.model, r.config_hash)


def _resolve(ctx: "Context", spec: RunSpec):
    """(dataset, model config, train config) of a spec at the context's size."""
    ds = ctx.dataset(spec.dataset)
    mc, tc = ctx.configs(spec.model, spec.seed, **spec.overrides)
    mc_obj, tc_obj = resolve_configs(spec.model, mc, tc)
    return ds, mc_obj, tc_obj


def spec_hash(ctx: "Context", spec: RunSpec) -> str:
    ds, mc, tc = _resolve(ctx, spec)
    return run_config_hash(ds, spec.model, mc, tc)


def find(ctx: "Context", spec: RunSpec) -> Run | None:
    """The recorded run of ``spec`` in any of the context's stores, or None."""
    ds, mc, tc = _resolve(ctx, spec)
    run_hash = run_config_hash(ds, spec.model, mc, tc)
    for store in ctx.stores:
        found = find_run(run_hash, store.runs)
        if found is not None:
            if store != ctx.store:  # reuse across stores: the context's own store gets a copy, so that its
                import_run(found, store.runs, ctx.store.runs)  # results never rest on rows kept elsewhere
            metrics = {(r.split, r.metric): r.value for r in found.itertuples()}
            first = found.iloc[0]
            return Run(spec, ctx.size.name, run_hash, dataclasses.asdict(mc), dataclasses.asdict(tc),
                       {m: v for (s, m), v in metrics.items() if s == "val"},
                       {m: v for (s, m), v in metrics.items() if s == "test"}, first["device"], True,
                       float(first["wall_time_s"]), int(first["best_epoch"]), int(first["epochs_run"]),
                       str(first.get("stop_reason") or ""), ctx, ctx.store.runs)
    return None


def run(ctx: "Context", spec: RunSpec) -> Run:
    """Train ``spec`` at the context's size, or reuse it when a store holds it."""
    found = find(ctx, spec)
    if found is not None:
        log.info("reusing %s (run %s)", spec.name, found.config_hash)
        return found
    _check_may_train(ctx, [spec])
    ds, mc, tc = _resolve(ctx, spec)
    result = fit(ds, spec.model, mc, tc, device=ctx.device, checkpoint_dir=ctx.store.checkpoints,
                 results_path=ctx.store.runs, progress=ctx.progress, deadline=ctx.deadline, on_epoch_end=ctx.epoch_hook)
    return _trained_run(ctx, spec, result)


def _check_may_train(ctx: "Context", specs: list[RunSpec]) -> None:
    """Raise MissingRunError when this context must not train ``specs`` (none of them recorded):
    a reuse-only context, or paper size on a CPU without ``allow_cpu_training``."""
    names = ", ".join(spec.name for spec in specs)
    runs, are, it = ("run", "is", "it") if len(specs) == 1 else ("runs", "are", "them")
    stores = ", ".join(str(s.runs) for s in ctx.stores)
    if ctx.reuse_only:
        raise MissingRunError(f"{ctx.size.name}-size {runs} {names} {are} not recorded and this context trains "
                              f"nothing (reuse only; looked in {stores})")
    if ctx.size.name == "paper" and ctx.device.type != "cuda" and not ctx.allow_cpu_training:
        raise MissingRunError(f"paper-size {runs} {names} {are} not in {stores} and training {it} on a CPU would "
                              f"take hours. Produce {it} with: {CAMPAIGN_HINT}")


def _trained_run(ctx: "Context", spec: RunSpec, result, stack: int = 1) -> Run:
    """The Run of a result ``fit`` (or a stack) has just recorded in the context's store."""
    seconds = sorted(result.epoch_seconds)
    return Run(spec, ctx.size.name, result.config_hash, result.model_config, result.train_config, result.val,
               result.test, result.device, False, result.wall_time_s, result.best_epoch, result.epochs_run,
               result.stop_reason, ctx, ctx.store.runs, seconds[len(seconds) // 2] if seconds else None, stack=stack)


def run_stacked(ctx: "Context", specs: list[RunSpec],
                on_run: "Callable[[int, Run | BaseException], None] | None" = None) -> list["Run | BaseException"]:
    """Train ``specs`` (one dataset and model, stackable: :func:`fmrec_lib.stacked.stack_key`) as
    one stack (:func:`fmrec_lib.stacked.fit_stacked`) into the context's store; each recorded as
    ``run`` would record it. Returns per spec its Run, or the exception that ended it; specs
    already recorded are not trained again (their Run is returned). ``on_run(i, run_or_error)``
    is called as spec i's run ends, while the others train on (the campaign runs its sweeps there,
    with the model just trained). An interrupted stack in the store that holds these runs, and
    otherwise only runs that have ended, is resumed instead of starting a new one."""
    from .stacked import fit_stacked

    found = [find(ctx, spec) for spec in specs]
    todo = [i for i, f in enumerate(found) if f is None]
    if not todo:
        return found
    _check_may_train(ctx, [specs[i] for i in todo])
    resolved = [_resolve(ctx, specs[i]) for i in todo]
    if len({(specs[i].dataset, specs[i].model) for i in todo}) != 1:
        raise ValueError("a stack holds runs of one dataset and one model")
    model = specs[todo[0]].model
    my_hashes = [run_config_hash(ds, model, mc, tc) for ds, mc, tc in resolved]
    configs = [(mc, tc) for _, mc, tc in resolved]
    positions = list(range(len(todo)))  # where each of todo's runs sits in the stack
    others_recorded: set[str] = set()
    earlier = _interrupted_stack(ctx, model, my_hashes)
    if earlier is not None:  # resume it: these runs, and others of it that have ended by now
        mine = dict(zip(my_hashes, configs))
        speed = _speed_fields(*configs[0])  # today's speed settings for every run (they are not its identity)
        configs = [mine.get(h) or (from_dict(model_config_class(model), {**stored_mc, **speed[0]}),
                                   from_dict(TrainConfig, {**stored_tc, **speed[1]}))
                   for h, (stored_mc, stored_tc) in zip(earlier["members"], earlier["configs"])]
        positions = [earlier["members"].index(h) for h in my_hashes]
        others_recorded = {h for h in earlier["members"] if h not in mine and _recorded(ctx, h)}
        log.info("resuming the interrupted stack %s for %d runs", earlier["path"], len(todo))
    K = len(configs)
    spec_at = {k: i for i, k in zip(todo, positions)}

    def as_run(i: int, result) -> "Run | BaseException":
        if result is None:  # it had ended in the interrupted stack: recorded then
            return find(ctx, specs[i]) or RuntimeError(f"{specs[i].name} ended in an earlier stack, unrecorded")
        return result if isinstance(result, BaseException) else _trained_run(ctx, specs[i], result, stack=K)

    def ended(result, error, k: int) -> None:
        if on_run is not None and k in spec_at:
            on_run(spec_at[k], as_run(spec_at[k], error if error is not None else result))

    results = fit_stacked(resolved[0][0], model, configs, device=ctx.device, checkpoint_dir=ctx.store.checkpoints,
                          results_path=ctx.store.runs, progress=ctx.progress, deadline=ctx.deadline,
                          on_epoch_end=ctx.epoch_hook, already_recorded=others_recorded, on_run_end=ended)
    out = list(found)
    for i, k in zip(todo, positions):
        out[i] = as_run(i, results[k])
    return out


def _speed_fields(mc, tc) -> tuple[dict, dict]:
    """The speed-only settings of a (model config, train config) pair, as dicts."""
    return ({f: getattr(mc, f) for f in getattr(mc, "SPEED_FIELDS", ())},
            {f: getattr(tc, f) for f in TrainConfig.SPEED_FIELDS})


def _recorded(ctx: "Context", config_hash: str) -> bool:
    return any(find_run(config_hash, store.runs) is not None for store in ctx.stores)


def _interrupted_stack(ctx: "Context", model: str, hashes: list[str]) -> dict | None:
    """An interrupted stack in the context's store holding every run of ``hashes`` and otherwise
    only runs that have ended (in it, or recorded elsewhere by now), or None."""
    from .stacked import interrupted_stacks

    for earlier in interrupted_stacks(ctx.store.checkpoints, model):
        others = [h for h in earlier["members"] if h not in hashes]
        ended = set(earlier.get("ended", []))
        if set(hashes) <= set(earlier["members"]) and all(h in ended or _recorded(ctx, h) for h in others):
            return earlier
    return None


def grid_points(grid: dict[str, Iterable]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(ctx: "Context", dataset: str, model: str, grid: dict[str, Iterable], *, seed: int = 1997,
         select: str = "NDCG@10", **overrides) -> tuple[Run, pd.DataFrame]:
    """Run every point of ``grid`` and keep the best on the selected models' validation
    ``select`` metric (ties: the first point)."""
    runs = [(point, ctx.run(dataset, model, seed, **overrides, **point)) for point in grid_points(grid)]
    table = pd.DataFrame([{"dataset": dataset, "model": model, **point, f"val_{select}": r.val[select],
                           "config_hash": r.config_hash} for point, r in runs])
    best_point, best_run = max(runs, key=lambda pr: pr[1].val[select])
    table["selected"] = [p == best_point for p, _ in runs]
    return best_run, table


def selected_point(ctx: "Context", dataset: str, model: str, grid: dict, *, seed: int = 1997,
                   select: str = "NDCG@10", **overrides) -> dict | None:
    """The tuned grid point if every point's run is recorded, else None (nothing is trained)."""
    found = []
    for point in grid_points(grid):
        r = find(ctx, RunSpec(dataset, model, seed, {**overrides, **point}))
        if r is None:
            return None
        found.append((point, r.val[select]))
    return max(found, key=lambda pv: pv[1])[0]


@dataclass(frozen=True)
class Sweep:
    """An evaluation of a trained run: ``kind`` names a function of :mod:`fmrec_lib.analyses`."""

    kind: str
    params: dict = field(default_factory=dict)

    def key(self, config_hash: str) -> dict:
        from .analyses import SWEEP_VERSIONS

        version = {"version": SWEEP_VERSIONS[self.kind]} if SWEEP_VERSIONS.get(self.kind, 1) > 1 else {}
        return {"config_hash": config_hash, "kind": self.kind, **version, **{k: _plain(v) for k, v in self.params.items()}}

    def to_json(self) -> dict:
        return {"kind": self.kind, "params": {k: _plain(v) for k, v in self.params.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Sweep":
        return cls(data["kind"], dict(data.get("params", {})))


def cached_rows(paths: list[Path], key: dict, compute) -> list[dict]:
    """Rows for ``key`` from the first JSON-lines file in ``paths`` that holds them, else
    computed and appended to ``paths[0]`` under its lock."""
    key_json = key_text(key)
    for path in paths:
        rows = lookup(path, key_json)
        if rows is not None:
            return rows
    rows = compute()
    target = paths[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        if lookup(target, key_json, lock=False) is None:  # another worker may have finished it meanwhile
            append_text(target, json.dumps({"key": key_json, "rows": rows}, default=str) + "\n")
    return rows


def key_text(key: dict) -> str:
    """The canonical text of a cache key."""
    return json.dumps(key, sort_keys=True, default=str)


def lookup(path: Path, key_json: str, lock: bool = True) -> list[dict] | None:
    """The rows cached under ``key_json`` in a JSON-lines file, or None (read under a shared lock)."""
    if not path.exists():
        return None
    if lock:
        with locked(path, shared=True):
            text = path.read_text()
    else:
        text = path.read_text()
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["key"] == key_json:
                return entry["rows"]
    return None


def sweep(ctx: "Context", run_: Run, sw: Sweep) -> list[dict]:
    """Rows of sweep ``sw`` on ``run_``, cached in ``<kind>_cache.jsonl`` of the stores."""
    from .analyses import SWEEPS

    if sw.kind not in SWEEPS:
        raise ValueError(f"unknown sweep {sw.kind!r}; known: {', '.join(sorted(SWEEPS))}")
    return cached_rows([s.cache(sw.kind) for s in ctx.stores], sw.key(run_.config_hash),
                       lambda: SWEEPS[sw.kind](ctx, run_, **sw.params))


def model_config_of(run_: Run):
    return from_dict(model_config_class(run_.model), run_.model_config)


def train_config_of(run_: Run) -> TrainConfig:
    return from_dict(TrainConfig, run_.train_config)
