"""The run store: tidy results, one row per run x split x metric, with the provenance to regenerate it, and
each run's per-user test ranks in a small file beside them (for paired significance tests).

A results folder (``results/<size>/``) holds:

* ``runs.csv``: the rows (:data:`COLUMNS`); a run is recorded once per configuration hash; the
  long per-run cells (:data:`PER_RUN_COLUMNS`) are written on its first row only and filled into
  its other rows on reading;
* ``per_user/<config_hash>.npy``: the 0-based rank of each user's test target (int32, users in
  the dataset's order), read back with ``allow_pickle=False``;
* ``*_cache.jsonl``: evaluation sweeps of trained models (:func:`cached_rows`);
* ``datasets.json``: per named dataset and user cap, the split's fingerprint and counts, so that
  committed results render without the raw data (:class:`DatasetRecord`).

Writers take a lock on ``<file>.lock``: parallel jobs never interleave or duplicate rows.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ..data import DatasetNotFoundError
from ..training import RunResult
from ..utils import git_commit

COLUMNS = ["run_id", "config_hash", "dataset", "model", "profile", "seed", "split", "metric", "value",
           "epochs_run", "best_epoch", "n_model_calls", "device", "torch", "wall_time_s", "commit", "finished_at",
           "protocol", "config", "fingerprint", "stop_reason", "runtime"]
PER_USER = "per_user"
# Stated once per run (its first row) in the file; every row of the run carries them once read.
PER_RUN_COLUMNS = ("protocol", "config", "runtime")


# Columns holding identifiers: read as text (a hash like "123456789012" would otherwise be a number).
TEXT_COLUMNS = {"run_id": str, "config_hash": str, "fingerprint": str, "commit": str, "dataset": str, "model": str}


@contextmanager
def locked(path: str | Path, shared: bool = False) -> Iterator[None]:
    """An advisory lock on ``<path>.lock``: exclusive for writers, ``shared`` for readers, so a
    reader never sees half of an append. (Not re-entrant: do not read with a lock while this
    process holds the exclusive one; use the unlocked readers there.)"""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` in one write and fsync it (call under :func:`locked`)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def append_rows(rows: list[dict], path: str | Path) -> Path:
    """Append rows to a CSV (header written once) under the file's lock. A partial line is
    never left behind: the new rows are written in one call after being fully formatted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        _append_unlocked(rows, path)
    return path


def _append_unlocked(rows: list[dict], path: Path) -> None:
    """Append formatted rows; a file written before the last columns existed is first rewritten
    (atomically) with them, empty for its old rows, so columns never shift."""
    exists = path.exists() and path.stat().st_size > 0
    if exists and _header(path) != COLUMNS:
        _upgrade(path)
    frame = _compact(pd.DataFrame(rows, columns=COLUMNS))
    append_text(path, frame.to_csv(index=False, header=not exists))


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with :data:`PER_RUN_COLUMNS` blank on every row but each run's first."""
    repeated = frame["run_id"].duplicated()
    if repeated.any():
        frame = frame.copy()
        for column in PER_RUN_COLUMNS:
            frame[column] = frame[column].astype(object)
            frame.loc[repeated, column] = None
    return frame


def _fill_per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row of a run with its run's :data:`PER_RUN_COLUMNS` (the inverse of :func:`_compact`)."""
    if frame.empty:
        return frame
    for column in PER_RUN_COLUMNS:
        frame[column] = frame.groupby("run_id", sort=False)[column].transform("first")
    return frame


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


def read_results(path: str | Path) -> pd.DataFrame:
    """The rows of a results file (under a shared lock); files written before a column existed
    read with it empty; identifiers read as text."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    with locked(path, shared=True):
        return _read_unlocked(path)


def _read_unlocked(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, dtype=TEXT_COLUMNS)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return _fill_per_run(frame)


def _latest_run(frame: pd.DataFrame, config_hash: str) -> pd.DataFrame | None:
    frame = frame[frame["config_hash"] == config_hash]
    if frame.empty:
        return None
    return frame[frame["run_id"] == frame["run_id"].iloc[-1]]


def find_run(config_hash: str, path: str | Path) -> pd.DataFrame | None:
    """The most recent finished run with this configuration, or None."""
    return _latest_run(read_results(path), config_hash)


def per_user_path(results_path: str | Path, config_hash: str) -> Path:
    return Path(results_path).parent / PER_USER / f"{config_hash}.npy"


def read_per_user_ranks(results_path: str | Path, config_hash: str) -> np.ndarray | None:
    """A run's per-user test ranks (U,), or None when they were not recorded."""
    path = per_user_path(results_path, config_hash)
    return np.load(path, allow_pickle=False) if path.exists() else None


