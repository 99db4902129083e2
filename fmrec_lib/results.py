"""Tidy results: one row per run x split x metric, with the provenance to regenerate it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .utils import REPO_ROOT

DEFAULT_RESULTS = REPO_ROOT / "results" / "runs.csv"
COLUMNS = ["run_id", "config_hash", "dataset", "model", "profile", "seed", "split", "metric", "value",
           "epochs_run", "best_epoch", "n_model_calls", "device", "torch", "wall_time_s", "commit", "finished_at",
           "protocol", "config", "runtime"]  # new columns go at the end: older files are a prefix and still read


def append_rows(rows: list[dict], path: str | Path = DEFAULT_RESULTS) -> Path:
    """Append rows to a CSV (header written once). A partial line is never left behind:
    the new rows are written in one call after being fully formatted. A file written before
    the last columns existed is first rewritten (atomically) with them, empty for its rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.exists() and path.stat().st_size > 0
    if exists and _header(path) != COLUMNS:
        _upgrade(path)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    text = frame.to_csv(index=False, header=not exists)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def _header(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def _upgrade(path: Path) -> None:
    """Rewrite a results file whose columns are a prefix of COLUMNS with all of them."""
    header = _header(path)
    if header != COLUMNS[:len(header)]:
        raise ValueError(f"{path} has columns {header}, not a prefix of {COLUMNS}: refusing to append")
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = pd.read_csv(path, dtype=str, keep_default_na=False)  # the old cells verbatim
    text.reindex(columns=COLUMNS, fill_value="").to_csv(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_results(path: str | Path = DEFAULT_RESULTS) -> pd.DataFrame:
    """All rows with every column of COLUMNS (columns an older file lacks are empty)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path)
    return frame.reindex(columns=[*COLUMNS, *[c for c in frame.columns if c not in COLUMNS]])


def find_run(config_hash: str, path: str | Path = DEFAULT_RESULTS) -> pd.DataFrame | None:
    """The most recent finished run with this configuration, or None."""
    frame = read_results(path)
    frame = frame[frame["config_hash"] == config_hash]
    if frame.empty:
        return None
    return frame[frame["run_id"] == frame["run_id"].iloc[-1]]


def wide(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per run with a column per metric."""
    frame = frame[frame["split"] == split]
    keys = ["run_id", "dataset", "model", "profile", "seed"]
    out = frame.pivot_table(index=keys, columns="metric", values="value").reset_index()
    out.columns.name = None
    config = frame.drop_duplicates("run_id").set_index("run_id")["config"]
    out["config"] = out["run_id"].map(config).map(json.loads)
    return out
