"""One experiment context for a size and a device, shared by the notebooks, the campaign and
the command line: where outputs go (the repository for the committed configuration, ``runs/``
otherwise, or any ``output_dir``), which run stores are searched (its own, then the repository's
and ``runs/``: a run trained from the command line is reused by a notebook and vice versa), the
datasets (a named dataset whose files are absent is its record in a store, which renders
committed results; with the files present, their fingerprint must equal the record's), captions
and figure stamps. See docs/architecture.md.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data import DATASETS, DatasetNotFoundError, dataset_label, load_dataset
from ..training import TrainConfig
from ..utils import REPO_ROOT, device_name, resolve_device
from . import plots, runs
from .sizes import Size, get_size, resolve_size
from .store import DatasetRecord, read_dataset_record, write_atomic, write_dataset_record

log = logging.getLogger(__name__)

LOCAL_ROOT = REPO_ROOT / "runs"
REUSE_ONLY_ENV = "FMREC_REUSE_ONLY"


class Caption(str):
    """Markdown text that a notebook cell displays as Markdown when it is the cell's value."""

    def _repr_markdown_(self) -> str:
        return str(self)


class DataMismatchError(ValueError):
    """A dataset's files give another split than the one its committed results were computed on."""


@dataclass(frozen=True)
class Store:
    """Where one output root keeps a size's runs: ``runs.csv``, per-user files, sweep caches,
    the datasets' records, checkpoints."""

    root: Path
    size: str

    @property
    def results(self) -> Path:
        return self.root / "results" / self.size

    @property
    def runs(self) -> Path:
        return self.results / "runs.csv"

    @property
    def datasets(self) -> Path:
        return self.results / "datasets.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints" / self.size

    def cache(self, kind: str) -> Path:
        return self.results / f"{kind}_cache.jsonl"