def record_run(result: RunResult, path: str | Path) -> bool:
    """Record a finished run: its rows in ``path`` and its per-user ranks beside it. A run
    whose configuration is already recorded is not recorded again (a retried or repeated job
    adds nothing); returns whether rows were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        if _latest_run(_read_unlocked(path), result.config_hash) is not None:
            return False
        if result.test_ranks is not None:
            ranks_path = per_user_path(path, result.config_hash)
            ranks_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = ranks_path.with_suffix(".tmp.npy")
            np.save(tmp, result.test_ranks.to(torch.int32).numpy(), allow_pickle=False)
            os.replace(tmp, ranks_path)
        _append_unlocked(result_rows(result), path)
    return True


def import_run(rows: pd.DataFrame, source: str | Path, target: str | Path) -> bool:
    """Copy a recorded run (its rows and per-user ranks) from one results file into another,
    unless the target has it already; returns whether anything was copied."""
    target = Path(target)
    config_hash = rows["config_hash"].iloc[0]
    with locked(target):
        if _latest_run(_read_unlocked(target), config_hash) is not None:
            return False
        ranks = per_user_path(source, config_hash)
        if ranks.exists():
            dest = per_user_path(target, config_hash)
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.save(dest, np.load(ranks, allow_pickle=False), allow_pickle=False)
        _append_unlocked(rows[COLUMNS].to_dict("records"), target)
    return True


def result_rows(result: RunResult) -> list[dict]:
    """Tidy rows (one per split x metric) with provenance."""
    run_id = f"{result.config_hash}-{time.strftime('%Y%m%dT%H%M%S')}"
    config = json.dumps({"model_config": result.model_config, "train_config": result.train_config}, sort_keys=True)
    common = {"run_id": run_id, "config_hash": result.config_hash, "dataset": result.dataset, "model": result.model,
              "profile": result.profile, "seed": result.train_config["seed"], "epochs_run": result.epochs_run,
              "best_epoch": result.best_epoch, "n_model_calls": result.n_model_calls, "device": result.device,
              "torch": torch.__version__, "wall_time_s": round(result.wall_time_s, 2), "commit": git_commit(),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "protocol": result.protocol, "config": config,
              "fingerprint": result.fingerprint, "stop_reason": result.stop_reason,
              "runtime": json.dumps(result.runtime, sort_keys=True)}
    return [{**common, "split": split, "metric": name, "value": value}
            for split, metrics in (("val", result.val), ("test", result.test)) for name, value in metrics.items()]


def merge_results(source: str | Path, target: str | Path) -> dict[str, int]:
    """Merge a results folder (e.g. one unpacked from a GPU window's archive) into ``target``:
    runs not yet recorded are appended (never overwritten), per-user files copied when absent,
    cache entries appended when their key is new, logs appended. Returns counts of what was added."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    added = {"runs": 0, "per_user": 0, "cache_entries": 0, "log_lines": 0}
    src_runs = read_results(source / "runs.csv")
    with locked(target / "runs.csv"):
        have = set(_read_unlocked(target / "runs.csv")["config_hash"])
        new = src_runs[~src_runs["config_hash"].isin(have)]
        if not new.empty:
            # one run per configuration: the most recent of any duplicates in the source
            keep = new.drop_duplicates("config_hash", keep="last")["run_id"]
            new = new[new["run_id"].isin(keep)]
            _append_unlocked(new[COLUMNS].to_dict("records"), target / "runs.csv")
            added["runs"] = new["run_id"].nunique()
    for config_hash in sorted(set(new["config_hash"])):  # the ranks of the runs just merged, and only those
        npy = source / PER_USER / f"{config_hash}.npy"
        dest = target / PER_USER / npy.name
        if npy.exists() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.save(dest, np.load(npy, allow_pickle=False), allow_pickle=False)
            added["per_user"] += 1
    for cache in sorted(source.glob("*_cache.jsonl")):
        dest = target / cache.name
        with locked(dest):
            known = {json.loads(line)["key"] for line in dest.read_text().splitlines() if line.strip()} \
                if dest.exists() else set()
            lines = [line for line in cache.read_text().splitlines()
                     if line.strip() and json.loads(line)["key"] not in known]
            if lines:
                append_text(dest, "\n".join(lines) + "\n")
                added["cache_entries"] += len(lines)
    for log_file in sorted(source.glob("*.log.jsonl")):
        dest = target / log_file.name
        with locked(dest):
            known = set(dest.read_text().splitlines()) if dest.exists() else set()
            lines = [line for line in log_file.read_text().splitlines() if line.strip() and line not in known]
            if lines:
                append_text(dest, "\n".join(lines) + "\n")
                added["log_lines"] += len(lines)
    return added


def cached_rows(paths: list[Path], key: dict, compute: Callable[[], list[dict]]) -> list[dict]:
    """Rows for ``key`` from the first JSON-lines file in ``paths`` that holds them, else
    computed and appended to ``paths[0]`` under its lock."""
    key_json = key_text(key)
    for path in paths:
        rows = lookup(path, key_json)
        if rows is not None:
            return rows
    rows = compute()
    target = paths[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        if lookup(target, key_json, lock=False) is None:  # another worker may have finished it meanwhile
            append_text(target, json.dumps({"key": key_json, "rows": rows}, default=str) + "\n")
    return rows


def key_text(key: dict) -> str:
    """The canonical text of a cache key."""
    return json.dumps(key, sort_keys=True, default=str)


def lookup(path: Path, key_json: str, lock: bool = True) -> list[dict] | None:
    """The rows cached under ``key_json`` in a JSON-lines file, or None (read under a shared lock)."""
    if not path.exists():
        return None
    if lock:
        with locked(path, shared=True):
            text = path.read_text()
    else:
        text = path.read_text()
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["key"] == key_json:
                return entry["rows"]
    return None


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder: a failure or a
    crash leaves the previous file whole, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _cap_key(max_users: int | None) -> str:
    return "all" if max_users is None else str(max_users)


def read_dataset_record(path: Path, name: str, max_users: int | None) -> dict | None:
    """The record of dataset ``name`` at a user cap in a ``datasets.json``, or None."""
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(name, {}).get(_cap_key(max_users))


def write_dataset_record(path: Path, dataset, max_users: int | None, **facts) -> None:
    """Record (or complete) a dataset's fingerprint and counts at a user cap, with ``facts``."""
    with locked(path):
        data = json.loads(path.read_text()) if path.exists() else {}
        entry = data.setdefault(dataset.name, {}).setdefault(_cap_key(max_users), {})
        new = {"fingerprint": dataset.fingerprint(), "num_items": dataset.num_items, "num_users": dataset.num_users,
               **json.loads(json.dumps(facts, default=str))}
        if {**entry, **new} != entry:
            entry.update(new)
            write_atomic(path, json.dumps(data, indent=1) + "\n")  # insertion order: the statistics' columns


class DatasetRecord:
    """A named dataset known by its record alone (its files are not on this machine): its
    fingerprint, item and user counts and recorded facts (``facts``), enough to find and render
    its committed runs. Whatever needs the data itself raises DatasetNotFoundError saying so."""

    def __init__(self, name: str, entry: dict, reason: str):
        self.name, self.reason = name, reason
        self.num_items, self.num_users = entry["num_items"], entry["num_users"]
        self.facts = {k: v for k, v in entry.items() if k not in ("num_items", "num_users")}

    def fingerprint(self) -> str:
        return self.facts["fingerprint"]

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise DatasetNotFoundError(
            f"dataset {self.name!r} is not on this machine ({self.reason}); its record renders committed results, "
            f"but this step ({attr}) needs its files")
