"""The run store: results rows, per-run cells stated once, merges, caches, atomic writes."""
import json

import pandas as pd
import pytest

from fmrec_lib.experiments.store import (COLUMNS, PER_RUN_COLUMNS, append_rows, cached_rows, find_run, merge_results,
                                        read_results, write_atomic)
from fmrec_lib.utils import REPO_ROOT


def _run_rows(run_id, n_metrics=6, config=None):
    config = config or json.dumps({"model_config": {"hidden": 64, "note": run_id * 40}, "train_config": {"lr": 1e-3}})
    base = {c: None for c in COLUMNS}
    base.update(run_id=run_id, config_hash=run_id[:6], dataset="toy", model="fmrec", profile="paper", seed=1997,
                epochs_run=3, protocol="full ranking " * 10, config=config, runtime=json.dumps({"tf32": False}))
    return [dict(base, split=split, metric=f"HR@{k}", value=k / 7)
            for split in ("val", "test") for k in range(1, n_metrics // 2 + 1)]


def _wide_file(path, runs):
    """A results file as written before: the long cells on every row."""
    pd.DataFrame([row for rows in runs for row in rows], columns=COLUMNS).to_csv(path, index=False)


def test_the_long_cells_are_written_once_per_run_and_read_on_every_row(tmp_path):
    path = tmp_path / "runs.csv"
    a, b = _run_rows("aaaaaa-1"), _run_rows("bbbbbb-1", config=json.dumps({"other": True}))
    append_rows(a, path)
    append_rows(b, path)
    raw = pd.read_csv(path, dtype=str)
    for column in PER_RUN_COLUMNS:  # stated on each run's first row only
        assert raw[column].notna().tolist() == [True] + [False] * 5 + [True] + [False] * 5
    frame = read_results(path)
    assert len(frame) == 12 and list(frame.columns) == COLUMNS
    assert (frame["config"][:6] == a[0]["config"]).all() and (frame["config"][6:] == b[0]["config"]).all()
    assert (frame["protocol"] == a[0]["protocol"]).all() and (frame["runtime"] == a[0]["runtime"]).all()
    assert find_run("bbbbbb", path)["config"].tolist() == [b[0]["config"]] * 6


def test_a_wide_file_written_before_reads_the_same_and_grows_compactly(tmp_path):
    path = tmp_path / "runs.csv"
    runs = [_run_rows(f"{i}{i}{i}{i}{i}{i}-1", n_metrics=18) for i in range(4)]
    _wide_file(path, runs)
    wide = read_results(path)
    assert len(wide) == 4 * 18 and wide["config"].notna().all()
    append_rows(_run_rows("zzzzzz-1"), path)
    assert read_results(path)["config"].notna().all()
    assert pd.read_csv(path, dtype=str)["config"].notna().sum() == 4 * 18 + 1


def test_an_atomic_write_leaves_the_old_file_whole_when_it_fails(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "t.csv", "old\n")

    def fail(*a):
        raise OSError("disk full")
    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"


def test_cached_rows_compute_once_and_read_every_store(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or [{"a": 1, "b": "x"}]  # noqa: E731
    own, other = tmp_path / "own.jsonl", tmp_path / "other.jsonl"
    assert cached_rows([own], {"k": 1}, compute) == [{"a": 1, "b": "x"}]
    assert cached_rows([own], {"k": 1}, compute) == [{"a": 1, "b": "x"}]
    cached_rows([other], {"k": 2}, lambda: [{"c": 3}])
    assert cached_rows([own, other], {"k": 2}, compute) == [{"c": 3}]  # found in the second store
    assert len(calls) == 1 and len(own.read_text().splitlines()) == 1  # nothing copied into the own store


def test_merging_a_compact_archive_carries_every_runs_long_cells(tmp_path):
    source, target = tmp_path / "window", tmp_path / "home"
    source.mkdir()
    target.mkdir()
    append_rows(_run_rows("aaaaaa-1") + _run_rows("bbbbbb-1"), source / "runs.csv")  # two runs in one append
    _wide_file(target / "runs.csv", [_run_rows("cccccc-1")])
    assert merge_results(source, target)["runs"] == 2
    merged = read_results(target / "runs.csv")
    assert merged["run_id"].nunique() == 3 and merged[list(PER_RUN_COLUMNS)].notna().all().all()
    raw = pd.read_csv(target / "runs.csv", dtype=str)
    assert raw[raw["run_id"] != "cccccc-1"]["config"].notna().sum() == 2


@pytest.mark.parametrize("size", ["quick", "paper"])
def test_committed_results_state_each_runs_configuration_once(size):
    """The committed files grow by one configuration per run, not one per metric row."""
    path = REPO_ROOT / "results" / size / "runs.csv"
    if not path.exists():
        pytest.skip(f"no committed {size} results in this checkout")
    raw = pd.read_csv(path, dtype=str)
    assert raw["config"].notna().sum() == raw["run_id"].nunique()
    assert read_results(path)["config"].notna().all()
