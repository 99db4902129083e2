"""Shared fixtures. Tests that need the real datasets find them through FMREC_DATA_DIR
(CI points it at ../shared/data); without them they skip on a user's machine, saying why,
but fail in CI, where missing data is a broken set-up."""
import os
from pathlib import Path

import pytest

from fmrec_lib.data import DATA_DIR_ENV

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    for candidate in (os.environ.get(DATA_DIR_ENV), REPO.parent / "shared" / "data", REPO / "data"):
        if candidate and (Path(candidate) / "ml-100k" / "ml-100k.inter").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = _data_dir()
    if found is None:
        msg = (f"real datasets not found (set {DATA_DIR_ENV} to a folder with ml-100k/ml-100k.inter, "
               "amazon_beauty/Beauty.txt and their fmrec_dataset.pkl)")
        if os.environ.get("CI"):
            pytest.fail(msg + " -- data must be present in CI")
        pytest.skip(msg)
    return found
