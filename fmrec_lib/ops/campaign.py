"""The campaign: every run the notebooks need at a size, with the sweeps that need its model, by
tier (:mod:`fmrec_lib.experiments.tiers`) and priority, one job at a time on a device, before a
deadline: for time-limited GPU sessions (an allocation with a wall-time limit, a preemptible
instance, a hosted notebook's session) and, through submitit, for a cluster (:mod:`.cluster`).

Plan: the notebooks' declarations (:func:`fmrec_lib.experiments.reports.needs`), one job per run
carrying every sweep of its model; priority: tier, dataset (ML-100k first), FMRec's default run,
notebook order. A job trains its run (resuming a running checkpoint) or reuses it, runs its sweeps
on the model just trained (paper-size checkpoints need not leave the machine) and records both in
``results/<size>/``; ``campaign.log.jsonl`` there says what ran, how fast and why it stopped. With
``archive`` that folder is packed after every job; :func:`merge_archive` merges it elsewhere.

Deadline: a job starts only if its estimate (seconds per epoch measured on this device x the
epochs it is budgeted for and has not trained x :data:`EVAL_OVERHEAD`) fits the time left (or
``fit_within_s``, when a later campaign on the same output root will resume it); a job of unknown
speed gives up after its first steady epoch if it cannot finish. A run the deadline stops keeps a
running checkpoint, which the next campaign on the same output root resumes.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import tarfile
import tempfile
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..experiments import notebooks, reports, tiers
from ..experiments.context import Context
from ..experiments.runs import MissingModelError, RunSpec, Sweep, TunedSpec, find, resolve, retrain, run, spec_hash
from ..experiments.runs import sweep as run_sweep
from ..experiments.store import append_text, cached_rows, key_text, locked, lookup, merge_results, read_results
from ..models import MODELS
from ..training import DeadlineReached, NonFiniteLossError, TrainConfig, checkpoints

log = logging.getLogger(__name__)

LOG_NAME = "campaign.log.jsonl"
SAFETY_S = 20.0  # stop this long before the deadline: time to test, record and archive
MIN_LEFT_FOR_LATENCY_S = 80.0  # the latency table (seconds on a GPU) only with time for more
EVAL_OVERHEAD = 1.15  # validations and the final test on top of the training epochs, in the estimate
# Epochs the authors' FMRec runs took before their patience rule stopped them: the "expected"
# budget of FMRec runs at paper size before this project has measured its own.
AUTHORS_FMREC_EPOCHS = {"ml-100k": 260, "beauty": 480}
CLUSTER_EXECUTORS = ("slurm", "debug", "local-submitit")
STEADY_EPOCH = 2  # the first epoch carries start-up and compilation: judge the speed on the second
SPEED_KEYS = (*TrainConfig.SPEED_FIELDS, "amp_bf16")


class DoesNotFit(RuntimeError):
    """The run's measured speed says it cannot finish before the deadline: (message, seconds per epoch)."""


@dataclass
class PlannedJob:
    """One unit of campaign work: a training run plus the sweeps that need its model."""

    name: str
    spec: RunSpec | TunedSpec  # a TunedSpec until the tuning runs it depends on are recorded
    sweeps: list[Sweep]
    notebooks: list[str]
    priority: tuple = ()  # (tier, dataset, FMRec's default first, notebook, place in it)
    config_hash: str | None = None

    @property
    def tier(self) -> int:
        return self.priority[0]

    def payload(self, ctx: Context, deadline: float | None, budget: int | None = None, device: str | None = None,
                fit_by: float | None = None) -> dict:
        """What :func:`execute_job` needs, as JSON (a cluster job: no deadline, its node's device)."""
        return {"name": self.name, "spec": self.spec.to_json(), "sweeps": [s.to_json() for s in self.sweeps],
                "size": ctx.size.name, "device": device or str(ctx.device), "output_dir": str(ctx.output_dir),
                "read_roots": [str(r) for r in ctx.read_roots], "deadline": deadline, "fit_by": fit_by,
                "epochs_budget": budget, "allow_cpu_training": ctx.allow_cpu_training, "speed": dict(ctx.speed)}


