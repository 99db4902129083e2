"""Run the notebook suite with papermill (the main job): every ``notebooks/NN_*.ipynb`` in order."""
from __future__ import annotations

import logging
import os
import sys
import time
import unittest.mock
from pathlib import Path

from .context import REUSE_ONLY_ENV
from .sizes import resolve_size
from .utils import REPO_ROOT

log = logging.getLogger(__name__)
NOTEBOOKS = REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.stem.startswith(o) for o in only)]
        if not found:
            raise ValueError(f"no notebook matches {only}; known: {[p.stem for p in notebooks()]}")
    return found


def run_suite(size: str = "auto", device: str = "auto", only: list[str] | None = None,
              output_dir: str | Path | None = None, reuse_only: bool = False) -> int:
    """Execute the notebooks; a failing notebook is reported and the rest still run.
    With ``reuse_only`` the notebooks train nothing (their kernels see ``FMREC_REUSE_ONLY=1``):
    they render what the stores hold and report missing runs. Returns the number of failures."""
    if reuse_only:
        with unittest.mock.patch.dict(os.environ, {REUSE_ONLY_ENV: "1"}):  # papermill's kernels inherit it
            return run_suite(size, device, only, output_dir)
    import papermill as pm  # optional: only the suite needs it
    from tqdm import tqdm

    size = resolve_size(size, device)
    out = Path(output_dir) if output_dir else NOTEBOOKS / "executed" / size
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    bar = tqdm(notebooks(only), desc=f"notebooks ({size})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out / nb.name), parameters={"size": size, "device": device},
                                cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
            log.info("%s done in %.0f s -> %s", nb.stem, time.perf_counter() - t0, out / nb.name)
        except Exception as e:  # papermill's PapermillExecutionError names the failing cell
            failures.append(nb.stem)
            print(f"{nb.stem} FAILED after {time.perf_counter() - t0:.0f} s: {str(e).splitlines()[0] if str(e) else e}",
                  file=sys.stderr)
    print(f"{len(failures)} of {len(bar)} notebooks failed" + (f": {failures}" if failures else "")
          + f"; executed copies in {out}; tables in results/{size}/, figures in figures/{size}/")
    return len(failures)

