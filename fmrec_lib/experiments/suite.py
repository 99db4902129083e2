"""Run the notebook suite with papermill (the main job): every ``notebooks/NN_*.ipynb`` in order."""
from __future__ import annotations

import logging
import os
import sys
import time
import unittest.mock
from pathlib import Path

from tqdm import tqdm

from ..data import DatasetNotFoundError
from . import notebooks, reports
from .context import REUSE_ONLY_ENV, Context
from .store import write_atomic
from .notebooks import NOTEBOOKS_DIR, notebook_paths
from .sizes import resolve_size

log = logging.getLogger(__name__)


def failure_text(error: Exception) -> str:
    """One line naming why a notebook failed: the exception raised in its cell (papermill's
    error carries it as ``ename``/``evalue``), else the error itself."""
    name, value = getattr(error, "ename", None), getattr(error, "evalue", None)
    text = f"{name}: {value}" if name else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def missing_data(size: str, device: str, only: list[str] | None = None) -> list[str]:
    """Why each dataset the notebooks read is neither on this machine (nor downloadable) nor
    recorded with the results of this size (where the library looked, how to provide it)."""
    ctx = Context.create(size, device, progress=False)
    params = [notebooks.defaults(p.stem) for p in notebook_paths(only)]
    names = dict.fromkeys(n for p in params for n in p.get("datasets", [p["dataset"]] if "dataset" in p else []))
    missing = []
    for name in names:
        try:
            ctx.dataset(name)
            ctx.dataset(name, capped=False)
        except DatasetNotFoundError as e:
            missing.append(" ".join(str(e).split()))
    return missing


def scrub(path: Path, ctx: Context, notebook: str) -> None:
    """Make an executed notebook a stable record of its results: no timings, versions or other
    volatile metadata, no stderr (log noise, paths of this machine); and in its metadata the
    size and budget it was computed at and the runs it declares that are not computed yet (what
    the HTML report shows)."""
    import nbformat  # optional, as papermill: a bare GPU machine trains and runs the campaign without them

    nb = nbformat.read(path, as_version=4)
    nb.metadata = nbformat.from_dict({
        "kernelspec": nb.metadata.get("kernelspec", {}), "language_info": {"name": "python"},
        "fmrec": {"size": ctx.size.name, "description": ctx.size.description, "budget": ctx.size.budget_note,
                  "not_computed": reports.not_computed(ctx, notebook)}})
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k == "tags"})
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a random id
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    write_atomic(path, nbformat.writes(nb) + "\n")


def run_suite(size: str = "auto", device: str = "auto", only: list[str] | None = None,
              output_dir: str | Path | None = None, reuse_only: bool = False) -> int:
    """Execute the notebooks (their figures inline) into ``output_dir`` (default
    ``notebooks/executed/<size>/``); a notebook that fails is reported with its error, keeps its
    previous executed copy, and the rest still run. With ``reuse_only`` the notebooks train
    nothing (their kernels see ``FMREC_REUSE_ONLY=1``): they render what the stores hold. Returns
    the number of failures; nothing runs when data the notebooks need is missing here."""
    import papermill as pm  # optional: only the suite needs it

    size = resolve_size(size, device)
    missing = missing_data(size, device, only)
    if missing:  # stop at once, before any notebook fails on it
        print("error: the notebooks need data this machine does not have, and no record of it lies beside the "
              f"{size}-size results:\n  " + "\n  ".join(missing), file=sys.stderr)
        return len(notebook_paths(only))
    out = Path(output_dir) if output_dir else NOTEBOOKS_DIR / "executed" / size
    out.mkdir(parents=True, exist_ok=True)
    kernel_env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", **({REUSE_ONLY_ENV: "1"} if reuse_only else {})}
    ctx = Context.create(size, device, progress=False, reuse_only=True)
    # the device only where it may matter (a rendering from the stores reads the same on any device)
    parameters = {"size": size} if reuse_only or device == "auto" else {"size": size, "device": device}
    failures = []
    bar = tqdm(notebook_paths(only), desc=f"notebooks ({size})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        t0, tmp = time.perf_counter(), out / f".{nb.name}.tmp"
        try:
            with unittest.mock.patch.dict(os.environ, kernel_env):  # papermill's kernels inherit these
                pm.execute_notebook(str(nb), str(tmp), parameters=parameters,
                                    cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False)
            scrub(tmp, ctx, nb.stem)
            tmp.replace(out / nb.name)
            log.info("%s done in %.0f s -> %s", nb.stem, time.perf_counter() - t0, out / nb.name)
        except Exception as e:  # papermill's PapermillExecutionError names the failing cell's exception
            failures.append(nb.stem)
            bar.write(f"{nb.stem} FAILED after {time.perf_counter() - t0:.0f} s: {failure_text(e)}", file=sys.stderr)
        finally:
            tmp.unlink(missing_ok=True)
    print(f"{len(failures)} of {len(bar)} notebooks failed" + (f": {failures}" if failures else "")
          + f"; executed copies in {out}; tables in results/{size}/, figures in figures/{size}/")
    return len(failures)
