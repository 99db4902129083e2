"""The campaign through submitit without a cluster: submitit's local executor (each job in a
subprocess) and its in-process debug executor run the same code path as SLURM: job arrays,
waiting by polling, a job that fails once and is retried, results in one ``results/<size>/``
with no row twice; and a preempted job that resumes from its checkpoint."""
import json
import logging
from pathlib import Path

import pytest

from fmrec_lib.experiments import notebooks, reports
from fmrec_lib.ops import campaign
from fmrec_lib.experiments.context import Context
from fmrec_lib.experiments.store import read_results
from fmrec_lib.experiments.runs import RunSpec

submitit = pytest.importorskip("submitit")
from fmrec_lib.ops import cluster  # noqa: E402  (needs submitit)

# The main table's smallest campaign: two tuning runs of seed 1997 (one array), then seed 1998
# at the selected lr (a later array, once both are recorded).
TINY = {"datasets": ["ml-100k"], "models": ["sasrec"], "seeds": [1997, 1998], "profile": "paper",
        "grid": {"lr": [1e-3, 3e-3]}}


@pytest.fixture
def roots(tmp_path, monkeypatch, data_dir):
    from fmrec_lib.experiments import context as context_module

    monkeypatch.setenv("FMREC_DATA_DIR", str(data_dir))
    monkeypatch.setattr(context_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(context_module, "LOCAL_ROOT", tmp_path / "repo" / "runs")
    monkeypatch.setattr(notebooks, "defaults", lambda name: TINY)
    monkeypatch.setattr(reports, "NEEDS", {"01_main_results": reports.NEEDS["01_main_results"]})
    return tmp_path


@pytest.mark.parametrize("executor", ["local-submitit", "debug"])
def test_campaign_through_submitit_retries_a_failed_job_and_records_each_run_once(roots, monkeypatch, executor):
    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    first_seed = [j.name for j in campaign.plan(ctx) if isinstance(j.spec, RunSpec)]
    assert len(first_seed) == 2
    flaky = first_seed[1] if executor == "debug" else None  # the debug executor runs jobs in this process
    execute, failed = campaign.execute_job, []

    def once(payload):
        if payload["name"] == flaky and not failed:
            failed.append(1)
            return {"name": flaky, "status": "failed", "reason": "OSError: injected"}
        return execute(payload)
    monkeypatch.setattr(campaign, "execute_job", once)
    summary = campaign.run_campaign("smoke", "cpu", None, output_dir=out, executor=executor,
                                    executor_options={"time_limit_min": 10, "max_retries": 1})
    statuses = [(o["name"], o["status"]) for o in summary["outcomes"]]
    assert sorted(s for _, s in statuses) == ["done"] * 3 + (["failed"] if flaky else []), statuses
    assert summary["retries"] == (1 if flaky else 0) and not summary["not_started"]

    log = [json.loads(line) for line in (out / "results" / "smoke" / campaign.LOG_NAME).read_text().splitlines()]
    arrays = [e["jobs"] for e in log if e["event"] == "array"]
    assert sorted(arrays[0]) == sorted(first_seed)  # every startable job in one array
    assert "seed 1998" in arrays[-1][0] and len(arrays) == (3 if flaky else 2)  # (the retry,) then the later seed
    if flaky:
        assert [(e["name"], e["attempt"]) for e in log if e["event"] == "retry"] == [(flaky, 1)]
    assert all(e["time_left_s"] is None for e in log if e["event"] == "start")  # no deadline

    rows = read_results(out / "results" / "smoke" / "runs.csv")
    per_run = rows.groupby("config_hash")["run_id"].nunique()
    assert len(per_run) == 3 and (per_run == 1).all()  # three runs, none recorded twice
    assert len(list((out / "results" / "smoke" / "per_user").glob("*.npy"))) == 3

    again = campaign.run_campaign("smoke", "cpu", None, output_dir=out, executor=executor)
    assert again["outcomes"] == [] and again["already_done"] == 3
    assert read_results(out / "results" / "smoke" / "runs.csv").equals(rows)


def test_a_preempted_job_resumes_from_its_running_checkpoint(roots, monkeypatch, caplog):
    """What submitit does on a timeout or a preemption: the job is stopped (``sys.exit`` in its
    signal handler), then the submission returned by ``checkpoint()`` runs in its place."""
    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    spec = RunSpec("ml-100k", "sasrec", 1997, {"epochs": 6, "eval_every": 1, "patience": 10})
    payload = campaign.PlannedJob(spec.name, spec, [], ["x"], (1,)).payload(ctx, None, device="cpu")
    job = cluster.CampaignJob(campaign.execute_job, payload)

    def preempt_at_4(*args):
        def hook(epoch, record):
            if epoch == 4:  # after epoch 4's checkpoint (validations follow epochs 2 to 6)
                raise SystemExit(-1)
        return hook

    with monkeypatch.context() as m:
        m.setattr(campaign, "_fit_check", preempt_at_4)
        with pytest.raises(SystemExit):
            job()
    assert list((out / "checkpoints" / "smoke").glob("sasrec-*[0-9a-f].pt"))  # the running checkpoint is kept
    requeued = job.checkpoint()
    assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function.payload == payload
    with caplog.at_level(logging.INFO, logger="fmrec_lib.training.train"):
        outcome = requeued.result()
    assert outcome["status"] == "done" and outcome["epochs_run"] == 6
    assert any("resumed" in r.getMessage() and "at epoch 4" in r.getMessage() for r in caplog.records)
    assert read_results(ctx.store.runs)["run_id"].nunique() == 1
    assert requeued.function().get("trained") is False  # a third attempt finds it recorded and adds nothing
    assert read_results(ctx.store.runs)["run_id"].nunique() == 1


def test_slurm_parameters_name_the_partition_the_array_limit_and_this_checkout():
    params = cluster.executor_parameters("slurm", partition="gpu", time_limit_min=90, array_parallelism=4)
    assert params["slurm_partition"] == "gpu" and params["slurm_array_parallelism"] == 4
    assert params["timeout_min"] == 90 and params["gpus_per_node"] == 1
    (setup,) = params["slurm_setup"]
    checkout = Path(cluster.__file__).resolve().parents[2]
    assert (checkout / "fmrec_lib").is_dir() and setup.startswith(f"export PYTHONPATH={checkout}$")
    assert "slurm_partition" not in cluster.executor_parameters("local-submitit")
    with pytest.raises(ValueError, match="a local campaign needs a deadline"):
        campaign.run_campaign("smoke", "cpu", None)
