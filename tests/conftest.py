"""Shared fixtures. Tests that need the real datasets find them where the library does
(``$FMREC_DATA_DIR``, then ``data/``; no download): without them they skip, saying where the
library looked and how to provide the files, and the notebooks (nbval, which need data at smoke
size) skip too; in CI (``CI`` set, the data present) a missing dataset fails instead."""
import os
from pathlib import Path

import pytest

from fmrec_lib.data import DatasetNotFoundError, locate


def _missing() -> str | None:
    """Why the real datasets are not here (one message), or None when they are."""
    try:
        for name in ("ml-100k", "beauty"):
            path = locate(name, download=False)
        return None if (path.parent / "fmrec_dataset.pkl").is_file() else \
            f"the authors' split is not beside {path} (fmrec_dataset.pkl)"
    except DatasetNotFoundError as e:
        return " ".join(str(e).split())


MISSING = _missing()


def pytest_report_header(config):
    return "real datasets: found" if MISSING is None else f"real datasets: NOT FOUND, tests that need them skip: {MISSING}"


def pytest_collection_modifyitems(config, items):
    """Without the data (outside CI) the notebooks, run at smoke size, skip with the reason."""
    if MISSING is None or os.environ.get("CI"):
        return
    for item in items:
        if Path(str(item.fspath)).suffix == ".ipynb":
            item.add_marker(pytest.mark.skip(reason=f"notebook needs the real datasets: {MISSING}"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if MISSING is not None:
        if os.environ.get("CI"):
            pytest.fail(f"data must be present in CI: {MISSING}")
        pytest.skip(MISSING)
    return locate("ml-100k", download=False).parents[1]
