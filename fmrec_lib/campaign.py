"""The campaign: every run and evaluation sweep the notebooks need at a size, in priority
order, before a deadline, K at a time on one device; for GPU windows of a few minutes.

Priority (first to last): every notebook's first seed before any later seed; ML-100k and
Beauty before the other datasets; FMRec's default run (with every sweep that needs its model)
before the main table's other runs, before ablations and sensitivity runs; ML-100k before
Beauty. A run is started only if its estimate (measured seconds per epoch x the epochs it is
budgeted for and has not trained yet) fits the time left (until the deadline, or ``fit_within_s``
when a later call resumes it); a run whose speed is not known yet measures its first epoch and
gives up at once if it cannot finish. Runs stop cleanly before the deadline, with a running
checkpoint after their last epoch, which the next invocation with the same output root resumes. What is already recorded is skipped, so a second invocation trains
nothing. The sweeps that need a run's model run right after it, in the same job, because
paper-size checkpoints never leave the GPU machine.

Everything goes to ``results/<size>/`` of the output root; ``campaign.log.jsonl`` there says
what ran, its measured seconds per epoch, the epochs it took and why it stopped. With
``archive`` that folder is packed into one ``.tar.gz`` after every finished job (so a command
killed at its time limit still returns what it finished); :func:`merge_archive` merges such an
archive into the local results, appending and never overwriting.

On a cluster (``executor="slurm"``, :mod:`fmrec_lib.cluster`) the same jobs are submitit jobs:
every job that can start goes into one job array, later seeds of the main table and retries
into later arrays; there is no window deadline (each job has its cluster time limit and is
requeued after a timeout or a preemption), and a job that fails is resubmitted up to
``max_retries`` times. ``debug`` and ``local-submitit`` run that code path on one machine.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import math
import multiprocessing
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import Context
from .results import append_text, locked, merge_results
from .runs import MissingModelError, RunSpec, Sweep

log = logging.getLogger(__name__)

LOG_NAME = "campaign.log.jsonl"
SAFETY_S = 20.0  # stop this long before the deadline: time to write results and the archive
MIN_LEFT_FOR_LATENCY_S = 80.0  # the latency table (a few seconds on a GPU) only with time for more
EVAL_OVERHEAD = 1.15  # validations and the final test on top of the training epochs, in the estimate
DATASET_ORDER = ("ml-100k", "beauty", "yelp", "steam")
# Epochs the authors' FMRec runs took before their patience rule stopped them (the issue's
# measurement): the "expected" budget of FMRec runs before this project has measured its own.
AUTHORS_FMREC_EPOCHS = {"ml-100k": 260, "beauty": 480}
EXPECTED_QUANTILE = 0.9  # budget the 90th percentile of recorded runs' epochs, not the median
ESTIMATES = ("max", "expected")
FIRST_GROUP = ("ml-100k", "beauty")  # "Yelp after them"
CLUSTER_EXECUTORS = ("slurm", "debug", "local-submitit")
RETRIES = {"local": 0, "cluster": 2}  # default max_retries: a failed job is resubmitted this many times
FAIL_ONCE_ENV = "FMREC_FAIL_ONCE"  # tests: the job of this name fails at its first attempt


class DoesNotFit(RuntimeError):
    """The run's measured speed says it cannot finish before the deadline."""

    def __init__(self, message: str, seconds_per_epoch: float):
        super().__init__(message)
        self.seconds_per_epoch = seconds_per_epoch


@dataclass
class PlannedJob:
    """One unit of campaign work: a training run plus the sweeps that need its model."""

    name: str
    spec: Any  # RunSpec, or reports.TunedSpec until the tuning runs it depends on are recorded
    sweeps: list[Sweep]
    priority: tuple
    notebooks: list[str]
    config_hash: str | None = None
    solo: bool = False  # never in a stack (its stack did not fit: it runs alone)
    crowded: bool = False  # it did not fit while other jobs shared the device: queued once to run alone

    @property
    def dataset(self) -> str:
        return self.spec.dataset

    @property
    def model(self) -> str:
        return self.spec.model

    def payload(self, ctx: Context, deadline: float | None, epochs_budget: int | None = None,
                device: str | None = None, fit_by: float | None = None) -> dict:
        """What :func:`execute_job` needs; ``deadline`` None: none (a cluster job has its time
        limit); ``fit_by`` (default: the deadline): when the run must be able to finish, later
        than the deadline when a later call resumes it; ``device``: where the job runs when not
        the context's (a cluster node's ``cuda``)."""
        return {"spec": self.spec.to_json(), "epochs_budget": epochs_budget, "sweeps": [s.to_json() for s in self.sweeps], "size": ctx.size.name,
                "device": device or str(ctx.device), "output_dir": str(ctx.output_dir), "deadline": deadline,
                "fit_by": fit_by,
                "read_roots": [str(r) for r in ctx.read_roots],
                "allow_cpu_training": ctx.allow_cpu_training, "name": self.name, "speed": dict(ctx.speed)}


def _priority(job, notebook_index: int, sequence: int) -> tuple:
    dataset = job.spec.dataset
    group = 0 if dataset in FIRST_GROUP else 1
    rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return (job.seed_rank, group, job.tier, rank, notebook_index, sequence)


def plan(ctx: Context) -> list[PlannedJob]:
    """Every job of every notebook at its committed configuration, duplicates (the same run
    needed by several notebooks) merged, sorted by priority."""
    from . import reports
    from .runs import spec_hash

    merged: dict[str, PlannedJob] = {}
    for index, notebook in enumerate(reports.DEFAULTS):
        for sequence, job in enumerate(reports.jobs(ctx, notebook)):
            priority = _priority(job, index, sequence)
            key = spec_hash(ctx, job.spec) if isinstance(job.spec, RunSpec) else job.spec.name
            if key in merged:
                entry = merged[key]
                _merge_into(entry, PlannedJob(job.spec.name, job.spec, list(job.sweeps), priority, [notebook]))
                if isinstance(job.spec, RunSpec) and len(job.spec.overrides) < len(entry.spec.overrides):
                    entry.spec, entry.name = job.spec, job.spec.name  # the same run, named most simply
            else:
                merged[key] = PlannedJob(job.spec.name, job.spec, list(job.sweeps), priority, [notebook],
                                         key if isinstance(job.spec, RunSpec) else None)
    return sorted(merged.values(), key=lambda j: j.priority)


