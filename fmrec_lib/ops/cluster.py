"""The campaign on a cluster through submitit (``campaign --executor slurm``, docs/campaign.md).

Each campaign job (:func:`fmrec_lib.ops.campaign.execute_job`) is a submitit job on one GPU;
every job that can start goes into one SLURM job array. Jobs write to the campaign's output root,
on a disk every node shares (``record_run`` refuses, under a file lock, to record a run twice),
and import ``fmrec_lib`` from the checkout that submitted them. A timeout or a preemption
requeues a job (:class:`CampaignJob` is ``Checkpointable``), which then resumes from its running
checkpoint. ``debug`` (in this process) and ``local-submitit`` (subprocesses) run the same code
path without a cluster: that is how CI tests it. submitit is optional: ``pip install 'fmrec-lib[cluster]'``.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError as e:  # the GPU machines and a plain install do not have it
    raise ImportError("the cluster executors need submitit >= 1.5.4: pip install 'fmrec-lib[cluster]'") from e

from ..experiments.context import Context

# campaign --executor NAME -> submitit's cluster name
KINDS = {"slurm": "slurm", "debug": "debug", "local-submitit": "local"}
POLL_S = {"slurm": 30.0, "local": 0.5, "debug": 0.0}  # how often the campaign asks whether a job is done
TIME_LIMIT_MIN = 240


class CampaignJob(Checkpointable):
    """One campaign job as a submitit callable ``fn(payload)``; on a timeout or a preemption
    submitit requeues what :meth:`checkpoint` returns: the same job, which resumes from what the
    shared disk holds (its recorded run or running checkpoint, its cached sweeps)."""

    def __init__(self, fn: Callable[[dict], dict], payload: dict):
        self.fn, self.payload = fn, payload

    def __call__(self) -> dict:
        return self.fn(self.payload)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(CampaignJob(self.fn, self.payload))


class SubmititPool:
    """The campaign's executor over submitit: one job array per :meth:`submit_all`, handles
    with ``done()`` and ``result()`` (submitit's jobs)."""

    def __init__(self, executor, poll_s: float):
        self.executor, self.poll_s = executor, poll_s

    def submit_all(self, fn: Callable[[dict], dict], payloads: list[dict]) -> list:
        return self.executor.submit_array([CampaignJob(fn, p) for p in payloads])

    def wait_any(self, handles: list, t_end: float) -> list:
        """The finished handles once there is one, or at ``t_end`` (debug jobs run when asked)."""
        while True:
            finished = [h for h in handles if h.done()]
            if finished or time.time() >= t_end:
                return finished
            time.sleep(self.poll_s)

    def cancel(self, jobs: list) -> None:  # the campaign was interrupted
        for job in jobs:
            job.cancel(check=False)


def executor_parameters(kind: str, *, partition: str | None = None, gpus_per_job: int | None = None,
                        time_limit_min: int | None = None, array_parallelism: int | None = None,
                        cpus_per_job: int | None = None, mem_gb: float | None = None) -> dict:
    """submitit's parameters for a campaign's jobs (:meth:`submitit.AutoExecutor.update_parameters`)."""
    cluster = KINDS[kind]
    root = Path(__file__).resolve().parents[2]  # the checkout holding fmrec_lib/
    setup = [f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    params = {"name": "fmrec-campaign", "timeout_min": time_limit_min or TIME_LIMIT_MIN,
              "gpus_per_node": gpus_per_job if gpus_per_job is not None else (1 if cluster == "slurm" else 0),
              "cpus_per_task": cpus_per_job, "mem_gb": mem_gb}
    if cluster == "slurm":
        params.update(slurm_partition=partition, slurm_array_parallelism=array_parallelism, slurm_setup=setup)
    elif cluster == "local":
        params.update(local_setup=setup)
    return {k: v for k, v in params.items() if v is not None}


def submitit_executor(kind: str, ctx: Context, *, slurm_folder: str | Path | None = None, max_num_timeout: int = 3,
                      **params) -> SubmititPool:
    """A :class:`SubmititPool` for ``kind`` (``slurm``, ``debug`` or ``local-submitit``) with
    :func:`executor_parameters` ``params``; its logs and pickles go to ``slurm_folder`` (default
    ``<output root>/submitit/<size>``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cluster executor {kind!r}; known: {', '.join(KINDS)}")
    cluster = KINDS[kind]
    folder = Path(slurm_folder) if slurm_folder else ctx.output_dir / "submitit" / ctx.size.name
    requeues = {f"{cluster}_max_num_timeout": max_num_timeout} if cluster != "debug" else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **requeues)
    executor.update_parameters(**executor_parameters(kind, **params))
    return SubmititPool(executor, POLL_S[cluster])
