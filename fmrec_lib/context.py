"""One resolved experiment context for a size and a device, shared by the notebooks, the
campaign and the command line: where outputs go, which run stores are searched, the device,
progress, captions and figure saving.

Output roots:

* the repository (``results/<size>/``, ``figures/<size>/``, ``checkpoints/<size>/``): the
  committed location, written by the notebooks at their committed configuration, by
  ``make paper`` and by the campaign;
* ``runs/`` in the repository (git-ignored): everything else by default, the command line's
  ``train`` and notebooks run with other parameters included, so a checkout stays clean;
* any folder given as ``output_dir``.

Runs are looked up by configuration hash in the context's own store first, then in both of
the above, so a run trained from the command line is reused by a notebook and vice versa.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .sizes import Size, get_size, resolve_size
from .utils import REPO_ROOT, device_name, resolve_device

log = logging.getLogger(__name__)

LOCAL_ROOT = REPO_ROOT / "runs"


class Caption(str):
    """Markdown text that a notebook cell displays as Markdown when it is the cell's value."""

    def _repr_markdown_(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Store:
    """Where one output root keeps a size's runs: ``runs.csv``, per-user files, sweep caches,
    checkpoints."""

    root: Path
    size: str

    @property
    def results(self) -> Path:
        return self.root / "results" / self.size

    @property
    def runs(self) -> Path:
        return self.results / "runs.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints" / self.size

    def cache(self, kind: str) -> Path:
        return self.results / f"{kind}_cache.jsonl"


@dataclass
class Context:
    """Everything an experiment needs to know about where and how it runs. Build it with
    :func:`setup` (notebooks) or :meth:`create`."""

    size: Size
    device: torch.device
    output_dir: Path
    progress: bool = True
    read_roots: tuple[Path, ...] = ()
    deadline: float | None = None  # a time.time() value: training stops cleanly before it (the campaign's)
    allow_cpu_training: bool = False  # paper-size runs on a CPU (hours each): only when asked for
    reuse_only: bool = False  # train nothing: a run no store holds is reported missing (MissingRunError)
    data_options: dict = field(default_factory=dict)  # load_dataset options (fmt, data_dir, max_users, ...)
    epoch_hook: Any = None  # called as hook(epoch, record) after every training epoch (the campaign's checks)
    fit_by: float | None = None  # a time.time() value a run must be able to finish by (default: the deadline)
    speed: dict = field(default_factory=dict)  # speed-only settings for every run (tf32, compile, ...): not in the identity
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

    def write(self, frame: pd.DataFrame, name: str) -> Path:
        """Write a notebook's tidy table to ``results/<size>/<name>.csv``."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.table(name), index=False)
        return self.table(name)

    def save_figure(self, fig, name: str) -> list[Path]:
        """Stamp the size and device on the figure itself (a copied PNG keeps them), then write
        ``figures/<size>/<name>.png`` and ``.pdf``."""
        from . import plots

        plots.stamp(fig, self.stamp())
        return plots.save(fig, name, self.figures_dir)

    # -- what is said about it ------------------------------------------------------------

    @property
    def device_label(self) -> str:
        return device_name(self.device)

    def stamp(self) -> str:
        """The one line every figure carries: size, budget and device."""
        note = f" ({self.size.budget_note})" if self.size.budget_note else ""
        return f"size: {self.size.name}{note}; device: {self.device_label}"

    def caption(self, claim: str, measured: str) -> "Caption":
        return Caption(f"**Paper:** {claim}  \n**Measured:** {measured}  \n*Size: {self.size.description}; device: "
                       f"{self.device_label}; outputs: {self.where()}.*")

    def where(self) -> str:
        """The results folder, relative to the repository when inside it."""
        try:
            return str(self.results_dir.relative_to(REPO_ROOT))
        except ValueError:
            return str(self.results_dir)

    # -- data and runs ----------------------------------------------------------------------

    def dataset(self, name: str):
        """A dataset with this size's user cap (cached per context, failures too)."""
        from .data import load_dataset

        if name not in self._datasets:
            options = dict(self.data_options)
            max_users = options.pop("max_users", self.size.user_cap(name))
            try:
                self._datasets[name] = load_dataset(name, max_users=max_users, **options)
            except Exception as e:  # remembered: a missing dataset is looked for (or downloaded) once
                self._datasets[name] = e
        found = self._datasets[name]
        if isinstance(found, Exception):
            raise found
        return found

    def configs(self, model: str, seed: int, **overrides) -> tuple[dict, dict]:
        """(model config, train config) dicts of a run at this size with this context's speed
        settings (speed fields only: they never change a run's identity)."""
        from .train import TrainConfig

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

    def run(self, dataset: str, model: str = "fmrec", seed: int = 1997, **overrides: Any):
        """Train one configuration, or reuse it when a store has it (:func:`fmrec_lib.runs.run`)."""
        from .runs import RunSpec, run

        return run(self, RunSpec(dataset, model, seed, overrides))

    def tune(self, dataset: str, model: str, grid: dict, seed: int = 1997, select: str = "NDCG@10", **overrides):
        from .runs import tune

        return tune(self, dataset, model, grid, seed=seed, select=select, **overrides)

    def sweep(self, run, kind: str, **params):
        """Rows of an evaluation sweep of a trained run, cached (:func:`fmrec_lib.runs.sweep`)."""
        from .runs import Sweep, sweep

        return sweep(self, run, Sweep(kind, params))


REUSE_ONLY_ENV = "FMREC_REUSE_ONLY"


def reuse_only_from_environment() -> bool:
    """Whether ``FMREC_REUSE_ONLY`` asks for a context that trains nothing (1/true/yes)."""
    value = os.environ.get(REUSE_ONLY_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{REUSE_ONLY_ENV} must be 1/true/yes or 0/false/no, got {os.environ[REUSE_ONLY_ENV]!r}")


def setup(notebook: str, size: str = "smoke", device: str = "auto", output_dir: str | Path | None = None, *,
          progress: bool = True, **params) -> Context:
    """A notebook's one-line set-up: logging, display options and the context.

    Outputs go to the committed location only when the notebook runs its committed
    configuration (``params`` equal to its defaults in :data:`fmrec_lib.reports.DEFAULTS`);
    with other parameters they go to ``runs/`` (git-ignored) unless ``output_dir`` says where.
    """
    from .reports import is_committed_configuration

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pd.set_option("display.precision", 3)
    if output_dir is None and not is_committed_configuration(notebook, params):
        output_dir = LOCAL_ROOT
        log.warning("%s: parameters differ from the committed configuration; outputs go to %s", notebook, LOCAL_ROOT)
    ctx = Context.create(size, device, output_dir, progress)
    print(f"{notebook}: size={ctx.size.name} device={ctx.device_label} outputs={ctx.where()}"
          + (" (reuse only: trains nothing)" if ctx.reuse_only else ""))
    return ctx