class CampaignLog:
    """Append-only JSON lines in ``results/<size>/campaign.log.jsonl``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields) -> dict:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **fields}
        with locked(self.path):
            append_text(self.path, json.dumps(entry, default=str, sort_keys=True) + "\n")
        log.info("campaign %s: %s", event, {k: v for k, v in fields.items() if k in ("name", "reason", "s_per_epoch",
                                                                                       "epochs_run", "stop_reason")})
        return entry

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def speed_key(ctx: Context, spec: RunSpec, stack: int = 1) -> str:
    """What a measured speed applies to: dataset, model, device, torch, the speed settings and
    the stack size (an epoch of a stack of K is an epoch of all K runs)."""
    import torch

    from .train import TrainConfig

    _, tc = ctx.configs(spec.model, spec.seed, **spec.overrides)
    flags = ",".join(f"{k}={tc.get(k, getattr(TrainConfig, k))}" for k in (*TrainConfig.SPEED_FIELDS, "amp_bf16"))
    return f"{spec.dataset}|{spec.model}|{ctx.device_label}|torch {torch.__version__}|{flags}" + \
        (f"|stack={stack}" if stack > 1 else "")


def _log_entries(ctx: Context) -> list[dict]:
    """Every store's campaign log, in store order (read once when a campaign starts)."""
    return [entry for store in ctx.stores for entry in CampaignLog(store.results / LOG_NAME).entries()]


def _known_speeds(ctx: Context, alone_only: bool = False, entries: list[dict] | None = None) -> dict[str, float]:
    """Steady seconds per epoch of finished runs (not first epochs, which carry start-up and
    compilation), from every store's log (``entries``: :func:`_log_entries`, when the caller has
    them), by :func:`speed_key`; ``alone_only``: only of runs that had the device to themselves
    (a campaign running one job at a time)."""
    speeds: dict[str, float] = {}
    for entry in _log_entries(ctx) if entries is None else entries:
        if entry.get("event") == "done" and entry.get("s_per_epoch") and entry.get("speed_key") and \
                not (alone_only and entry.get("shared_device")):
            speeds[entry["speed_key"]] = float(entry["s_per_epoch"])
    return speeds


ONE_AT_A_TIME = "one job at a time"  # a campaign stops sharing the device (why: in its reason)
SHARING_DID_NOT_FIT = "sharing did not fit"  # a job that gave up while sharing then fitted alone
SHARING_FITS = "sharing fits"  # a campaign shared the device and no job gave up for it


def _crowding(ctx: Context, stack: int, entries: list[dict] | None = None) -> dict | None:
    """The latest logged verdict (any store; ``entries`` as for :func:`_known_speeds`) on sharing
    the device with this context's device, speed settings and stack size, if it is that runs did
    not fit while sharing but fitted alone; else None (never shared, or shared successfully since)."""
    latest = None
    for entry in _log_entries(ctx) if entries is None else entries:
        if entry.get("event") in (SHARING_DID_NOT_FIT, SHARING_FITS) and entry.get("device") == ctx.device_label \
                and entry.get("speed") == ctx.speed and entry.get("stack") == stack and \
                (latest is None or entry.get("time", "") >= latest.get("time", "")):
            latest = entry
    return latest if latest is not None and latest["event"] == SHARING_DID_NOT_FIT else None


def _fits_alone(ctx: Context, job: PlannedJob, outcome: dict, sharing: int, t_fit: float, mode: str) -> bool:
    """Whether a job that gave up while ``sharing`` jobs ran at once could fit alone: its measured
    seconds per epoch divided by ``sharing`` (the most one job's share of the device can gain)
    times the epochs it is budgeted for."""
    seconds = outcome.get("s_per_epoch")
    if not seconds or not isinstance(job.spec, RunSpec):
        return False
    total, done = epochs_budget(ctx, job, mode)
    return seconds / sharing * (total - done) * EVAL_OVERHEAD <= t_fit - time.time() - SAFETY_S


def _is_done(ctx: Context, job: PlannedJob) -> bool:
    """Recorded, and every sweep it owes cached."""
    from .runs import find

    found = find(ctx, job.spec)
    return found is not None and _sweeps_cached(ctx, job, found.config_hash)


def _sweeps_cached(ctx: Context, job: PlannedJob, config_hash: str) -> bool:
    from .runs import key_text, lookup

    return all(any(lookup(store.cache(sw.kind), key_text(sw.key(config_hash))) is not None for store in ctx.stores)
               for sw in job.sweeps)


def _max_epochs(ctx: Context, spec: RunSpec) -> int:
    from .models import MODELS
    from .train import TrainConfig

    if not MODELS[spec.model][0].trainable:
        return 0
    _, tc = ctx.configs(spec.model, spec.seed, **spec.overrides)
    return int(tc.get("epochs", TrainConfig.epochs))


def planned_epochs(ctx: Context, spec: RunSpec, mode: str = "max") -> int:
    """Epochs a run is budgeted for: its maximum (``max``, the safe rule), or (``expected``) the
    90th percentile of the epochs recorded runs of the same dataset and model took at this
    size, else (FMRec only) what the authors' runs took, never more than the maximum. A run
    that goes on longer is stopped at the deadline with a running checkpoint, which a later call
    on the same machine and output root resumes (a GPU window's second call); after the window
    its work is lost."""
    if mode not in ESTIMATES:
        raise ValueError(f"epochs estimate must be one of {ESTIMATES}, got {mode!r}")
    most = _max_epochs(ctx, spec)
    if mode == "max" or most == 0:
        return most
    import numpy as np

    from .results import read_results

    taken = []
    for store in ctx.stores:
        rows = read_results(store.runs)
        rows = rows[(rows["dataset"] == spec.dataset) & (rows["model"] == spec.model)].drop_duplicates("config_hash")
        taken += [int(e) for e in rows["epochs_run"] if e == e and int(e) > 0]
    if taken:
        return min(most, int(np.ceil(np.quantile(taken, EXPECTED_QUANTILE))))
    prior = AUTHORS_FMREC_EPOCHS.get(spec.dataset) if ctx.size.name == "paper" and spec.model == "fmrec" else None
    return min(most, prior) if prior else most


def epochs_done(ctx: Context, job: PlannedJob, stack: int = 1) -> int:
    """Epochs an interrupted run of ``job`` has trained already in the context's store (a
    deadline stopped it, and this is a later call with the same output root, say a GPU window's
    second call): the epoch of its running checkpoint or, when the campaign stacks runs and the
    job may join one (:func:`_interrupted_stack_of`), of the interrupted stack holding it, which
    is then resumed; 0 when it starts afresh. (With ``separate_outputs`` a job's checkpoints are
    in its own folder: not looked at.)"""
    return _resume_point(ctx, job, stack)[1]