def plan(ctx: Context, max_tier: int | None = None) -> list[PlannedJob]:
    """Every job of every notebook at its committed configuration (datasets that cannot be loaded
    here left out), one per run, in priority order; tiers up to ``max_tier``."""
    merged: dict[str, PlannedJob] = {}
    strongest = tiers.strongest_baselines(ctx)
    order = tiers.DATASET_ORDER
    for index, path in enumerate(notebooks.notebook_paths()):
        for sequence, need in enumerate(reports.needs(ctx, path.stem)):
            if not reports.available(ctx, need.spec.dataset):
                continue
            spec = (need.spec.resolve(ctx) or need.spec) if isinstance(need.spec, TunedSpec) else need.spec  # once tuned
            plain = isinstance(spec, RunSpec)
            default = plain and spec.model == "fmrec" and not tiers.changes(ctx, spec)
            job = PlannedJob(spec.name, spec, list(need.sweeps.values()), [path.stem],
                             (tiers.tier(ctx, spec, strongest), order.index(spec.dataset) if spec.dataset in order
                              else len(order), int(not default), index, sequence), spec_hash(ctx, spec) if plain else None)
            key = job.config_hash or spec.name
            if key in merged:  # the same run: its sweeps and notebooks, the higher priority, the simplest name
                other = merged[key]
                known = {json.dumps(s.to_json(), sort_keys=True) for s in other.sweeps}
                other.sweeps += [s for s in job.sweeps if json.dumps(s.to_json(), sort_keys=True) not in known]
                other.notebooks = sorted({*other.notebooks, *job.notebooks})
                if plain and len(spec.overrides) < len(other.spec.overrides):
                    other.spec, other.name = spec, job.name
                other.priority = min(other.priority, job.priority)
            else:
                merged[key] = job
    return sorted((j for j in merged.values() if max_tier is None or j.tier <= max_tier), key=lambda j: j.priority)


def _resolve_tuned(ctx: Context, job: PlannedJob) -> bool:
    """Turn a later-seed job of a tuned model into a plain run once its tuning runs are all
    recorded (its tier decided then); returns whether the job is a plain run now."""
    if isinstance(job.spec, TunedSpec):
        resolved = job.spec.resolve(ctx)
        if resolved is None:
            return False
        job.spec, job.name, job.config_hash = resolved, resolved.name, spec_hash(ctx, resolved)
        job.priority = (tiers.tier(ctx, resolved, tiers.strongest_baselines(ctx)), *job.priority[1:])
    return True


