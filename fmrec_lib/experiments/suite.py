"""Run the notebook suite with papermill (the main job): every ``notebooks/NN_*.ipynb`` in order."""
from __future__ import annotations

import logging
import os
import sys
import time
import unittest.mock
from pathlib import Path

from tqdm.auto import tqdm

from .context import REUSE_ONLY_ENV
from .notebooks import NOTEBOOKS_DIR, notebook_paths
from .sizes import resolve_size

log = logging.getLogger(__name__)


def failure_text(error: Exception) -> str:
    """One line naming why a notebook failed: the exception raised in its cell (papermill's
    error carries it as ``ename``/``evalue``), else the error itself."""
    name, value = getattr(error, "ename", None), getattr(error, "evalue", None)
    text = f"{name}: {value}" if name else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def run_suite(size: str = "auto", device: str = "auto", only: list[str] | None = None,
              output_dir: str | Path | None = None, reuse_only: bool = False) -> int:
    """Execute the notebooks; a failing notebook is reported (with its error) and the rest still
    run. With ``reuse_only`` the notebooks train nothing (their kernels see ``FMREC_REUSE_ONLY=1``):
    they render what the stores hold. Returns the number of failures."""
    if reuse_only:
        with unittest.mock.patch.dict(os.environ, {REUSE_ONLY_ENV: "1"}):  # papermill's kernels inherit it
            return run_suite(size, device, only, output_dir)
    import papermill as pm  # optional: only the suite needs it
    size = resolve_size(size, device)
    out = Path(output_dir) if output_dir else NOTEBOOKS_DIR / "executed" / size
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    bar = tqdm(notebook_paths(only), desc=f"notebooks ({size})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out / nb.name), parameters={"size": size, "device": device},
                                cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False)
            log.info("%s done in %.0f s -> %s", nb.stem, time.perf_counter() - t0, out / nb.name)
        except Exception as e:  # papermill's PapermillExecutionError names the failing cell's exception
            failures.append(nb.stem)
            print(f"{nb.stem} FAILED after {time.perf_counter() - t0:.0f} s: {failure_text(e)}", file=sys.stderr)
    print(f"{len(failures)} of {len(bar)} notebooks failed" + (f": {failures}" if failures else "")
          + f"; executed copies in {out}; tables in results/{size}/, figures in figures/{size}/")
    return len(failures)