def _resume_point(ctx: Context, job: PlannedJob, stack: int) -> tuple[dict | None, int]:
    """(the interrupted stack ``job`` resumes with, or None; :func:`epochs_done`)."""
    from . import checkpoints

    if not isinstance(job.spec, RunSpec) or job.config_hash is None:
        return None, 0
    earlier = _interrupted_stack_of(ctx, job, stack)
    path = Path(earlier["path"]).with_suffix(".pt") if earlier is not None else _running_path(ctx, job)
    return earlier, checkpoints.saved_epoch(path) or 0


def _running_path(ctx: Context, job: PlannedJob) -> Path:
    """Where ``job``'s run keeps its own running checkpoint in the context's store."""
    from . import checkpoints

    return checkpoints.running_path(ctx.store.checkpoints, job.model, job.config_hash)


def epochs_budget(ctx: Context, job: PlannedJob, mode: str = "max", stack: int = 1,
                  done: int | None = None) -> tuple[int, int]:
    """(the epochs ``job``'s run is budgeted for in all, the epochs it has trained already): a
    resumed run needs only the rest; one that has run past its expected epochs is budgeted to
    its next validation at least. ``done``: :func:`epochs_done`, when the caller has it."""
    total = planned_epochs(ctx, job.spec, mode)
    done = epochs_done(ctx, job, stack) if done is None else done
    if done and done >= total:
        from .train import TrainConfig

        _, tc = ctx.configs(job.spec.model, job.spec.seed, **job.spec.overrides)
        total = min(_max_epochs(ctx, job.spec), done + int(tc.get("eval_every", TrainConfig.eval_every)))
    return total, min(done, total)


def _job_context(payload: dict) -> Context:
    """The context a worker runs a job's payload in (:meth:`PlannedJob.payload`)."""
    ctx = Context.create(payload["size"], payload["device"], payload["output_dir"], progress=False,
                         read_roots=tuple(payload["read_roots"]))
    ctx.deadline = payload["deadline"] - SAFETY_S / 2 if payload["deadline"] is not None else None
    ctx.fit_by = payload["fit_by"] - SAFETY_S / 2 if payload.get("fit_by") is not None else ctx.deadline
    ctx.allow_cpu_training = payload["allow_cpu_training"]
    ctx.speed = dict(payload.get("speed", {}))
    return ctx


def _run_fields(r, t0: float) -> dict:
    """A finished run's part of a job's outcome; its speed only when it was trained here."""
    fields = {"config_hash": r.config_hash, "epochs_run": r.epochs_run, "stop_reason": r.stop_reason,
              "best_epoch": r.best_epoch, "trained": not r.reused, "train_wall_s": round(time.time() - t0, 1)}
    if not r.reused and r.seconds_per_epoch:
        fields["s_per_epoch"] = round(r.seconds_per_epoch, 4)
    return fields


def _run_sweeps(ctx: Context, r, sweeps: list[dict]) -> None:
    """A job's sweeps of its run's model (a model recorded earlier and lost since is retrained here)."""
    from .runs import retrain, sweep

    for sw in (Sweep.from_json(s) for s in sweeps):
        try:
            sweep(ctx, r, sw)
        except MissingModelError:
            retrain(r)
            sweep(ctx, r, sw)


