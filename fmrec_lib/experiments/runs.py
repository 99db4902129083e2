"""Run-or-reuse, tuning and cached evaluation sweeps: the experiment layer over ``fit``.

Every training run is identified by its configuration hash (:func:`fmrec_lib.training.train.run_identity`:
the split's content, the model, its version and configs). A run already recorded in a store is
reused, never retrained, so re-rendering a notebook is cheap and nothing computed is lost.
Sweeps (evaluations of a trained model with other settings) are cached in JSON-lines files by
a key naming the run and the settings; an interrupted sweep keeps everything it finished.

At paper size nothing is trained on a CPU by accident: a missing run, or a reused run whose
model file is not here (it was trained on a GPU machine whose checkpoints did not come back),
raises an error naming the campaign job that produces it.

Every function takes the experiment context ``ctx`` (:class:`fmrec_lib.experiments.context.Context`)
first: its size, device and stores.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..config import from_dict
from ..models import model_config_class
from ..training import checkpoints, fit, load_model, resolve_configs, run_config_hash
from ..utils import device_text
from .analyses import SWEEP_VERSIONS, SWEEPS
from .store import cached_rows, find_run, import_run, read_per_user_ranks, record_run

log = logging.getLogger(__name__)

CAMPAIGN_HINT = ("python -m fmrec_lib campaign --size paper --device cuda --deadline SECONDS on a GPU "
                 "(docs/campaign.md), then python -m fmrec_lib merge ARCHIVE")


class MissingRunError(RuntimeError):
    """A run is not in any results store and this context should not train it: a paper-size
    run on a CPU, or any run in a reuse-only context."""


class MissingModelError(FileNotFoundError):
    """A reused run's selected model is not on this machine and may not be retrained here."""


def plain(value: Any) -> Any:
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
        extra = ", ".join(f"{k}={plain(v)}" for k, v in sorted(self.overrides.items()))
        return f"{self.dataset} {self.model} seed {self.seed}" + (f" ({extra})" if extra else "")

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed,
                "overrides": {k: plain(v) for k, v in self.overrides.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "RunSpec":
        return cls(data["dataset"], data["model"], int(data["seed"]), dict(data.get("overrides", {})))


@dataclass(frozen=True)
class TunedSpec:
    """A later-seed run of a tuned model: the grid point selected on the first seed's runs
    (known once they are all recorded)."""

    dataset: str
    model: str
    grid: dict
    seed: int
    tuning_seed: int
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.model} seed {self.seed} (lr tuned on seed {self.tuning_seed})"

    def resolve(self, ctx) -> RunSpec | None:
        """The run, or None while a tuning run is not recorded."""
        point = selected_point(ctx, self.dataset, self.model, self.grid, seed=self.tuning_seed, **self.overrides)
        return None if point is None else RunSpec(self.dataset, self.model, self.seed, {**self.overrides, **point})


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
    ctx: Any = field(repr=False)
    results_path: Path | None = None  # the runs.csv that holds it
    seconds_per_epoch: float | None = None  # measured when trained here (median epoch), None when reused

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
                    f"evaluation sweeps run right after it is trained, in the campaign job '{self.spec.name}'. "
                    f"Run: {CAMPAIGN_HINT}")
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


def retrain(r: Run) -> Path:
    """Train a recorded run again to get its model back (its file was lost), check that it
    reproduces the recorded test metrics, and drop the running checkpoint. A mismatch (CUDA
    training is not bit-reproducible; another device or torch) is logged loudly: the sweeps of
    such a model describe a sibling of the recorded one."""
    ds, mc, tc = resolve(r.ctx, r.spec)
    result = fit(ds, r.spec.model, mc, tc, device=r.ctx.device, checkpoint_dir=r.ctx.store.checkpoints,
                 progress=r.ctx.progress, deadline=r.ctx.deadline)
    checkpoints.running_path(r.ctx.store.checkpoints, r.spec.model, r.config_hash).unlink(missing_ok=True)
    worst = max((abs(result.test[k] - v) for k, v in r.test.items() if k in result.test), default=0.0)
    if worst > RETRAIN_TOLERANCE:
        log.warning("run %s (%s) retrained on %s does not reproduce its recorded test metrics (largest difference "
                    "%.4f points); its sweeps describe the retrained model", r.config_hash, r.spec.name,
                    result.device, worst)
    return checkpoints.selected_path(r.ctx.store.checkpoints, r.spec.model, r.config_hash)


