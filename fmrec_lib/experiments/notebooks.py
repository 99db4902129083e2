"""The notebooks as the library sees them: their committed parameters, the runs each one needs,
and their one-line set-up.

A notebook's committed configuration is its own ``parameters`` cell (read from
``notebooks/NN_*.ipynb``, the one source: size, device and output folder aside). A notebook's
runs are declared once, as a list of :class:`Need` (see :mod:`fmrec_lib.experiments.reports`):
its report reads its runs through that declaration, and the campaign plans from it.
"""
from __future__ import annotations

import ast
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..utils import REPO_ROOT
from . import context
from .context import Context
from .runs import RunSpec, Sweep, TunedSpec

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
RUNTIME_PARAMETERS = ("size", "device", "output_dir")  # not part of a notebook's committed configuration


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """``notebooks/NN_*.ipynb`` in order (``only``: name prefixes such as ``00``, ``01_main``)."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.stem.startswith(o) for o in only)]
        if not found:
            raise ValueError(f"no notebook matches {only}; known: {[p.stem for p in notebook_paths()]}")
    return found


def parameters(path: Path) -> dict:
    """The values assigned in a notebook's ``parameters`` cell (literals only)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(tagged)}")
    values = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        (target,) = node.targets
        values[target.id] = ast.literal_eval(node.value)
    return values


@functools.cache
def defaults(notebook: str) -> dict:
    """The committed configuration of ``notebook``: its parameters cell without size, device and
    output folder."""
    path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    if not path.is_file():
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(p.stem for p in notebook_paths())}")
    return {k: v for k, v in parameters(path).items() if k not in RUNTIME_PARAMETERS}


def is_committed_configuration(notebook: str, params: dict) -> bool:
    """Whether ``params`` (size, device and output folder aside) are the notebook's committed ones."""
    given = {k: v for k, v in params.items() if k not in RUNTIME_PARAMETERS}
    return given == defaults(notebook)


@dataclass(frozen=True)
class Need:
    """One training run a notebook needs: its spec (a :class:`~fmrec_lib.experiments.runs.TunedSpec`
    while it waits for tuning runs), what it is to the notebook (``role``), and the sweeps of its
    model the notebook reads, by role."""

    spec: RunSpec | TunedSpec
    role: tuple = ()
    sweeps: dict[tuple, Sweep] = field(default_factory=dict, hash=False, compare=False)


def setup(notebook: str, size: str = "smoke", device: str = "auto", output_dir: str | Path | None = None, *,
          progress: bool = True, **params) -> Context:
    """A notebook's one-line set-up: logging, display options and the context.

    Outputs go to the committed location only when the notebook runs its committed
    configuration (``params`` equal to its parameters cell); with other parameters they go to
    ``runs/`` (git-ignored) unless ``output_dir`` says where."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pd.set_option("display.precision", 3)
    if output_dir is None and not is_committed_configuration(notebook, params):
        output_dir = context.LOCAL_ROOT
        log.warning("%s: parameters differ from the committed configuration; outputs go to %s", notebook, context.LOCAL_ROOT)
    ctx = Context.create(size, device, output_dir, progress)
    # the device only where it may train: a reuse-only rendering reads the same anywhere
    where = " (reuse only: trains nothing)" if ctx.reuse_only else f" device={ctx.device_label}"
    print(f"{notebook}: size={ctx.size.name} outputs={ctx.where()}{where}")
    return ctx