class CampaignLog:
    """Append-only JSON lines in ``results/<size>/campaign.log.jsonl``."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, event: str, **fields) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            append_text(self.path, json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **fields},
                                              default=str, sort_keys=True) + "\n")
        log.info("campaign %s: %s", event, {k: fields[k] for k in ("name", "reason", "s_per_epoch") if k in fields})

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()] \
            if self.path.exists() else []


def speed_key(ctx: Context, spec: RunSpec) -> str:
    """What a measured speed applies to: dataset, model, device, torch and the speed settings."""
    tc = ctx.configs(spec.model, spec.seed, **spec.overrides)[1]
    flags = ",".join(f"{k}={tc.get(k, getattr(TrainConfig, k))}" for k in SPEED_KEYS)
    return f"{spec.dataset}|{spec.model}|{ctx.device_label}|torch {torch.__version__}|{flags}"


def _permanent_failures(ctx: Context, entries: list[dict]) -> set[str]:
    """Configuration hashes whose last attempt under this context's speed settings failed in a way
    that repeats (a NaN loss); a later attempt that did not fail clears it."""
    failed: dict[str, bool] = {}
    for e in entries:
        if e.get("config_hash") and e.get("event") in ("failed", "done", "deadline", "does not fit") \
                and e.get("speed", ctx.speed) == ctx.speed:
            failed[e["config_hash"]] = e["event"] == "failed" and bool(e.get("permanent"))
    return {h for h, yes in failed.items() if yes}


def _max_epochs(ctx: Context, spec: RunSpec) -> int:
    if not MODELS[spec.model][0].trainable:
        return 0
    return int(ctx.configs(spec.model, spec.seed, **spec.overrides)[1].get("epochs", TrainConfig.epochs))


def planned_epochs(ctx: Context, spec: RunSpec, mode: str = "max") -> int:
    """Epochs a run is budgeted for: its maximum (``max``), or (``expected``) the 90th percentile
    of the epochs recorded runs of its dataset and model took at this size, else (FMRec at paper
    size) what the authors' runs took, never more than the maximum; a run that goes on longer is
    stopped at the deadline and resumed by the next campaign."""
    most = _max_epochs(ctx, spec)
    if mode == "max" or most == 0:
        return most
    taken = []
    for store in ctx.stores:
        rows = read_results(store.runs).drop_duplicates("config_hash")
        rows = rows[(rows["dataset"] == spec.dataset) & (rows["model"] == spec.model)]
        taken += [int(e) for e in rows["epochs_run"] if e == e and int(e) > 0]
    if taken:
        return min(most, int(np.ceil(np.quantile(taken, 0.9))))
    prior = AUTHORS_FMREC_EPOCHS.get(spec.dataset) if ctx.size.name == "paper" and spec.model == "fmrec" else None
    return min(most, prior or most)


def epochs_budget(ctx: Context, job: PlannedJob, mode: str = "max") -> tuple[int, int]:
    """(epochs ``job``'s run is budgeted for in all, epochs its running checkpoint holds already):
    a resumed run needs only the rest; one past its expected epochs gets one validation more."""
    total = planned_epochs(ctx, job.spec, mode)
    done = checkpoints.saved_epoch(checkpoints.running_path(ctx.store.checkpoints, job.spec.model,
                                                            job.config_hash)) or 0
    if done >= total > 0:
        tc = ctx.configs(job.spec.model, job.spec.seed, **job.spec.overrides)[1]
        total = min(_max_epochs(ctx, job.spec), done + int(tc.get("eval_every", TrainConfig.eval_every)))
    return total, min(done, total)


def _estimate(ctx: Context, job: PlannedJob, speeds: dict[str, float], mode: str,
              seconds_per_epoch: float | None = None) -> float | None:
    """Seconds a job needs: none to train when its run is recorded and its model is here (only
    sweeps left), else seconds per epoch (measured on this device, else ``seconds_per_epoch``) x
    the budgeted epochs not trained yet; None when its speed is unknown."""
    recorded = find(ctx, job.spec)
    if recorded is not None and (recorded.checkpoint() is not None or recorded.model == "pop"):
        return 0.0
    s, (total, done) = speeds.get(speed_key(ctx, job.spec), seconds_per_epoch), epochs_budget(ctx, job, mode)
    return 0.0 if total == done else None if s is None else round(s * (total - done) * EVAL_OVERHEAD, 1)


def price(ctx: Context, job: PlannedJob, lines: list[dict]) -> tuple[float | None, str]:
    """(seconds per epoch, where from) of a job's run on the device of ``bench`` lines: its
    dataset's line with the campaign's speed settings, else its fp32 line (slower), else
    ML-100k's line scaled by the two datasets' training samples per epoch."""
    tc = ctx.configs(job.spec.model, job.spec.seed, **job.spec.overrides)[1]
    for flags, note in ((tc, "bench"), ({}, "bench, fp32 line")):
        for dataset in (job.spec.dataset, "ml-100k"):
            found = [r for r in lines if r["dataset"] == dataset and r["model"] == job.spec.model
                     and all(r["flags"].get(k, getattr(TrainConfig, k)) == flags.get(k, getattr(TrainConfig, k))
                             for k in SPEED_KEYS)]
            if not found:
                continue
            line, ratio = min(found, key=lambda r: r["s_per_epoch"]), 1.0
            if dataset != job.spec.dataset:
                ds, mc, _ = resolve(ctx, job.spec)
                ratio = len(ds.training_samples(mc.max_len)[1]) / line["train_samples_per_epoch"]
                note += f", ml-100k x {ratio:.2f} samples"
            return line["s_per_epoch"] * ratio, f"{note} ({line['device']})"
    return None, "not priced"


def _dry_run(ctx: Context, pending: list[PlannedJob], speeds: dict, mode: str, bench: list[str] | None) -> dict:
    """The plan, each job's estimate (this device's measured speed, else the bench lines', by
    default ``results/<size>/benchmarks/*.jsonl``) and the device minutes each tier needs."""
    paths = bench if bench is not None else sorted(glob.glob(str(ctx.results_dir / "benchmarks" / "*.jsonl")))
    lines = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if '"s_per_epoch"' in line]
    rows = []
    for j in pending:
        seconds, source = (None, "tuned") if not j.config_hash else \
            (None, "this device's log") if speed_key(ctx, j.spec) in speeds else price(ctx, j, lines)
        rows.append({"name": j.name, "tier": j.tier, "notebooks": j.notebooks, "sweeps": len(j.sweeps),
                     "estimate_s": _estimate(ctx, j, speeds, mode, seconds) if j.config_hash else None,
                     "speed_from": source})
    per_tier = {t: {"jobs": sum(r["tier"] == t for r in rows),
                    "not_priced": sum(r["tier"] == t and r["estimate_s"] is None for r in rows),
                    "device_minutes": round(sum(r["estimate_s"] or 0 for r in rows if r["tier"] == t) / 60, 1)}
                for t in sorted({r["tier"] for r in rows})}
    return {"size": ctx.size.name, "epochs_estimate": mode, "tiers": per_tier, "plan": rows}


def _fit_check(ctx: Context, spec: RunSpec, budget: int, fit_by: float | None):
    """An ``on_epoch_end`` hook: after the first steady epoch this process trains, give up if the
    measured speed says the run cannot reach its budgeted epochs before ``fit_by``."""
    seen: list[int] = []

    def check(epoch: int, record: dict) -> None:
        seen.append(epoch)
        if len(seen) == STEADY_EPOCH and epoch < budget and fit_by is not None:
            seconds = record.get("seconds", 0.0)
            if time.time() + seconds * (budget - epoch) * EVAL_OVERHEAD > fit_by:
                raise DoesNotFit(f"{spec.name}: {seconds:.2f} s per epoch x {budget - epoch} more epochs (of {budget}) "
                                 f"does not fit the {fit_by - time.time():.0f} s left", seconds)
    return check


def execute_job(payload: dict) -> dict:
    """Run one job (inline, or as a cluster job): train or reuse the run, then its sweeps (a model
    recorded earlier and lost since is retrained here). Never raises: returns the outcome."""
    t0 = time.time()
    ctx = Context.create(payload["size"], payload["device"], payload["output_dir"], progress=False,
                         read_roots=tuple(payload["read_roots"]))
    ctx.deadline = payload["deadline"] - SAFETY_S / 2 if payload["deadline"] is not None else None
    ctx.allow_cpu_training, ctx.speed = payload["allow_cpu_training"], dict(payload["speed"])
    spec = RunSpec.from_json(payload["spec"])
    out = {"name": payload["name"], "dataset": spec.dataset, "model": spec.model, "device": ctx.device_label,
           "speed_key": speed_key(ctx, spec)}
    try:
        ctx.epoch_hook = _fit_check(ctx, spec, payload["epochs_budget"] or _max_epochs(ctx, spec),
                                    ctx.deadline if payload["fit_by"] is None else payload["fit_by"] - SAFETY_S / 2)
        r = run(ctx, spec)
        out.update(config_hash=r.config_hash, epochs_run=r.epochs_run, stop_reason=r.stop_reason,
                   best_epoch=r.best_epoch, trained=not r.reused, train_wall_s=round(time.time() - t0, 1),
                   **({"s_per_epoch": round(r.seconds_per_epoch, 4)} if r.seconds_per_epoch else {}))
        for sw in map(Sweep.from_json, payload["sweeps"]):
            try:
                run_sweep(ctx, r, sw)
            except MissingModelError:
                retrain(r)
                run_sweep(ctx, r, sw)
        out.update(status="done", sweeps=len(payload["sweeps"]))
    except DoesNotFit as e:  # its first steady epoch's speed keeps the next runs of its kind from trying
        out.update(status="does not fit", reason=e.args[0], s_per_epoch=round(e.args[1], 4))
    except DeadlineReached as e:
        out.update(status="deadline", reason=str(e))
    except (NonFiniteLossError, FloatingPointError) as e:  # the same settings fail the same way: not retried
        out.update(status="failed", permanent=True, reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # logged; the campaign goes on with the next job
        out.update(status="failed", reason=f"{type(e).__name__}: {e}")
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def _measure_sampling_cost(ctx: Context, clog: CampaignLog, t_end: float) -> None:
    """Notebook 07's latency table, timed first while the device is otherwise idle (random
    weights: the cost does not depend on them), unless a store has it already."""
    params = notebooks.defaults("07_does_the_flow_matter")
    entries = reports.cost_entries(params["steps"])
    for dataset in params["datasets"]:
        if reports.available(ctx, dataset) and t_end - time.time() >= MIN_LEFT_FOR_LATENCY_S:
            t0 = time.time()
            cached_rows([s.cache("sampling_cost") for s in ctx.stores],
                        reports.sampling_cost_key(ctx, dataset, entries, reports.COST_USERS),
                        lambda: reports.sampling_cost(ctx, dataset, entries, users=reports.COST_USERS))
            clog.write("sampling cost", dataset=dataset, device=ctx.device_label, wall_s=round(time.time() - t0, 1))


def _is_done(ctx: Context, job: PlannedJob) -> bool:
    """Recorded, and every sweep it owes cached."""
    found = find(ctx, job.spec)
    return found is not None and all(
        any(lookup(s.cache(sw.kind), key_text(sw.key(found.config_hash))) is not None for s in ctx.stores)
        for sw in job.sweeps)


def run_campaign(size: str = "paper", device: str = "auto", deadline_s: float | None = 540.0, *,
                 tier: int | None = None, output_dir: str | Path | None = None, archive: str | Path | None = None,
                 dry_run: bool = False, executor: str = "local", executor_options: dict | None = None,
                 allow_cpu_training: bool = False, epochs_estimate: str = "max", retry_failed: bool = False,
                 speed: dict | None = None, fit_within_s: float | None = None, bench: list[str] | None = None) -> dict:
    """Run the campaign up to ``tier`` (None: all) until ``deadline_s`` seconds from now; returns a
    summary. ``speed``: speed-only settings for every run (``tf32``, ``compile``, ...), recorded
    in each result, never part of a run's identity. ``epochs_estimate``: :func:`planned_epochs`.
    ``fit_within_s`` (>= the deadline): start runs that can finish within this time, though training
    stops at the deadline. ``dry_run``: :func:`_dry_run`, nothing runs. On a cluster executor every
    startable job is submitted at once; each has its own time limit (``deadline_s`` may be None) and
    is retried ``executor_options["max_retries"]`` times (default 2) after a failure that may not repeat."""
    cluster = executor in CLUSTER_EXECUTORS
    if executor != "local" and not cluster:
        raise ValueError(f"unknown executor {executor!r}; known: local, {', '.join(CLUSTER_EXECUTORS)}")
    if deadline_s is None and not (cluster or dry_run):
        raise ValueError("a local campaign needs a deadline (seconds from now)")
    if epochs_estimate not in ("max", "expected"):
        raise ValueError(f"epochs_estimate must be 'max' or 'expected', got {epochs_estimate!r}")
    if fit_within_s is not None and (deadline_s is None or fit_within_s < deadline_s):
        raise ValueError(f"fit_within_s ({fit_within_s}) needs a deadline and must not be shorter ({deadline_s})")
    options = dict(executor_options or {})
    max_retries = int(options.pop("max_retries", 2 if cluster else 0))
    t_end = time.time() + deadline_s if deadline_s is not None else math.inf
    t_fit = time.time() + fit_within_s if fit_within_s is not None else t_end
    ctx = Context.create(size, "cpu" if cluster else device, output_dir, progress=False)  # a node resolves its own
    ctx.speed = dict(speed or {})
    ctx.configs("fmrec", 0)  # a setting that is not a speed field fails here, before any work
    ctx.allow_cpu_training = allow_cpu_training or ctx.device.type == "cuda" or size != "paper"
    pending = plan(ctx, tier)
    for job in pending:
        _resolve_tuned(ctx, job)
    done_before = [j for j in pending if j.config_hash and _is_done(ctx, j)]
    entries = [e for store in ctx.stores for e in CampaignLog(store.results / LOG_NAME).entries()]
    failed = set() if retry_failed else _permanent_failures(ctx, entries)
    skipped = [j.name for j in pending if j.config_hash in failed]
    pending = [j for j in pending if j not in done_before and j.config_hash not in failed]
    speeds = {e["speed_key"]: float(e["s_per_epoch"]) for e in entries
              if e.get("event") == "done" and e.get("s_per_epoch") and e.get("speed_key")}
    if dry_run:
        return {**_dry_run(ctx, pending, speeds, epochs_estimate, bench), "already_done": len(done_before)}
    clog = CampaignLog(ctx.results_dir / LOG_NAME)
    clog.write("campaign start", size=ctx.size.name, device=ctx.device_label, deadline_s=deadline_s, tier=tier,
               pending=len(pending), already_done=len(done_before), epochs_estimate=epochs_estimate,
               skipped_after_permanent_failure=skipped, executor=executor, speed=ctx.speed)
    if not cluster:
        _measure_sampling_cost(ctx, clog, t_end)
    if cluster:
        from .cluster import submitit_executor  # submitit is optional (pip install 'fmrec-lib[cluster]')
    pool = submitit_executor(executor, ctx, **options) if cluster else _Inline()
    outcomes, attempts, in_flight = [], {}, {}
    try:
        while True:
            startable = _startable(ctx, pending, in_flight.values(), speeds, t_end, t_fit, epochs_estimate)
            startable = startable if cluster else startable[:1]  # one job at a time on the device
            if cluster and startable:
                clog.write("array", jobs=[j.name for j in startable])
            payloads = []
            for job in startable:
                pending.remove(job)
                budget = epochs_budget(ctx, job, epochs_estimate)[0]
                clog.write("start", name=job.name, tier=job.tier, config_hash=job.config_hash, epochs_budget=budget,
                           estimate_s=_estimate(ctx, job, speeds, epochs_estimate), time_left_s=_left(t_end))
                payloads.append(job.payload(ctx, None if cluster else t_end, budget, device if cluster else None,
                                            None if cluster else t_fit))
            in_flight.update(zip(pool.submit_all(execute_job, payloads), startable) if payloads else ())
            if not in_flight:
                break
            for handle in pool.wait_any(list(in_flight), t_end):
                job = in_flight.pop(handle)
                try:
                    outcome = handle.result()
                except Exception as e:  # a cluster job that died (out of memory, node failure)
                    outcome = {"name": job.name, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
                _handle_outcome(clog, job, outcome, outcomes, speeds, attempts, max_retries, pending, ctx.speed)
                if archive:
                    write_archive(ctx, archive)
            if time.time() >= t_end and in_flight:
                break  # cluster jobs go on on their own; the next campaign finds what they recorded
    except BaseException:
        pool.cancel(list(in_flight))
        raise
    clog.write("campaign end", finished=sum(o["status"] == "done" for o in outcomes), not_started=len(pending),
               time_left_s=_left(t_end))
    if archive:
        write_archive(ctx, archive)
    return {"size": ctx.size.name, "device": ctx.device_label, "tier": tier, "already_done": len(done_before),
            "outcomes": outcomes, "not_started": [j.name for j in pending], "skipped_after_permanent_failure": skipped,
            "still_running": [j.name for j in in_flight.values()], "results": str(ctx.results_dir),
            "archive": str(archive) if archive else None, "retries": sum(attempts.values())}


def _left(t_end: float) -> int | None:
    return None if math.isinf(t_end) else round(t_end - time.time())


def _startable(ctx: Context, pending: list[PlannedJob], running, speeds: dict[str, float], t_end: float,
               t_fit: float, mode: str) -> list[PlannedJob]:
    """The pending jobs (in priority order) that can start now: resolved, not running, not done
    meanwhile, and whose estimate fits the time left (nothing starts once the deadline is near)."""
    if t_end - time.time() - SAFETY_S <= 0:
        return []
    left, taken, out = t_fit - time.time() - SAFETY_S, {j.config_hash for j in running}, []
    for job in list(pending):
        if not _resolve_tuned(ctx, job) or job.config_hash in taken:
            continue
        if _is_done(ctx, job):
            pending.remove(job)
        elif (estimate := _estimate(ctx, job, speeds, mode)) is None or estimate <= left:
            out.append(job)
            taken.add(job.config_hash)
    pending.sort(key=lambda j: j.priority)  # a resolved job may have changed tier
    return sorted(out, key=lambda j: j.priority)


def _handle_outcome(clog: CampaignLog, job: PlannedJob, outcome: dict, outcomes: list[dict], speeds: dict[str, float],
                    attempts: dict[str, int], max_retries: int, pending: list[PlannedJob], speed: dict) -> None:
    """Log one finished job, learn its speed (also a first steady epoch that did not fit), and
    queue a retry when it failed in a way that may not repeat and retries are left."""
    outcome.setdefault("config_hash", job.config_hash)
    outcome.setdefault("speed", speed)
    outcomes.append(outcome)
    if outcome.get("s_per_epoch") and outcome.get("speed_key"):
        speeds[outcome["speed_key"]] = outcome["s_per_epoch"]
    clog.write(outcome["status"], **{k: v for k, v in outcome.items() if k != "status"})
    if outcome["status"] == "failed" and not outcome.get("permanent") and attempts.get(job.name, 0) < max_retries:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        clog.write("retry", name=job.name, config_hash=job.config_hash, attempt=attempts[job.name],
                   max_retries=max_retries, reason=outcome.get("reason"))
        pending.append(job)
        pending.sort(key=lambda j: j.priority)
    elif outcome["status"] == "failed":
        log.error("%s failed: %s", job.name, outcome.get("reason"))


class _Inline:
    """The local executor: each job runs in this process when it is submitted; its handle is a
    finished future."""

    def submit_all(self, fn, payloads: list[dict]) -> list[Future]:
        handles = [Future() for _ in payloads]
        for handle, payload in zip(handles, payloads):
            handle.set_result(fn(payload))
        return handles

    def wait_any(self, handles: list, t_end: float) -> list:
        return handles

    def cancel(self, handles: list) -> None:
        pass


def write_archive(ctx: Context, path: str | Path) -> Path:
    """Pack ``results/<size>/`` (runs, per-user files, caches, tables, the log) into ``path``;
    each file is read under its lock, so no half-written append is packed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for file in sorted(p for p in ctx.results_dir.rglob("*") if p.is_file() and p.suffix not in (".lock", ".tmp")):
            with locked(file, shared=True):
                tar.add(file, arcname=f"results/{ctx.size.name}/{file.relative_to(ctx.results_dir)}")
    tmp.replace(path)
    return path


def merge_archive(archive: str | Path, *, size: str = "paper", output_dir: str | Path | None = None) -> dict:
    """Merge an archive written by :func:`write_archive` (or a results folder) into the local
    ``results/<size>/``: new runs, per-user files, cache entries and log lines are appended;
    nothing is overwritten."""
    target = Context.create(size, "cpu", output_dir, progress=False).results_dir
    archive = Path(archive)
    if archive.is_dir():
        return merge_results(archive, target)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out of the folder, devices
        source = Path(tmp) / "results" / size
        if not source.is_dir():
            raise FileNotFoundError(f"{archive} holds no results/{size}/ folder")
        return merge_results(source, target)