def resolve(ctx, spec: RunSpec):
    """(dataset, model config, train config) of a spec at the context's size."""
    ds = ctx.dataset(spec.dataset)
    mc, tc = resolve_configs(spec.model, *ctx.configs(spec.model, spec.seed, **spec.overrides))
    return ds, mc, tc


def spec_hash(ctx, spec: RunSpec) -> str:
    ds, mc, tc = resolve(ctx, spec)
    return run_config_hash(ds, spec.model, mc, tc)


def find(ctx, spec: RunSpec) -> Run | None:
    """The recorded run of ``spec`` in any of the context's stores, or None."""
    ds, mc, tc = resolve(ctx, spec)
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


def run(ctx, spec: RunSpec) -> Run:
    """Train ``spec`` at the context's size and record it in the context's store, or reuse it
    when a store holds it."""
    found = find(ctx, spec)
    if found is not None:
        log.info("reusing %s (run %s)", spec.name, found.config_hash)
        ctx.trained_on[device_text(found.device)] = True  # what the context's figures and captions name
        return found
    check_may_train(ctx, [spec])
    ds, mc, tc = resolve(ctx, spec)
    result = fit(ds, spec.model, mc, tc, device=ctx.device, checkpoint_dir=ctx.store.checkpoints,
                 progress=ctx.progress, deadline=ctx.deadline, on_epoch_end=ctx.epoch_hook)
    record_run(result, ctx.store.runs)
    # recorded: the running checkpoint (the resume point) is no longer needed
    checkpoints.running_path(ctx.store.checkpoints, spec.model, result.config_hash).unlink(missing_ok=True)
    seconds = sorted(result.epoch_seconds)
    ctx.trained_on[result.device] = True
    return Run(spec, ctx.size.name, result.config_hash, result.model_config, result.train_config, result.val,
               result.test, result.device, False, result.wall_time_s, result.best_epoch, result.epochs_run,
               result.stop_reason, ctx, ctx.store.runs, seconds[len(seconds) // 2] if seconds else None)


def check_may_train(ctx, specs: list[RunSpec]) -> None:
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


def grid_points(grid: dict[str, Iterable]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(ctx, specs: list[RunSpec], points: list[dict], select: str = "NDCG@10") -> tuple[Run, pd.DataFrame]:
    """Run every spec (one per grid point) and keep the best on the selected models'
    validation ``select`` metric (ties: the first point)."""
    runs = [(point, run(ctx, spec)) for point, spec in zip(points, specs)]
    table = pd.DataFrame([{"dataset": r.dataset, "model": r.model, **point, f"val_{select}": r.val[select],
                           "config_hash": r.config_hash} for point, r in runs])
    best_point, best_run = max(runs, key=lambda pr: pr[1].val[select])
    table["selected"] = [p == best_point for p, _ in runs]
    return best_run, table


def selected_point(ctx, dataset: str, model: str, grid: dict, *, seed: int = 1997,
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
    """An evaluation of a trained run: ``kind`` names a function of :mod:`fmrec_lib.experiments.analyses`."""

    kind: str
    params: dict = field(default_factory=dict)

    def key(self, config_hash: str) -> dict:
        version = {"version": SWEEP_VERSIONS[self.kind]} if SWEEP_VERSIONS.get(self.kind, 1) > 1 else {}
        return {"config_hash": config_hash, "kind": self.kind, **version, **{k: plain(v) for k, v in self.params.items()}}

    def to_json(self) -> dict:
        return {"kind": self.kind, "params": {k: plain(v) for k, v in self.params.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Sweep":
        return cls(data["kind"], dict(data.get("params", {})))


def sweep(ctx, run_: Run, sw: Sweep) -> list[dict]:
    """Rows of sweep ``sw`` on ``run_``, cached in ``<kind>_cache.jsonl`` of the stores."""
    if sw.kind not in SWEEPS:
        raise ValueError(f"unknown sweep {sw.kind!r}; known: {', '.join(sorted(SWEEPS))}")
    return cached_rows([s.cache(sw.kind) for s in ctx.stores], sw.key(run_.config_hash),
                       lambda: SWEEPS[sw.kind](ctx, run_, **sw.params))


def model_config_of(run_: Run):
    return from_dict(model_config_class(run_.model), run_.model_config)
