"""How much device time the suite still needs, and so how many GPU windows: the campaign's plan
(every pending job, :func:`fmrec_lib.campaign.plan`) priced with measured seconds per epoch from
``bench`` lines (``results/<size>/benchmarks/*.jsonl``).

Each pending training run costs ``s_per_epoch x budgeted epochs x EVAL_OVERHEAD`` plus, for a
compiled setting, a compilation per run; the popularity baseline and runs already recorded cost
nothing. Where the benchmark has no line for a dataset and model, its ML-100k line is scaled by
the ratio of training samples per epoch, and where it has none for the setting, the model's
eager line is used; each row says where its speed came from (``measured``, ``scaled from
ml-100k``, ``eager line``, ``none``: not priced). The number of windows divides the total by the
compute seconds one window gives (``window_s``) and by the throughput gain of running jobs at
once (``throughput``: 1 for one job at a time; measured 3.5 for four eager FMRec processes on one
H100). Sweeps and the final tests are in ``EVAL_OVERHEAD``; machine starts are in ``window_s``.
The count is a lower bound: it assumes every compute second of a window is used.

Command line: ``tools/windows_needed.py``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .context import Context

COMPILED_KEYS = ("compile=true",)


def read_bench(paths) -> list[dict]:
    """The benchmark lines of JSON-lines files, each with the file it came from; other JSON
    lines are passed over, and a line that does not parse raises an error naming its file and line."""
    rows = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not a JSON line ({e.msg})") from None
            if "s_per_epoch" in row and "dataset" in row and "model" in row:
                rows.append({**row, "file": str(path)})
    return rows


def _variant(row: dict) -> str:
    return row.get("variant") or ""


def speed_for(rows: list[dict], dataset: str, model: str, setting: str, samples: dict[str, int],
              device: str | None = None) -> tuple[float | None, str]:
    """(seconds per epoch of one run, where it came from) for one dataset, model and setting (a
    bench ``--variant`` string, "" for eager fp32; in a stack, the stack's epoch divided by its
    runs); the fastest of several measured lines."""
    rows = [r for r in rows if device is None or r.get("device") == device]

    def best(ds: str, variant: str) -> float | None:
        found = [float(r.get("s_per_run_epoch") or r["s_per_epoch"]) for r in rows  # a stack: per run
                 if r["dataset"] == ds and r["model"] == model and _variant(r) == variant]
        return min(found) if found else None

    for variant, label in [(setting, "")] + ([("", "eager line")] if setting else []):
        s = best(dataset, variant)
        if s is not None:
            return s, "measured" + (f", {label}" if label else "")
        base = best("ml-100k", variant)
        if base is not None and dataset in samples and "ml-100k" in samples:
            return (base * samples[dataset] / samples["ml-100k"],
                    "scaled from ml-100k" + (f", {label}" if label else ""))
    return None, "none"


def parse_variant(variant: str) -> dict[str, str]:
    """A bench ``--variant`` string (``k=v,k=v``; "" for eager fp32) as a dict of its settings."""
    pairs = {}
    for part in filter(None, (variant or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bench variant {variant!r}: {part!r} is not KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def fastest_setting(rows: list[dict], dataset: str = "ml-100k", model: str = "fmrec",
                    device: str | None = None, fit_s: float | None = None, epochs: int | None = None) -> dict | None:
    """Among the bench lines of ``dataset`` and ``model`` (on ``device``, default: the device of
    the last such line) whose variant the campaign can run (its speed fields and ``stack``), the
    one with the fewest seconds per run-epoch (a stack's epoch of all its runs divided by their
    number): ``{"speed": "k=v,...", "stack": K, "s_per_run_epoch": s, "variant": ..., "device": ...}``,
    or None when there is none. Settings that change what a run is (bf16 autocast, the model's
    fields) are never picked: they are not speed fields.

    With ``fit_s``, only settings whose run (a stack: all its runs at once) can finish within
    that many seconds: its warm-up (compilation) plus ``epochs`` (default: what the authors'
    FMRec runs took on the dataset, else the maximum) epochs with validations. A stack gives
    more runs per GPU-second but each of its runs takes longer from start to end."""
    from .campaign import AUTHORS_FMREC_EPOCHS, EVAL_OVERHEAD
    from .train import TrainConfig

    if fit_s is not None and epochs is None:
        epochs = AUTHORS_FMREC_EPOCHS.get(dataset, TrainConfig.epochs) if model == "fmrec" else TrainConfig.epochs

    mine = [r for r in rows if r.get("dataset") == dataset and r.get("model") == model]
    if not mine:
        return None
    device = device or mine[-1].get("device")
    allowed = set(TrainConfig.SPEED_FIELDS) | {"stack"}
    best = None
    for row in mine:
        settings = parse_variant(_variant(row))
        if row.get("device") != device or not set(settings) <= allowed:
            continue
        if fit_s is not None and float(row["s_per_epoch"]) * epochs * EVAL_OVERHEAD + \
                float(row.get("warmup_s") or 0.0) + float(row.get("partial_step_s") or 0.0) > fit_s:
            continue
        per_run = float(row.get("s_per_run_epoch") or row["s_per_epoch"])
        if best is None or per_run < best["s_per_run_epoch"]:
            stack = int(settings.pop("stack", row.get("stack") or 1))
            best = {"speed": ",".join(f"{k}={v}" for k, v in settings.items()), "stack": stack,
                    "s_per_run_epoch": per_run, "variant": _variant(row), "device": device}
    return best


def suite_estimate(ctx: Context, bench_rows: list[dict], setting: str = "", *, epochs_mode: str = "expected",
                   compile_s: float = 30.0, device: str | None = None) -> pd.DataFrame:
    """One row per pending job of the campaign's plan at the context's size: dataset, model,
    budgeted epochs, seconds per epoch and its source, and the seconds it needs (NaN: no speed)."""
    from . import campaign
    from .runs import RunSpec

    devices = sorted({str(r.get("device")) for r in bench_rows})
    if device is None and len(devices) > 1:
        raise ValueError(f"the bench lines come from several devices ({', '.join(devices)}): name one")
    pending = [j for j in campaign.plan(ctx) if not (isinstance(j.spec, RunSpec) and campaign._is_done(ctx, j))]
    datasets = sorted({j.dataset for j in pending} | {"ml-100k"})
    samples = {}
    for name in datasets:
        try:
            samples[name] = len(ctx.dataset(name).training_samples(50)[1])
        except Exception:  # a dataset that is not here (Steam): its jobs are not priced by scaling
            pass
    compiled = any(k in setting for k in COMPILED_KEYS)
    out = []
    for job in pending:
        spec = job.spec if isinstance(job.spec, RunSpec) else RunSpec(job.dataset, job.model, job.spec.seed,
                                                                      dict(job.spec.overrides))
        epochs = campaign.planned_epochs(ctx, spec, epochs_mode)
        if epochs == 0:
            out.append({"job": job.name, "dataset": job.dataset, "model": job.model, "epochs": 0, "s_per_epoch": 0.0,
                        "speed_from": "not trained", "seconds": 0.0, "notebooks": ",".join(job.notebooks)})
            continue
        s, source = speed_for(bench_rows, job.dataset, job.model, setting, samples, device)
        seconds = math.nan if s is None else s * epochs * campaign.EVAL_OVERHEAD + \
            (compile_s if compiled and "eager line" not in source else 0.0)
        out.append({"job": job.name, "dataset": job.dataset, "model": job.model, "epochs": epochs,
                    "s_per_epoch": s, "speed_from": source, "seconds": seconds, "notebooks": ",".join(job.notebooks)})
    return pd.DataFrame(out, columns=["job", "dataset", "model", "epochs", "s_per_epoch", "speed_from", "seconds",
                                      "notebooks"])


def windows_needed(jobs: pd.DataFrame, window_s: float, throughput: float = 1.0) -> dict:
    """Device minutes and windows for the priced jobs, and how many jobs had no speed."""
    if window_s <= 0 or throughput <= 0:
        raise ValueError(f"window_s and throughput must be > 0 (got {window_s}, {throughput})")
    priced = jobs["seconds"].notna()
    total = float(jobs.loc[priced, "seconds"].sum())
    return {"jobs": int(len(jobs)), "unpriced_jobs": int((~priced).sum()), "device_minutes": round(total / 60, 1),
            "windows": math.ceil(total / throughput / window_s) if total else 0,
            "window_s": window_s, "throughput": throughput}


def by_notebook(jobs: pd.DataFrame) -> pd.DataFrame:
    """Device minutes per notebook: of all the jobs it needs, and of those no other notebook needs
    (what leaving the notebook out of a size would save)."""
    rows = []
    names = sorted({n for ns in jobs["notebooks"] for n in ns.split(",") if n})
    for name in names:
        needs = jobs["notebooks"].str.split(",").apply(lambda ns: name in ns)
        alone = jobs["notebooks"] == name
        rows.append({"notebook": name, "jobs": int(needs.sum()),
                     "minutes": round(jobs.loc[needs, "seconds"].sum() / 60, 1),
                     "jobs only it needs": int(alone.sum()),
                     "their minutes": round(jobs.loc[alone, "seconds"].sum() / 60, 1)})
    return pd.DataFrame(rows)


def summary_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs grouped by dataset, model, epochs and speed: the README's table."""
    table = (jobs.assign(s_per_epoch=jobs["s_per_epoch"].round(3))
             .groupby(["dataset", "model", "epochs", "s_per_epoch", "speed_from"], dropna=False, sort=False)
             .agg(jobs=("job", "size"), minutes=("seconds", lambda x: round(x.sum(min_count=1) / 60, 1)))
             .reset_index())
    return table


def markdown(table: pd.DataFrame) -> str:
    """A frame as a Markdown table (no tabulate needed)."""
    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
