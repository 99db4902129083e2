"""The suite on a copy of the committed tree, as a reader or a new user would run it: the committed
quick results re-render byte for byte from the stores alone on a machine without the data, and a
suite that cannot compute something fails, names why, and replaces nothing committed."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's tracked files (as they are in this working tree) in a fresh git repository."""
    root = tmp_path_factory.mktemp("clone")
    for name in _git(REPO, "ls-files", "-z").split("\0"):
        if name and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes((REPO / name).read_bytes())
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "committed")
    return root


def _suite(clone: Path, tmp_path: Path, *args: str, size: str = "quick") -> subprocess.CompletedProcess:
    """``python -m fmrec_lib suite --size SIZE --reuse-only ...`` in the clone, with no data anywhere."""
    (tmp_path / "no-data").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(clone), "FMREC_DATA_DIR": str(tmp_path / "no-data"), "FMREC_ROOT": str(clone)}
    return subprocess.run([sys.executable, "-m", "fmrec_lib", "suite", "--size", size, "--device", "cpu",
                           "--reuse-only", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_committed_quick_results_re_render_byte_for_byte_without_the_data(clone, tmp_path):
    done = _suite(clone, tmp_path)
    assert done.returncode == 0 and "0 of 8 notebooks failed" in done.stdout, done.stderr[-3000:]
    paper = _suite(clone, tmp_path, "--only", "00", "01", size="paper")  # as far as its tiers exist
    assert paper.returncode == 0 and "0 of 2 notebooks failed" in paper.stdout, paper.stderr[-3000:]
    assert _git(clone, "status", "--porcelain") == ""  # tables, figures, records and executed notebooks alike


@pytest.mark.slow
def test_missing_runs_fail_the_notebooks_that_need_them_and_replace_nothing(clone, tmp_path):
    _git(clone, "rm", "-q", "results/quick/runs.csv")  # the runs gone; the datasets' records still there
    done = _suite(clone, tmp_path, "--only", "05")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    failures = re.findall(r"(\w+) FAILED after \d+ s: (.*)", done.stderr)
    assert [name for name, _ in failures] == ["05_sensitivity"]
    assert all(why.startswith("MissingRunError: quick-size run") and "is not recorded" in why for _, why in failures)
    assert _git(clone, "status", "--porcelain") == "D  results/quick/runs.csv\n"  # no table or figure touched
    _git(clone, "reset", "-q", "--hard")


@pytest.mark.slow
def test_without_the_data_or_its_records_the_suite_stops_at_once_saying_where_it_looked(clone, tmp_path):
    _git(clone, "rm", "-q", "results/quick/datasets.json")
    done = _suite(clone, tmp_path)
    assert done.returncode == 1 and "notebooks (quick)" not in done.stderr  # no notebook started
    message = done.stderr.split("error: ", 1)[1]
    for name, file in (("ml-100k", "ml-100k/ml-100k.inter"), ("beauty", "amazon_beauty/Beauty.txt"),
                       ("yelp", "yelp/Yelp.txt")):
        assert f"dataset '{name}' not found; looked in: {tmp_path / 'no-data' / file}" in message
        assert f"Set FMREC_DATA_DIR to a folder holding {file}" in message
    assert _git(clone, "status", "--porcelain") == "D  results/quick/datasets.json\n"
    _git(clone, "reset", "-q", "--hard")