@dataclass
class Context:
    """Everything an experiment needs to know about where and how it runs. Build it with
    :func:`fmrec_lib.setup` (notebooks) or :meth:`create`."""

    size: Size
    device: torch.device
    output_dir: Path
    progress: bool = True
    read_roots: tuple[Path, ...] = ()
    deadline: float | None = None  # a time.time() value: training stops cleanly before it (the campaign's)
    allow_cpu_training: bool = False  # paper-size runs on a CPU (hours each): only when asked for
    reuse_only: bool = False  # train nothing: a run no store holds is reported missing (MissingRunError)
    data_options: dict = field(default_factory=dict)  # load_dataset options (fmt, max_users, dedupe, ...)
    epoch_hook: Any = None  # called as hook(epoch, record) after every training epoch (the campaign's checks)
    speed: dict = field(default_factory=dict)  # speed-only settings for every run (tf32, compile, ...): not in the identity
    trained_on: dict = field(default_factory=dict, repr=False)  # devices of the runs this context returned (ordered)
    _datasets: dict = field(default_factory=dict, repr=False)
    _reported: set = field(default_factory=set, repr=False)

    @classmethod
    def create(cls, size: str = "auto", device: str = "auto", output_dir: str | Path | None = None,
               progress: bool = True, read_roots: tuple[Path, ...] | None = None,
               reuse_only: bool | None = None) -> "Context":
        """A context for ``size`` (``auto``: paper with CUDA, quick without) on ``device``,
        writing under ``output_dir`` (default: the repository, the committed location) and
        reading runs from ``read_roots`` too (default: the repository and ``runs/``).
        ``reuse_only`` (default: the environment variable ``FMREC_REUSE_ONLY``, which
        ``suite --reuse-only`` sets for its notebooks) trains nothing."""
        dev = resolve_device(device)
        root = Path(output_dir).resolve() if output_dir is not None else REPO_ROOT
        candidates = (REPO_ROOT, LOCAL_ROOT) if read_roots is None else tuple(Path(r) for r in read_roots)
        others = tuple(r for r in candidates if r != root)
        if reuse_only is None:
            reuse_only = reuse_only_from_environment()
        return cls(get_size(resolve_size(size, device)), dev, root, progress, others, reuse_only=reuse_only)

    # -- where things go ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store this context writes to."""
        return Store(self.output_dir, self.size.name)

    @property
    def stores(self) -> list[Store]:
        """Every store searched for runs and sweeps, this context's own first."""
        return [self.store] + [Store(r, self.size.name) for r in self.read_roots]

    @property
    def results_dir(self) -> Path:
        return self.store.results

    @property
    def figures_dir(self) -> Path:
        return self.output_dir / "figures" / self.size.name

    @property
    def committed(self) -> bool:
        return self.output_dir == REPO_ROOT

    def table(self, name: str) -> Path:
        return self.results_dir / f"{name}.csv"

    def write(self, frame: pd.DataFrame, name: str, unit: str, dataset: str | None = None,
              capped: bool = True) -> Path | None:
        """Write a notebook's tidy table to ``results/<size>/<name>.csv``, atomically (a failure
        leaves the previous file whole), saying its ``unit`` and (``capped``) each row's user cap
        (``max_users``: of the row's ``dataset`` column, else of ``dataset``); a column empty on
        every row is left out, and a table without rows is not written."""
        if frame.empty:
            return None
        frame = frame.dropna(axis=1, how="all").assign(unit=unit)
        if capped:
            names = frame["dataset"] if "dataset" in frame else [dataset] * len(frame)
            frame["max_users"] = [self.size.user_cap(n) or "all" for n in names]
        return write_atomic(self.table(name), frame.to_csv(index=False))

    def save_figure(self, fig, name: str) -> list[Path]:
        """Stamp the size and the training devices on the figure itself (a copied PNG keeps
        them), then write ``figures/<size>/<name>.png`` and ``.pdf`` (atomically)."""
        plots.stamp(fig, self.stamp())
        return plots.save(fig, name, self.figures_dir)

    # -- what is said about it ------------------------------------------------------------

    @property
    def device_label(self) -> str:
        return device_name(self.device)

    def stamp(self) -> str:
        """The one line every figure carries: size, budget and the devices its runs were trained
        on (not this machine's, so a figure re-rendered elsewhere is the same)."""
        note = f" ({self.size.budget_note})" if self.size.budget_note else ""
        trained = f"; trained on: {', '.join(self.trained_on)}" if self.trained_on else ""
        return f"size: {self.size.name}{note}{trained}"

    def caption(self, claim: str | None, measured: str) -> Caption:
        """The paper's claim (None: the paper says nothing about it) and what we measured."""
        paper = f"**Paper:** {claim}  \n" if claim else ""
        trained = f"; trained on: {', '.join(self.trained_on)}" if self.trained_on else ""
        return Caption(f"{paper}**Measured:** {measured}  \n*Size: {self.size.description}{trained}; "
                       f"outputs: {self.where()}.*")

    def where(self) -> str:
        """The results folder, relative to the repository when inside it."""
        try:
            return str(self.results_dir.relative_to(REPO_ROOT))
        except ValueError:
            return str(self.results_dir)

    # -- data and runs ----------------------------------------------------------------------

    def dataset(self, name: str, capped: bool = True):
        """A dataset with this size's user cap (``capped=False``: whole), cached per context,
        failures too. A named dataset whose files are missing is its record in a store (which
        renders committed results but cannot train or evaluate); with the files present, the
        record must agree."""
        key = (name, capped)
        if key not in self._datasets:
            options = dict(self.data_options)
            max_users = options.pop("max_users", self.size.user_cap(name)) if capped else None
            try:
                self._datasets[key] = self._load(name, max_users, options)
            except Exception as e:  # remembered: a missing dataset is looked for (or downloaded) once
                self._datasets[key] = e
        found = self._datasets[key]
        if isinstance(found, Exception):
            raise found
        return found

    def _load(self, name: str, max_users: int | None, options: dict):
        if name not in DATASETS or options:  # a user's file, or a named dataset read another way: no record
            return load_dataset(name, max_users=max_users, **options)
        records = [r for r in (read_dataset_record(s.datasets, name, max_users) for s in self.stores) if r]
        try:
            ds = load_dataset(name, max_users=max_users)
        except DatasetNotFoundError as e:
            if records:
                return DatasetRecord(name, records[0], reason=" ".join(str(e).split()))
            raise
        if records and records[0]["fingerprint"] != ds.fingerprint():
            raise DataMismatchError(
                f"dataset {name!r} ({'all' if max_users is None else max_users} users) read from its files has the "
                f"split fingerprint {ds.fingerprint()}, but the results in {self.stores[0].results} were computed on "
                f"{records[0]['fingerprint']}: the files changed (another download or version). Restore the original "
                f"files, or use another output folder.")
        if not records:
            write_dataset_record(self.store.datasets, ds, max_users)
        return ds

    @staticmethod
    def label(name: str) -> str:
        """What a dataset is called in tables, titles and captions (never an absolute path)."""
        return dataset_label(name)

    def record_dataset(self, name: str, **facts) -> None:
        """Add facts (statistics, the split check, lengths) to the whole dataset's record."""
        write_dataset_record(self.store.datasets, self.dataset(name, capped=False), None, **facts)

    def configs(self, model: str, seed: int, **overrides) -> tuple[dict, dict]:
        """(model config, train config) dicts of a run at this size with this context's speed
        settings (speed fields only: they never change a run's identity)."""
        unknown = sorted(set(self.speed) - set(TrainConfig.SPEED_FIELDS))
        if unknown:
            raise ValueError(f"speed settings {unknown} are not speed fields; known: {list(TrainConfig.SPEED_FIELDS)}")
        return self.size.configs(model, seed=seed, **{**overrides, **self.speed})

    def dataset_error(self, name: str) -> Exception | None:
        """Why ``name`` cannot be loaded here (logged once), or None when it can."""
        try:
            self.dataset(name)
            return None
        except Exception as e:  # a missing file, an offline download, a missing download library
            if name not in self._reported:
                self._reported.add(name)
                log.warning("dataset %s is not available here: %s", name, str(e).splitlines()[0] if str(e) else e)
            return e

    def run(self, dataset: str, model: str = "fmrec", seed: int = 1997, **overrides: Any) -> runs.Run:
        """Train one run, or reuse it when a store has it (:func:`fmrec_lib.experiments.runs.run`)."""
        return runs.run(self, runs.RunSpec(dataset, model, seed, overrides))

    def sweep(self, run: runs.Run, kind: str | runs.Sweep, **params) -> list[dict]:
        """Rows of an evaluation sweep of a trained run, cached (:func:`fmrec_lib.experiments.runs.sweep`)."""
        return runs.sweep(self, run, kind if isinstance(kind, runs.Sweep) else runs.Sweep(kind, params))


def reuse_only_from_environment() -> bool:
    """Whether ``FMREC_REUSE_ONLY`` asks for a context that trains nothing (1/true/yes)."""
    value = os.environ.get(REUSE_ONLY_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{REUSE_ONLY_ENV} must be 1/true/yes or 0/false/no, got {os.environ[REUSE_ONLY_ENV]!r}")