def execute_job(payload: dict) -> dict:
    """Run one job (in a worker process, a cluster job or inline): train or reuse the run,
    then its sweeps. Never raises: the outcome is a dict with ``status``."""
    from .runs import find, run
    from .train import DeadlineReached, NonFiniteLossError

    t0 = time.time()
    ctx = _job_context(payload)
    spec = RunSpec.from_json(payload["spec"])
    out = {"name": payload["name"], "dataset": spec.dataset, "model": spec.model, "device": ctx.device_label,
           "speed_key": speed_key(ctx, spec)}
    try:
        _fail_once(payload)
        ctx.epoch_hook = _fit_check(ctx, spec, payload.get("epochs_budget"))
        r = find(ctx, spec) or run(ctx, spec)
        out.update(_run_fields(r, t0))
        _run_sweeps(ctx, r, payload["sweeps"])
        out.update(status="done", sweeps=len(payload["sweeps"]))
    except DoesNotFit as e:  # its first epoch's speed keeps the next runs of its kind from trying
        out.update(status="does not fit", reason=str(e), s_per_epoch=round(e.seconds_per_epoch, 4))
    except DeadlineReached as e:
        out.update(status="deadline", reason=str(e))
    except (NonFiniteLossError, FloatingPointError) as e:  # the same settings fail the same way: not retried
        out.update(status="failed", permanent=True, reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # recorded in the log; the campaign goes on with the next job
        out.update(status="failed", reason=f"{type(e).__name__}: {e}")
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def execute_stack(payloads: list[dict]) -> list[dict]:
    """Run several jobs whose runs train as one stack (:func:`fmrec_lib.runs.run_stacked`); each
    job's sweeps run as soon as its run ends, while the others train on, on the model just
    trained. Never raises: one outcome dict per job, in order."""
    from .runs import run_stacked
    from .train import DeadlineReached, NonFiniteLossError

    t0 = time.time()
    ctx = _job_context(payloads[0])
    specs = [RunSpec.from_json(p["spec"]) for p in payloads]
    size = payloads[0].get("stack_size") or len(specs)  # a resumed stack also holds runs that have ended
    outs = [{"name": p["name"], "dataset": s.dataset, "model": s.model, "device": ctx.device_label,
             "stack": size} for p, s in zip(payloads, specs)]

    def finished(i: int, r) -> None:  # a run of the stack has ended: record its outcome, run its sweeps now
        out = outs[i]
        if isinstance(r, (NonFiniteLossError, FloatingPointError)):
            out.update(status="failed", permanent=True, reason=f"{type(r).__name__}: {r}")
        elif isinstance(r, BaseException):
            out.update(status="failed", reason=f"{type(r).__name__}: {r}")
        else:
            out.update(_run_fields(r, t0), stack=r.stack, speed_key=speed_key(ctx, specs[i], r.stack))
            try:
                _run_sweeps(ctx, r, payloads[i]["sweeps"])
                out.update(status="done", sweeps=len(payloads[i]["sweeps"]))
            except Exception as e:  # recorded, but its sweeps failed: the next campaign runs them
                out.update(status="failed", reason=f"sweeps: {type(e).__name__}: {e}")
        out["wall_s"] = round(time.time() - t0, 1)

    try:
        ctx.epoch_hook = _fit_check(ctx, specs[0], max(p.get("epochs_budget") or 0 for p in payloads) or None)
        for i, r in enumerate(run_stacked(ctx, specs, on_run=finished)):
            if "status" not in outs[i]:  # recorded before (not trained by this stack)
                finished(i, r)
    except DoesNotFit as e:  # the members are queued again by the campaign, to run alone
        for out in outs:
            out.update(status="does not fit", reason=str(e), s_per_epoch=round(e.seconds_per_epoch, 4),
                       speed_key=speed_key(ctx, specs[0], size))
    except DeadlineReached as e:  # runs that ended before it have their outcome; the others start again later
        for out in outs:
            out.setdefault("status", "deadline")
            out.setdefault("reason", str(e))
    except Exception as e:
        for out in outs:
            out.setdefault("status", "failed")
            out.setdefault("reason", f"{type(e).__name__}: {e}")
    for out in outs:
        out.setdefault("wall_s", round(time.time() - t0, 1))
    return outs


def _interrupted_stack_of(ctx: Context, job: PlannedJob, stack: int) -> dict | None:
    """The interrupted stack in the context's store that holds ``job``'s unfinished run (when the
    campaign stacks runs), or None."""
    from .stacked import interrupted_stacks

    if stack <= 1 or job.solo or not isinstance(job.spec, RunSpec) or job.config_hash is None:
        return None
    return next((earlier for earlier in interrupted_stacks(ctx.store.checkpoints, job.model)
                 if job.config_hash in earlier["members"] and job.config_hash not in earlier.get("ended", [])), None)


def _own_checkpoint(ctx: Context, job: PlannedJob) -> bool:
    """Whether ``job``'s run has a running checkpoint of its own (a deadline stopped it alone)."""
    return job.config_hash is not None and _running_path(ctx, job).exists()


def _stack_partners(ctx: Context, job: PlannedJob, pending: list[PlannedJob], running, stack: int,
                    earlier: dict | None = None) -> list[PlannedJob]:
    """Up to ``stack - 1`` pending jobs (in priority order) whose runs can train in one stack with
    ``job``'s: same dataset and stack key (:func:`fmrec_lib.stacked.stack_key`), none recorded yet.
    With ``earlier``, the interrupted stack holding ``job`` (:func:`_interrupted_stack_of`): its
    other unfinished runs, so that the stack resumes where it stopped."""
    from .runs import _resolve, find
    from .stacked import stack_key

    if stack <= 1 or job.solo or not isinstance(job.spec, RunSpec) or find(ctx, job.spec) is not None:
        return []
    if earlier is None and _own_checkpoint(ctx, job):
        return []  # a single run that a deadline stopped: it resumes alone
    if earlier is not None:
        running_hashes = {j.config_hash for j in running}
        ended = set(earlier.get("ended", []))
        by_hash = {o.config_hash: o for o in pending if o is not job and _resolve_tuned(ctx, o)}
        return [by_hash[h] for h in earlier["members"] if h in by_hash and h != job.config_hash
                and h not in ended and h not in running_hashes and find(ctx, by_hash[h].spec) is None]

    def key(j: PlannedJob):
        _, mc, tc = _resolve(ctx, j.spec)
        k = stack_key(j.spec.model, mc, tc)
        return None if k is None else (j.spec.dataset, k)

    mine = key(job)
    if mine is None:
        return []
    running_hashes = {j.config_hash for j in running}
    partners = []
    for other in pending:
        if len(partners) == stack - 1:
            break
        if other is job or other.solo or not _resolve_tuned(ctx, other) or \
                other.config_hash in running_hashes | {job.config_hash}:
            continue
        if other.config_hash in {p.config_hash for p in partners} or key(other) != mine or _own_checkpoint(ctx, other):
            continue
        if find(ctx, other.spec) is None:
            partners.append(other)
    return partners


def _fail_once(payload: dict) -> None:
    """For tests of retries: with ``FMREC_FAIL_ONCE=<job name>`` that job's first attempt fails.
    A marker file in the output root remembers the attempt, so this works across processes
    (submitit's subprocesses, cluster jobs) where a monkeypatch would not reach."""
    name = os.environ.get(FAIL_ONCE_ENV)
    if name != payload["name"]:
        return
    marker = Path(payload["output_dir"]) / f".fail-once-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return
    raise RuntimeError(f"injected failure ({FAIL_ONCE_ENV}={name}): the first attempt fails")


STEADY_EPOCH = 2  # the first epoch carries start-up and compilation: judge the speed on the second


def _fit_check(ctx: Context, spec: RunSpec, epochs_budget: int | None = None):
    """An ``on_epoch_end`` hook: after the first steady epoch this process trains (a resumed run
    counts from where it resumed), give up at once if the measured speed says the run cannot
    reach its budgeted epochs (in all; default: its maximum) before the deadline."""
    budget = epochs_budget or _max_epochs(ctx, spec)
    seen: list[int] = []

    def check(epoch: int, record: dict) -> None:
        seen.append(epoch)
        fit_by = ctx.fit_by or ctx.deadline
        if len(seen) == STEADY_EPOCH and epoch < budget and fit_by is not None:
            seconds = record.get("seconds", 0.0)
            projected = time.time() + seconds * (budget - epoch) * EVAL_OVERHEAD
            if projected > fit_by:
                raise DoesNotFit(f"{spec.name}: {seconds:.2f} s per epoch x {budget - epoch} more epochs (of "
                                 f"{budget}) does not fit the {fit_by - time.time():.0f} s left", seconds)
    return check


class _InlineExecutor(cf.Executor):
    """Runs each job in this process when it is submitted (one job at a time)."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001  (passed on to the caller through the future)
            future.set_exception(e)
        return future


def make_executor(kind: str, jobs: int, options: dict, ctx: Context):
    """``local``: ``jobs`` worker processes (spawned, so each has its own CUDA context) or this
    process for one job (a ``concurrent.futures`` executor); ``slurm``, ``debug``,
    ``local-submitit``: submitit (:class:`fmrec_lib.cluster.SubmititPool`)."""
    if kind == "local":
        if jobs == 1:
            return _InlineExecutor()
        return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    from .cluster import submitit_executor

    return submitit_executor(kind, ctx, **options)


def run_campaign(size: str = "paper", device: str = "auto", deadline_s: float | None = 540.0, jobs: int = 1, *,
                 output_dir: str | Path | None = None, archive: str | Path | None = None, dry_run: bool = False,
                 executor: str = "local", executor_options: dict | None = None,
                 allow_cpu_training: bool = False, epochs_estimate: str = "max", retry_failed: bool = False,
                 speed: dict | None = None, stack: int = 1, fit_within_s: float | None = None,
                 share_again: bool = False) -> dict:
    """Run the campaign until ``deadline_s`` seconds from now; returns a summary.

    ``fit_within_s`` (>= ``deadline_s``; default: the deadline): runs are started, and kept
    going after their first steady epoch, if they can finish within this many seconds from now,
    although training stops at the deadline: for a GPU window's first call, whose runs the
    second call on the same machine resumes (their running checkpoints, written at the deadline).

    ``speed``: speed-only settings for every run (``tf32``, ``fused_adam``, ``compile``,
    ``compile_mode``): they change how fast, not which run (its identity), and each result
    records them in its ``runtime``.

    ``epochs_estimate``: ``max`` budgets every run for its maximum epochs (nothing is ever cut
    off, but long runs may never start in a short window); ``expected`` for the epochs such
    runs took so far (:func:`planned_epochs`): a run that goes on longer is stopped at the
    deadline and its running checkpoint is all that remains of it.

    On a cluster executor (:data:`CLUSTER_EXECUTORS`) ``deadline_s`` may be None: jobs are not
    stopped by it (their time limit bounds them), it only keeps jobs that cannot finish by then
    from starting; ``device`` is resolved on the node running each job, and the latency
    table of notebook 07 is not timed (this process is not on a GPU node).
    ``executor_options["max_retries"]``: how many times a failed job is resubmitted (default
    :data:`RETRIES`), each retry logged; ``executor_options["separate_outputs"]``: each job
    writes under ``<output root>/jobs/<size>/<config hash>/`` (reading the shared results too)
    and this process, the only writer of ``results/<size>/``, merges it in when the job ends:
    for a shared disk whose file locks do not hold across nodes. The other options go to
    :func:`make_executor`.

    ``stack`` K > 1 (local executor): a job whose run can share a stack takes up to K - 1 later
    pending jobs of the same dataset and stack key with it, and their runs train as one stack in
    one worker (:mod:`fmrec_lib.stacked`: each run's own seed, batches and selection, the random
    draws shared by the stack); each then runs its own sweeps. A stack counts as one of the
    ``jobs`` running at once; its measured speed is kept apart from single runs' (:func:`speed_key`).

    Jobs sharing one device (local ``jobs`` > 1) each run slower than alone. When one of them
    gives up because its speed while sharing does not fit, though that speed divided by the jobs it
    shared with would (:func:`_fits_alone`; otherwise it is an ordinary "does not fit"), the
    campaign runs one job at a time from then on (``one job at a time`` in the log): that job, and
    every other one that gives up so, is queued again, once, to run alone, and only speeds measured
    alone price jobs. Once such a job has fitted alone (``sharing did not fit``), a later campaign
    with the same device, speed settings and stack size starts one job at a time, unless
    ``share_again``; a campaign that shares to its end with a job finished while sharing and none
    given up (``sharing fits``) lifts that."""
    if epochs_estimate not in ESTIMATES:
        raise ValueError(f"epochs_estimate must be one of {ESTIMATES}, got {epochs_estimate!r}")
    cluster = executor in CLUSTER_EXECUTORS
    if executor != "local" and not cluster:
        raise ValueError(f"unknown executor {executor!r}; known: local, {', '.join(CLUSTER_EXECUTORS)}")
    if deadline_s is None and not cluster:
        raise ValueError("a local campaign needs a deadline (seconds from now)")
    if stack < 1 or (stack > 1 and cluster):
        raise ValueError(f"stack must be >= 1, and 1 on a cluster executor (got {stack} with {executor})")
    options = dict(executor_options or {})
    max_retries = int(options.pop("max_retries", RETRIES["cluster" if cluster else "local"]))
    separate = bool(options.pop("separate_outputs", False))
    t_end = time.time() + deadline_s if deadline_s is not None else math.inf
    if fit_within_s is not None and (deadline_s is None or fit_within_s < deadline_s):
        raise ValueError(f"fit_within_s ({fit_within_s}) needs a deadline and must not be shorter than it "
                         f"({deadline_s})")
    t_fit = time.time() + fit_within_s if fit_within_s is not None else t_end
    # a cluster's driver plans on this machine; each job resolves its device on its node
    ctx = Context.create(size, "cpu" if cluster else device, output_dir, progress=False)
    ctx.speed = dict(speed or {})
    ctx.configs("fmrec", 0)  # a setting that is not a speed field fails here, before any work
    job_device = device if cluster else None
    ctx.allow_cpu_training = allow_cpu_training or ctx.device.type == "cuda" or size != "paper"
    clog = CampaignLog(ctx.results_dir / LOG_NAME)
    pending = plan(ctx)
    for job in pending:
        _resolve_tuned(ctx, job)
    done_before = [j for j in pending if isinstance(j.spec, RunSpec) and _is_done(ctx, j)]
    pending = [j for j in pending if j not in done_before]
    logged = _log_entries(ctx)  # every store's log, read once
    failed = set() if retry_failed else _permanent_failures(ctx, stack, logged)
    skipped_failed = [j.name for j in pending if j.config_hash in failed]
    pending = [j for j in pending if j.config_hash not in failed]
    crowded_before = None if cluster or jobs <= 1 or share_again else _crowding(ctx, stack, logged)
    alone_speeds = _known_speeds(ctx, alone_only=True, entries=logged)  # measured with the device to itself
    speeds = dict(alone_speeds) if crowded_before or jobs <= 1 else _known_speeds(ctx, entries=logged)
    if dry_run:
        plan_rows = [{"name": j.name, "notebooks": j.notebooks, "sweeps": len(j.sweeps),
                      "estimate_s": _estimate(ctx, j, speeds, epochs_estimate, stack),
                      "resumes_after_epoch": epochs_done(ctx, j, stack)} for j in pending]
        if stack > 1:  # the stacks the priority order would form, time aside: each job's stack leader
            left, leaders = list(pending), {}
            for j in pending:
                if j not in left:
                    continue
                left.remove(j)
                partners = (_stack_partners(ctx, j, left, [], stack, _interrupted_stack_of(ctx, j, stack))
                            if isinstance(j.spec, RunSpec) else [])
                for member in (j, *partners):
                    leaders[id(member)] = j.name
                for other in partners:
                    left.remove(other)
            for row, j in zip(plan_rows, pending):
                row["stack_leader"] = leaders.get(id(j))
        return {"size": ctx.size.name, "device": ctx.device_label, "already_done": len(done_before),
                "plan": plan_rows}
    clog.write("campaign start", size=ctx.size.name, device=ctx.device_label, deadline_s=deadline_s, jobs=jobs,
               pending=len(pending), already_done=len(done_before), epochs_estimate=epochs_estimate,
               skipped_after_permanent_failure=skipped_failed,
               **({"executor": executor, "max_retries": max_retries} if cluster else {}))
    if not cluster:
        _measure_sampling_cost(ctx, clog, t_end)
    pool = make_executor(executor, jobs, options, ctx)
    capacity = getattr(pool, "capacity", jobs)  # None: every startable job at once (the cluster queues them)
    if crowded_before:
        capacity = 1
        clog.write(ONE_AT_A_TIME, device=ctx.device_label, speed=ctx.speed, stack=stack, jobs=jobs,
                   reason=f"runs with these settings did not fit while sharing this device before "
                          f"({crowded_before.get('time', 'an earlier campaign')}); share_again to try")
    sharing: dict[Any, int] = {}  # in-flight handle -> the most jobs in flight while it ran
    shared_ok = confirmed = False  # a job finished while sharing; a job that gave up sharing then fitted alone
    arrays = hasattr(pool, "submit_array")  # a cluster: the jobs that start together go in one array
    in_flight: dict[Any, PlannedJob | list[PlannedJob]] = {}  # futures (local; a stack: its jobs) or submitit jobs
    outcomes: list[dict] = []
    attempts: dict[str, int] = {}
    try:
        while True:
            starting: list[tuple[PlannedJob, dict]] = []
            while capacity is None or len(in_flight) + len(starting) < capacity:
                running = [*_flat(in_flight.values()), *(j for j, _ in starting)]
                job = _next_startable(ctx, pending, running, speeds, t_end, epochs_estimate, stack, t_fit)
                if job is None:
                    break
                pending.remove(job)
                earlier = _interrupted_stack_of(ctx, job, stack)
                partners = _stack_partners(ctx, job, pending, running, stack, earlier)
                members = [job, *partners]
                size = len(earlier["members"]) if earlier else len(members)
                known = speeds.get(speed_key(ctx, job.spec, size))
                budgets = [epochs_budget(ctx, m, epochs_estimate, stack) for m in members]
                if partners and earlier is None and known is not None and \
                        known * max(total - done for total, done in budgets) * EVAL_OVERHEAD > t_fit - time.time() - SAFETY_S:
                    partners = []  # this new stack's measured speed does not fit the time left: the job alone
                # (an interrupted stack is resumed whole, never split: _next_startable priced it at its speed)
                if partners or earlier is not None:  # a stack, or the rest of an interrupted one
                    for other in partners:
                        pending.remove(other)
                    clog.write("start stack", names=[m.name for m in members],
                               config_hashes=[m.config_hash for m in members], dataset=job.dataset, model=job.model,
                               resumes_after_epoch=max(done for _, done in budgets), time_left_s=_seconds_left(t_end))
                    payloads = [{**m.payload(ctx, t_end, total, fit_by=t_fit), "stack_size": size}
                                for m, (total, _) in zip(members, budgets)]
                    in_flight[pool.submit(execute_stack, payloads)] = members
                    continue
                budget, done = epochs_budget(ctx, job, epochs_estimate)
                clog.write("start", name=job.name, config_hash=job.config_hash, dataset=job.dataset, model=job.model,
                           estimate_s=_estimate(ctx, job, speeds, epochs_estimate), epochs_budget=budget,
                           resumes_after_epoch=done, time_left_s=_seconds_left(t_end))
                payload = job.payload(ctx, None if cluster else t_end, budget, device=job_device,
                                      fit_by=None if cluster else t_fit)
                if separate:
                    payload.update(output_dir=str(_job_root(ctx, job)),
                                   read_roots=[str(ctx.output_dir), *payload["read_roots"]])
                if arrays:
                    starting.append((job, payload))
                else:
                    in_flight[pool.submit(execute_job, payload)] = job
            if starting:
                handles = pool.submit_array(execute_job, [p for _, p in starting])
                in_flight.update(zip(handles, (j for j, _ in starting)))
                clog.write("array", jobs=[j.name for j, _ in starting],
                           job_ids=[str(getattr(h, "job_id", "")) for h in handles])
            if not in_flight:
                break
            if not cluster:
                for handle in in_flight:
                    sharing[handle] = max(sharing.get(handle, 1), len(in_flight))
            finished = _wait_any(list(in_flight), getattr(pool, "poll_s", 1.0), t_end)
            if not finished and time.time() >= t_end:  # a job overran its deadline: stop waiting for it
                clog.write("deadline passed", still_running=[j.name for j in _flat(in_flight.values())])
                break
            gave_up_sharing = []
            for handle in finished:
                members = in_flight.pop(handle)
                members = members if isinstance(members, list) else [members]
                shared_by = sharing.pop(handle, 1)
                try:
                    results = handle.result()
                except Exception as e:  # a worker that died (out of memory, killed), a cluster job that never ran
                    results = [{"name": job.name, "dataset": job.dataset, "model": job.model, "status": "failed",
                                "reason": f"worker died: {type(e).__name__}: {e}", "device": ctx.device_label}
                               for job in members]
                for job, outcome in zip(members, results if isinstance(results, list) else [results]):
                    crowded = False
                    if shared_by > 1:
                        outcome["shared_device"] = shared_by
                        shared_ok = shared_ok or outcome["status"] == "done"
                        # gave up for sharing: it could fit alone (else it is just too long for the time left)
                        crowded = outcome["status"] == "does not fit" and not job.crowded and \
                            _fits_alone(ctx, job, outcome, shared_by, t_fit, epochs_estimate)
                    else:
                        if outcome.get("s_per_epoch") and outcome.get("speed_key"):
                            alone_speeds[outcome["speed_key"]] = outcome["s_per_epoch"]
                        if job.crowded and outcome["status"] in ("done", "deadline") and not confirmed:
                            confirmed = True  # it gave up sharing and then ran past its fit check alone
                            clog.write(SHARING_DID_NOT_FIT, device=ctx.device_label, speed=ctx.speed, stack=stack,
                                       jobs=jobs, name=job.name)
                    if crowded:
                        gave_up_sharing.append(job.name)
                    # once one job at a time runs, a speed measured while sharing prices nothing
                    _handle_outcome(ctx, clog, job, outcome, outcomes, speeds, attempts, max_retries, pending,
                                    separate, record_speed=shared_by == 1 or capacity != 1, crowded=crowded)
                if archive:
                    write_archive(ctx, archive)
            if gave_up_sharing and capacity is not None and capacity > 1:
                capacity = 1
                speeds.clear()  # measured while sharing: the speeds alone, where known, or none
                speeds.update(alone_speeds)
                clog.write(ONE_AT_A_TIME, device=ctx.device_label, speed=ctx.speed, stack=stack, jobs=jobs,
                           reason=f"{', '.join(gave_up_sharing)} did not fit while sharing the device")
    except BaseException:
        if in_flight and hasattr(pool, "cancel"):  # interrupted: the cluster's jobs would run on without us
            pool.cancel(list(in_flight))
        raise
    finally:
        pool.shutdown(wait=not in_flight, cancel_futures=True)
    skipped = [j.name for j in pending]
    if shared_ok and capacity is not None and capacity > 1:  # shared to the end, and runs finished sharing
        clog.write(SHARING_FITS, device=ctx.device_label, speed=ctx.speed, stack=stack, jobs=jobs)
    clog.write("campaign end", finished=sum(o["status"] == "done" for o in outcomes), not_started=len(skipped),
               time_left_s=_seconds_left(t_end))
    if archive:
        write_archive(ctx, archive)
    return {"size": ctx.size.name, "device": ctx.device_label, "already_done": len(done_before),
            "outcomes": outcomes, "not_started": skipped, "skipped_after_permanent_failure": skipped_failed,
            "still_running": [j.name for j in _flat(in_flight.values())], "results": str(ctx.results_dir),
            "archive": str(archive) if archive else None, "retries": sum(attempts.values())}


def _flat(values) -> list[PlannedJob]:
    """The jobs of in-flight entries (a job, or a stack's list of jobs)."""
    return [j for v in values for j in (v if isinstance(v, list) else [v])]


def _handle_outcome(ctx: Context, clog: CampaignLog, job: PlannedJob, outcome: dict, outcomes: list[dict],
                    speeds: dict[str, float], attempts: dict[str, int], max_retries: int, pending: list[PlannedJob],
                    separate: bool, record_speed: bool = True, crowded: bool = False) -> None:
    """Log one finished job, learn its speed, and queue a retry when it failed and may retry (or,
    when it gave up for sharing the device (``crowded``), to run alone on it, once; or, when its
    stack did not fit the time left or it failed in a stack (a NaN with the stack's draws, an error of
    the vmapped code), to run alone, outside a stack)."""
    if job.config_hash:
        outcome.setdefault("config_hash", job.config_hash)  # failures too: permanent ones are remembered by it
    if outcome.get("permanent"):  # ... for the settings they happened with
        outcome.setdefault("speed", ctx.speed)
        outcome.setdefault("stack", 1)
    outcomes.append(outcome)
    if separate and (_job_root(ctx, job) / "results" / ctx.size.name).is_dir():
        merge_results(_job_root(ctx, job) / "results" / ctx.size.name, ctx.results_dir)
    if record_speed and outcome.get("s_per_epoch") and outcome.get("speed_key"):  # also a first steady epoch that did not fit
        speeds[outcome["speed_key"]] = outcome["s_per_epoch"]
    clog.write(outcome["status"], **{k: v for k, v in outcome.items() if k != "status"})
    if crowded:
        job.crowded = True
        clog.write("retry alone on the device", name=job.name, config_hash=job.config_hash,
                   reason="it did not fit while sharing the device")
    elif outcome["status"] == "does not fit" and outcome.get("stack", 1) > 1 and not job.solo:
        job.solo = True
        clog.write("retry alone", name=job.name, config_hash=job.config_hash, reason="its stack did not fit")
    elif outcome["status"] == "failed" and outcome.get("stack", 1) > 1 and not job.solo:
        job.solo = True  # a NaN with the stack's draws, or an error of the stack's code path (vmap), need not repeat alone
        clog.write("retry alone", name=job.name, config_hash=job.config_hash,
                   reason=f"it failed in a stack ({outcome.get('reason', '')[:200]}): once more alone")
    elif outcome["status"] == "failed" and attempts.get(job.name, 0) < max_retries:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        clog.write("retry", name=job.name, config_hash=job.config_hash, attempt=attempts[job.name],
                   max_retries=max_retries, reason=outcome.get("reason"))
    else:
        if outcome["status"] == "failed" and job.priority[0] == 0:
            log.error("%s failed: %s", job.name, outcome.get("reason"))
        return
    pending.append(job)  # queued again, in priority order
    pending.sort(key=lambda j: j.priority)


def _job_root(ctx: Context, job: PlannedJob) -> Path:
    """A job's own output root with ``separate_outputs`` (the same for its retries and requeues,
    so they find its running checkpoint)."""
    return ctx.output_dir / "jobs" / ctx.size.name / job.config_hash


def _seconds_left(t_end: float) -> int | None:
    return None if math.isinf(t_end) else round(t_end - time.time())


def _wait_any(handles: list, poll_s: float, t_end: float = math.inf) -> list:
    """The finished ones among ``handles``, once there is one or the deadline ``t_end`` has
    passed (then possibly none): concurrent futures through ``concurrent.futures.wait``;
    submitit jobs (which are not futures) by asking each whether it is done every ``poll_s``
    seconds (submitit's debug jobs run when asked)."""
    if all(isinstance(h, cf.Future) for h in handles):
        timeout = None if math.isinf(t_end) else max(1.0, t_end - time.time())
        finished, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(finished)
    while True:
        finished = [h for h in handles if h.done()]
        if finished or time.time() >= t_end:
            return finished
        time.sleep(poll_s)


def _permanent_failures(ctx: Context, stack: int = 1, entries: list[dict] | None = None) -> set[str]:
    """Configuration hashes whose last attempt failed in a way that repeats (logged ``permanent``)
    under this context's speed settings. A failure alone counts for every campaign with those
    settings; one in a stack (its draws) only for a campaign that stacks (``stack`` > 1); one
    logged before settings were logged with it, for every campaign. A later attempt that did not
    fail (done, stopped by a deadline, gave up for time) clears it; a failure under other settings
    changes nothing. ``entries`` as for :func:`_known_speeds`."""
    failed: dict[str, bool] = {}
    for entry in _log_entries(ctx) if entries is None else entries:
        config_hash, event = entry.get("config_hash"), entry.get("event")
        if not config_hash:
            continue
        if event == "failed" and entry.get("permanent"):
            if "speed" in entry and (entry["speed"] != ctx.speed or ((entry.get("stack") or 1) > 1 and stack <= 1)):
                continue  # under other settings, or with a stack's draws while this campaign trains alone
            failed[config_hash] = True
        elif event in ("done", "deadline", "does not fit"):
            failed[config_hash] = False
    return {h for h, yes in failed.items() if yes}


def _measure_sampling_cost(ctx: Context, clog: CampaignLog, t_end: float) -> None:
    """Notebook 07's latency table, timed first while the device is otherwise idle (random
    weights: the cost does not depend on them), unless a store has it already."""
    from . import reports
    from .analyses import sampling_cost
    from .runs import cached_rows

    if "07_does_the_flow_matter" not in reports.DEFAULTS:  # a campaign over some notebooks only
        return
    params = reports.DEFAULTS["07_does_the_flow_matter"]
    entries = reports.cost_entries(params["steps"])
    for dataset in params["datasets"]:
        if not reports.available(ctx, dataset) or t_end - time.time() < MIN_LEFT_FOR_LATENCY_S:
            continue
        key = reports.sampling_cost_key(ctx, dataset, entries, reports.COST_USERS)  # this device's kind
        t0 = time.time()
        cached_rows([s.cache("sampling_cost") for s in ctx.stores], key,
                    lambda: sampling_cost(ctx, dataset, entries, users=reports.COST_USERS))
        clog.write("sampling cost", dataset=dataset, device=ctx.device_label, wall_s=round(time.time() - t0, 1))


def _estimate(ctx: Context, job: PlannedJob, speeds: dict[str, float], mode: str = "max",
              stack: int = 1) -> float | None:
    """Seconds a job needs: none to train when its run is recorded and its model is here (only
    sweeps are left), else measured seconds per epoch x the budgeted epochs it has not trained
    yet x validations; None while its kind's speed is unknown."""
    from .runs import find

    if not isinstance(job.spec, RunSpec):
        return None
    recorded = find(ctx, job.spec)
    if recorded is not None and (recorded.checkpoint() is not None or recorded.model == "pop"):
        return 0.0
    earlier, done = _resume_point(ctx, job, stack)  # with an interrupted stack: at the stack's speed
    s = speeds.get(speed_key(ctx, job.spec, len(earlier["members"]) if earlier else 1))
    if s is None:
        return None
    total, done = epochs_budget(ctx, job, mode, stack, done)
    return round(s * (total - done) * EVAL_OVERHEAD, 1)


def _next_startable(ctx: Context, pending: list[PlannedJob], running, speeds, t_end: float,
                    epochs_estimate: str = "max", stack: int = 1, t_fit: float | None = None) -> PlannedJob | None:
    """The first pending job (in priority order) that is resolvable, not a duplicate of a
    running one, not done meanwhile, and whose estimate fits the time left (until ``t_fit``,
    default the deadline ``t_end``; nothing starts once the deadline is near). A later-seed job
    that resolves to a run another pending job also needs is merged into that job."""
    if t_end - time.time() - SAFETY_S <= 0:
        return None
    left = (t_end if t_fit is None else t_fit) - time.time() - SAFETY_S
    running_hashes = {j.config_hash for j in running}
    for job in list(pending):
        if not _resolve_tuned(ctx, job):
            continue  # its tuning runs are not all recorded yet
        for other in [o for o in pending if o is not job and o.config_hash == job.config_hash]:
            _merge_into(job, other)
            pending.remove(other)
        if job.config_hash in running_hashes:
            continue
        if _is_done(ctx, job):
            pending.remove(job)
            continue
        estimate = _estimate(ctx, job, speeds, epochs_estimate, stack)
        if left <= 0 or (estimate is not None and estimate > left):
            continue
        return job
    return None


def _merge_into(job: PlannedJob, other: PlannedJob) -> None:
    """``job`` takes over ``other`` (the same run): its sweeps, notebooks and the higher priority."""
    known = {json.dumps(s.to_json(), sort_keys=True) for s in job.sweeps}
    job.sweeps += [s for s in other.sweeps if json.dumps(s.to_json(), sort_keys=True) not in known]
    job.notebooks = sorted(set(job.notebooks) | set(other.notebooks))
    job.priority = min(job.priority, other.priority)
    job.solo, job.crowded = job.solo or other.solo, job.crowded or other.crowded


def _resolve_tuned(ctx: Context, job: PlannedJob) -> bool:
    """Turn a later-seed job of the main table into a plain run once its tuning runs are all
    recorded; returns whether the job is a plain run now."""
    from .runs import spec_hash

    if isinstance(job.spec, RunSpec):
        return True
    resolved = job.spec.resolve(ctx)
    if resolved is None:
        return False
    job.spec, job.name, job.config_hash = resolved, resolved.name, spec_hash(ctx, resolved)
    return True


def write_archive(ctx: Context, path: str | Path) -> Path:
    """Pack ``results/<size>/`` (runs, per-user files, caches, tables, the log) into ``path``;
    each file is read under its lock, so no half-written append is packed."""
    from .results import locked

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for file in sorted(p for p in ctx.results_dir.rglob("*") if p.is_file()):
            if file.name.endswith((".lock", ".tmp")) or ".tmp." in file.name:
                continue
            arcname = f"results/{ctx.size.name}/{file.relative_to(ctx.results_dir)}"
            if Path(str(file) + ".lock").exists():
                with locked(file, shared=True):
                    tar.add(file, arcname=arcname)
            else:
                tar.add(file, arcname=arcname)
    tmp.replace(path)
    return path


def merge_archive(archive: str | Path, *, size: str = "paper", output_dir: str | Path | None = None) -> dict:
    """Merge an archive written by :func:`write_archive` (or a results folder) into the local
    ``results/<size>/``: new runs, per-user files, cache entries and log lines are appended;
    nothing is overwritten."""
    ctx = Context.create(size, "cpu", output_dir, progress=False)
    archive = Path(archive)
    if archive.is_dir():
        return merge_results(archive, ctx.results_dir)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out of the folder, devices
        source = Path(tmp) / "results" / size
        if not source.is_dir():
            raise FileNotFoundError(f"{archive} holds no results/{size}/ folder")
        return merge_results(source, ctx.results_dir)


def summarise_log(path: str | Path) -> list[dict]:
    """The finished jobs of a campaign log: name, seconds per epoch, epochs run, stop reason."""
    entries = CampaignLog(Path(path)).entries()
    return [e for e in entries if e["event"] in ("done", "deadline", "does not fit", "failed")]


__all__ = ["CampaignLog", "DoesNotFit", "PlannedJob", "execute_job", "merge_archive", "plan", "run_campaign",
           "summarise_log", "write_archive"]
