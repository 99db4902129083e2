"""The campaign runner: priority order, end to end at smoke size on CPU (a second invocation
trains nothing, the notebooks then render from the results alone), the deadline, estimates,
and merging a window's archive."""
import json

import pytest

from fmrec_lib import campaign, reports
from fmrec_lib import context as context_module
from fmrec_lib.context import Context
from fmrec_lib.results import read_results
from fmrec_lib.runs import RunSpec

SMALL = {
    "00_datasets": {"datasets": ["ml-100k"]},
    "01_main_results": {"datasets": ["ml-100k"], "models": ["pop", "sasrec", "fmrec"], "seeds": [1997, 1998],
                        "profile": "paper", "grid": {"lr": [1e-3, 3e-3]}},
    "02_trajectory": {"dataset": "ml-100k", "seed": 1997, "steps": [1, 5], "users": 8},
    "03_loss_ablation": {"dataset": "ml-100k", "seeds": [1997]},
    "04_sampler": {"dataset": "ml-100k", "seed": 1997, "noise_scales": [0.3], "eval_seeds": [0, 1], "steps": [1, 5]},
    "05_sensitivity": {"dataset": "ml-100k", "seed": 1997, "sweeps": {"alpha": [0.02, 0.2]}},
    "06_open_questions": {"dataset": "ml-100k", "seed": 1997, "noise_scales": [0.3]},
    "07_does_the_flow_matter": {"datasets": ["ml-100k"], "seeds": [1997, 1998], "deltas": [0.001, 0.5],
                                "steps": [1, 5]},
}


@pytest.fixture
def roots(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("FMREC_DATA_DIR", str(data_dir))
    monkeypatch.setattr(context_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(context_module, "LOCAL_ROOT", tmp_path / "repo" / "runs")
    return tmp_path


def test_priority_order(roots):
    ctx = Context.create("smoke", "cpu", roots / "repo", progress=False)
    jobs = campaign.plan(ctx)
    first = jobs[0]
    assert first.name == "ml-100k fmrec seed 1997" and first.priority[0] == 0
    assert {"02_trajectory", "04_sampler", "06_open_questions", "07_does_the_flow_matter"} <= set(first.notebooks)
    kinds = {s.kind for s in first.sweeps}
    assert {"metrics", "trajectory", "noise_sensitivity", "lists"} <= kinds  # every sweep that needs that model
    assert jobs[1].name == "beauty fmrec seed 1997"
    ranks = [j.priority[0] for j in jobs]
    assert ranks == sorted(ranks)  # every first seed before any later seed
    first_seed = [j for j in jobs if j.priority[0] == 0]
    groups = [j.priority[1] for j in first_seed]
    assert groups == sorted(groups) and first_seed[-1].dataset == "yelp"  # Yelp after ML-100k and Beauty
    main = [j.priority[2] for j in first_seed if j.priority[1] == 0]
    assert main == sorted(main)  # FMRec default, then the main table, then ablations and sensitivity
    assert any(j.model == "sasrec" and j.priority[2] == reports.TIER_MAIN for j in first_seed)
    later = [j for j in jobs if j.priority[0] > 0 and j.model == "sasrec"]
    assert later and all(isinstance(j.spec, reports.TunedSpec) for j in later)  # tuned on the first seed's runs
    hashes = [j.config_hash for j in jobs if j.config_hash]
    assert len(hashes) == len(set(hashes))  # a run several notebooks need is planned once


@pytest.mark.slow
def test_smoke_campaign_end_to_end_then_render_from_results_alone(roots, monkeypatch):
    monkeypatch.setattr(reports, "DEFAULTS", SMALL)
    out = roots / "repo"
    archive = roots / "window" / "results-smoke.tar.gz"
    summary = campaign.run_campaign("smoke", "cpu", 900, jobs=2, output_dir=out, archive=archive)
    statuses = {o["status"] for o in summary["outcomes"]}
    assert statuses == {"done"} and not summary["not_started"], summary
    log = [json.loads(line) for line in (out / "results" / "smoke" / "campaign.log.jsonl").read_text().splitlines()]
    trained = [e for e in log if e["event"] == "done" and e.get("trained")]
    assert trained and all(e["s_per_epoch"] > 0 and e["epochs_run"] >= 1 and e["stop_reason"] for e in trained
                           if e["model"] != "pop")
    n_runs = read_results(out / "results" / "smoke" / "runs.csv")["run_id"].nunique()
    assert n_runs == len({e["config_hash"] for e in trained})

    again = campaign.run_campaign("smoke", "cpu", 900, jobs=1, output_dir=out)
    assert again["outcomes"] == [] and again["already_done"] == len(campaign.plan(Context.create(
        "smoke", "cpu", out, progress=False)))  # a second invocation trains nothing

    # the notebooks render from the results alone: nothing may be trained or swept any more
    import fmrec_lib.analyses as analyses
    import fmrec_lib.runs as runs_module

    monkeypatch.setattr(runs_module, "fit", lambda *a, **k: pytest.fail("a notebook retrained a run"))
    monkeypatch.setattr(analyses, "SWEEPS", {k: (lambda *a, **kw: pytest.fail("a notebook recomputed a sweep"))
                                             for k in analyses.SWEEPS})
    monkeypatch.setattr(analyses, "sampling_cost", lambda *a, **k: [
        {"label": e[0], "model": e[1], "n_model_calls": 1, "ms_per_1000_users": 1.0, "users": 1, "device": "cpu"}
        for e in a[2]])
    ctx = Context.create("smoke", "cpu", out, progress=False)
    p = SMALL
    reports.main_results(ctx, **p["01_main_results"])
    reports.trajectory_report(ctx, **p["02_trajectory"])
    reports.loss_ablation(ctx, **p["03_loss_ablation"])
    reports.sampler_report(ctx, **p["04_sampler"])
    reports.sensitivity(ctx, **p["05_sensitivity"])
    reports.diversity_report(ctx, **p["06_open_questions"])
    reports.profile_report(ctx, "ml-100k", 1997)
    res = reports.flow_matters(ctx, **p["07_does_the_flow_matter"])
    assert len(res.variants) and "ms_per_1000_users" in res.cost

    # the window's archive merges into another checkout: appended once, never twice
    other = roots / "other"
    added = campaign.merge_archive(archive, size="smoke", output_dir=other)
    assert added["runs"] == n_runs and added["cache_entries"] > 0 and added["per_user"] == n_runs - 0
    assert campaign.merge_archive(archive, size="smoke", output_dir=other) == {
        "runs": 0, "per_user": 0, "cache_entries": 0, "log_lines": 0}


def test_the_deadline_stops_the_campaign_cleanly(roots, monkeypatch):
    monkeypatch.setattr(reports, "DEFAULTS", SMALL)
    summary = campaign.run_campaign("smoke", "cpu", campaign.SAFETY_S - 1, output_dir=roots / "repo")
    assert summary["outcomes"] == [] and summary["not_started"]
    log = (roots / "repo" / "results" / "smoke" / "campaign.log.jsonl").read_text()
    assert '"campaign end"' in log


def test_a_run_that_cannot_fit_is_not_started_or_gives_up_after_its_first_steady_epoch(roots, monkeypatch):
    monkeypatch.setattr(reports, "DEFAULTS", SMALL)
    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    # a measured speed that cannot fit: not started
    default = RunSpec("ml-100k", "fmrec", 1997)
    campaign.CampaignLog(ctx.results_dir / campaign.LOG_NAME).write(
        "done", dataset="ml-100k", model="fmrec", device=ctx.device_label, s_per_epoch=1000.0,
        speed_key=campaign.speed_key(ctx, default))
    summary = campaign.run_campaign("smoke", "cpu", 120, output_dir=out, dry_run=True)
    fm = [p for p in summary["plan"] if p["name"] == "ml-100k fmrec seed 1997"]
    assert fm and all(p["estimate_s"] > 120 for p in fm)
    # an unknown speed: the run measures its first epoch and gives up if it cannot finish
    payload = campaign.PlannedJob("probe", RunSpec("ml-100k", "fmrec", 1, {"epochs": 10_000, "eval_every": 5000}),
                                  [], (0,), ["x"]).payload(ctx, deadline=__import__("time").time() + 30)
    outcome = campaign.execute_job(payload)
    assert outcome["status"] == "does not fit" and "s per epoch" in outcome["reason"] and outcome["s_per_epoch"] > 0
    assert read_results(ctx.store.runs).empty


def test_a_failure_that_repeats_is_not_retried_and_speeds_are_keyed_by_settings(roots, monkeypatch):
    monkeypatch.setattr(reports, "DEFAULTS", SMALL)
    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    first = campaign.plan(ctx)[0]
    clog = campaign.CampaignLog(ctx.results_dir / campaign.LOG_NAME)
    clog.write("failed", config_hash=first.config_hash, name=first.name, permanent=True, reason="NonFiniteLossError")
    summary = campaign.run_campaign("smoke", "cpu", campaign.SAFETY_S + 5, output_dir=out)
    assert first.name in summary["skipped_after_permanent_failure"]
    # a failure is permanent for the settings it happened with: a NaN of a compiled stack (its own
    # draws) does not keep the run from training alone, eager, or the other way round
    other = next(j for j in campaign.plan(ctx) if j.model == "fmrec" and j.name != first.name and j.config_hash)
    ctx.speed = {"compile": True}
    campaign._handle_outcome(ctx, clog, other, {"name": other.name, "status": "failed", "permanent": True, "stack": 2,
                                                "reason": "NonFiniteLossError"}, [], {}, {}, 0, [], False)
    logged = [e for e in clog.entries() if e["event"] == "failed"][-1]
    assert (logged["speed"], logged["stack"], logged["config_hash"]) == ({"compile": True}, 2, other.config_hash)
    assert other.config_hash in campaign._permanent_failures(ctx, stack=2)
    assert other.config_hash not in campaign._permanent_failures(ctx)  # alone: other draws
    ctx.speed = {}
    assert other.config_hash not in campaign._permanent_failures(ctx, stack=2)  # eager: other settings
    assert first.config_hash in campaign._permanent_failures(ctx, stack=2)  # logged without settings: for all
    # a failure alone counts for a stacking campaign too; a later attempt that did not fail clears it
    clog.write("failed", config_hash=other.config_hash, name=other.name, permanent=True, speed={}, stack=1)
    assert other.config_hash in campaign._permanent_failures(ctx, stack=2)
    clog.write("deadline", config_hash=other.config_hash, name=other.name)
    assert other.config_hash not in campaign._permanent_failures(ctx, stack=2)
    # and in the campaign that saw it, a NaN in a stack is tried once more alone, a NaN alone is not
    pending, other.solo = [], False
    for _ in range(2):
        campaign._handle_outcome(ctx, clog, other, {"name": other.name, "status": "failed", "permanent": True,
                                                    "stack": 2, "reason": "NonFiniteLossError"},
                                 [], {}, {}, 0, pending, False)
    assert pending == [other] and other.solo
    assert [e["event"] for e in clog.entries()].count("retry alone") == 2  # this one and the one above
    # so is a stack whose code failed (say vmap under CUDA graphs): its runs once more alone
    pending, other.solo = [], False
    campaign._handle_outcome(ctx, clog, other, {"name": other.name, "status": "failed", "stack": 4,
                                                "reason": "RuntimeError: vmap (test)"}, [], {}, {}, 0, pending, False)
    assert pending == [other] and other.solo
    key = campaign.speed_key(ctx, first.spec)
    fast = campaign.speed_key(ctx, RunSpec(first.spec.dataset, "fmrec", 1997, {"tf32": True, "compile": True}))
    assert key != fast and "tf32=False" in key and "tf32=True" in fast  # a speed says which settings it is for


def test_speed_settings_apply_to_every_run_and_are_recorded_not_identifying(roots, monkeypatch):
    monkeypatch.setattr(reports, "DEFAULTS", {**SMALL, "01_main_results": {**SMALL["01_main_results"],
                                                                           "models": ["fmrec"], "seeds": [1997]}})
    with pytest.raises(ValueError, match="not speed fields"):
        campaign.run_campaign("smoke", "cpu", 60, output_dir=roots / "repo", speed={"lr": 0.1})
    out = roots / "fast"
    summary = campaign.run_campaign("smoke", "cpu", 600, output_dir=out, speed={"tf32": True}, dry_run=False)
    rows = read_results(out / "results" / "smoke" / "runs.csv")
    assert summary["outcomes"] and all(json.loads(r)["tf32"] for r in rows["runtime"])
    plain = Context.create("smoke", "cpu", roots / "plain", progress=False)
    from fmrec_lib.runs import spec_hash

    assert spec_hash(plain, RunSpec("ml-100k", "fmrec", 1997)) in set(rows["config_hash"])  # the same runs


@pytest.mark.slow
def test_a_stacked_campaign_trains_compatible_runs_together_and_records_each(roots, monkeypatch):
    """--stack K: runs of one dataset that differ in seed or loss weights train as one stack; each
    is recorded once with its stack in its runtime, its sweeps run, and a second invocation trains nothing."""
    small = {"05_sensitivity": {"dataset": "ml-100k", "seed": 1997, "sweeps": {"alpha": [0.02, 0.2, 1.0]}},
             "04_sampler": {"dataset": "ml-100k", "seed": 1997, "noise_scales": [0.3], "eval_seeds": [0],
                            "steps": [1]}}
    monkeypatch.setattr(reports, "DEFAULTS", small)
    out = roots / "repo"
    dry = campaign.run_campaign("smoke", "cpu", 900, output_dir=out, stack=4, dry_run=True)
    leaders = {row["name"]: row["stack_leader"] for row in dry["plan"]}
    fmrec = [name for name in leaders if " fmrec " in name]
    assert len(fmrec) == 3 and len({leaders[name] for name in fmrec}) == 1  # the dry run shows the stack
    summary = campaign.run_campaign("smoke", "cpu", 900, jobs=1, output_dir=out, stack=4)
    assert {o["status"] for o in summary["outcomes"]} == {"done"} and not summary["not_started"], summary
    log = [json.loads(line) for line in (out / "results" / "smoke" / "campaign.log.jsonl").read_text().splitlines()]
    stacks = [e for e in log if e["event"] == "start stack"]
    assert len(stacks) == 1 and len(stacks[0]["names"]) == 3  # alpha 0.02, 0.2 (the default) and 1.0
    rows = read_results(out / "results" / "smoke" / "runs.csv")
    fmrec = rows[rows["model"] == "fmrec"].drop_duplicates("run_id")
    assert len(fmrec) == 3
    assert all(json.loads(r)["stacked"] == 3 for r in fmrec["runtime"])
    assert {json.loads(c)["model_config"]["alpha"] for c in fmrec["config"]} == {0.02, 0.2, 1.0}
    done = [e for e in log if e["event"] == "done" and e["model"] == "fmrec"]
    assert all(e["speed_key"].endswith("|stack=3") and e["s_per_epoch"] > 0 for e in done)
    again = campaign.run_campaign("smoke", "cpu", 900, jobs=1, output_dir=out, stack=4)
    assert again["outcomes"] == []  # recorded, sweeps cached: nothing trains again


def test_stacks_are_refused_on_a_cluster_executor(roots):
    with pytest.raises(ValueError, match="stack"):
        campaign.run_campaign("smoke", "cpu", None, executor="debug", output_dir=roots / "repo", stack=2)


@pytest.mark.slow
def test_the_runs_of_a_stack_that_does_not_fit_run_alone(roots, monkeypatch):
    """A stack whose first steady epoch says it cannot finish gives way: its runs are queued again
    to run alone in the same campaign (not dropped for the window)."""
    small = {"05_sensitivity": {"dataset": "ml-100k", "seed": 1997, "sweeps": {"alpha": [0.02, 0.2]}}}
    monkeypatch.setattr(reports, "DEFAULTS", small)

    def stacks_do_not_fit(ctx, spec, epochs_budget=None):
        def check(epoch, record):
            if "running" in record:  # the stack's epoch record (a single run's has its losses)
                raise campaign.DoesNotFit("a stack does not fit (test)", 99.0)
        return check
    monkeypatch.setattr(campaign, "_fit_check", stacks_do_not_fit)
    out = roots / "repo"
    summary = campaign.run_campaign("smoke", "cpu", 900, jobs=1, output_dir=out, stack=4)
    statuses = [(o["name"], o["status"]) for o in summary["outcomes"] if " fmrec " in o["name"]]
    assert [s for _, s in statuses].count("does not fit") == 2 and [s for _, s in statuses].count("done") == 2
    log = [json.loads(line) for line in (out / "results" / "smoke" / "campaign.log.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "retry alone" for e in log) == 2
    rows = read_results(out / "results" / "smoke" / "runs.csv")
    fmrec = rows[rows["model"] == "fmrec"].drop_duplicates("run_id")
    assert len(fmrec) == 2 and not any("stacked" in json.loads(r) for r in fmrec["runtime"])


class _SharedDevice:
    """A fake ``execute_job`` (run in threads). A job that overlapped another gives up as a run too
    slow to fit would, at 600 s per epoch: a speed that would price every later job out of a 900 s
    campaign if it were believed, though half of it (alone) fits. A job with the device to itself
    is done. ``never_fits``: these jobs give up at a speed that fits nowhere; ``fits_shared``: no
    job gives up."""

    def __init__(self, never_fits=(), fits_shared=False, alone_status="done"):
        import threading

        self.lock, self.active, self.shared, self.most, self.alone_done = threading.Lock(), set(), set(), 0, []
        self.never_fits, self.fits_shared, self.calls, self.alone_status = set(never_fits), fits_shared, [], alone_status

    def __call__(self, payload):
        import time

        from fmrec_lib.runs import RunSpec

        name = payload["name"]
        with self.lock:
            self.calls.append(name)
            self.active.add(name)
            self.most = max(self.most, len(self.active))
            if len(self.active) > 1:
                self.shared |= self.active
        time.sleep(0.3 + 0.2 * (len(self.calls) % 2))  # jobs that start together end apart
        with self.lock:
            self.active.discard(name)
            shared = name in self.shared
            self.shared.discard(name)
        ctx = campaign._job_context(payload)
        out = {"name": name, "dataset": "ml-100k", "model": "fmrec", "device": ctx.device_label,
               "speed_key": campaign.speed_key(ctx, RunSpec.from_json(payload["spec"]))}
        if name in self.never_fits:
            return {**out, "status": "does not fit", "reason": "too long (test)", "s_per_epoch": 1e5}
        if shared and not self.fits_shared:
            return {**out, "status": "does not fit", "reason": "slow while shared (test)", "s_per_epoch": 600.0}
        if not shared:
            self.alone_done.append(name)
            if self.alone_status == "deadline":  # ran past its fit check alone, stopped by the deadline
                return {**out, "status": "deadline", "reason": "the deadline is near (test)"}
        return {**out, "status": "done", "s_per_epoch": 0.5}


def _sharing_roots(roots, monkeypatch):
    import concurrent.futures as cf

    monkeypatch.setattr(reports, "DEFAULTS", {"05_sensitivity": SMALL["05_sensitivity"]})
    monkeypatch.setattr(campaign, "make_executor", lambda kind, jobs, options, ctx: cf.ThreadPoolExecutor(jobs))
    out = roots / "repo"
    names = sorted(j.name for j in campaign.plan(Context.create("smoke", "cpu", out, progress=False)))
    assert len(names) == 2

    def events():
        path = out / "results" / "smoke" / "campaign.log.jsonl"
        return [json.loads(line)["event"] for line in path.read_text().splitlines()]

    def run(worker, **kw):
        monkeypatch.setattr(campaign, "execute_job", worker)
        return campaign.run_campaign("smoke", "cpu", 900, jobs=2, output_dir=out, **kw)
    return names, events, run


def test_runs_that_do_not_fit_while_sharing_the_device_run_alone_and_the_campaign_stops_sharing(roots, monkeypatch):
    """Jobs sharing a device can each be too slow to fit where one alone fits (several CUDA-graphed
    runs on one GPU): the campaign must not lose the window to that. Each job that gives up while
    sharing, and could fit alone, is queued again, once, to run alone; from then on one job runs at
    a time and the speeds measured while sharing price nothing. Once such a job has fitted alone,
    a later campaign with the same device and settings starts one at a time, unless told to share
    again; a campaign that shares to its end without a job giving up lifts that."""
    names, events, run = _sharing_roots(roots, monkeypatch)
    first = _SharedDevice()
    summary = run(first)
    gave_up = [o for o in summary["outcomes"] if o["status"] == "does not fit"]
    assert sorted(o["name"] for o in gave_up) == names and all(o["shared_device"] == 2 for o in gave_up)
    # both ran again, alone, although the speed they reported while sharing prices them out of 900 s
    assert sorted(first.alone_done) == names and not summary["not_started"]
    assert events().count("retry alone on the device") == 2 and events().count(campaign.ONE_AT_A_TIME) == 1
    assert events().count(campaign.SHARING_DID_NOT_FIT) == 1

    # the fake records no run, so everything is pending again for a later campaign
    later = _SharedDevice()
    second = run(later)
    assert later.most == 1 and [o["status"] for o in second["outcomes"]] == ["done", "done"]
    assert events().count(campaign.ONE_AT_A_TIME) == 2

    assert run(again := _SharedDevice(), share_again=True) and again.most == 2  # told to: shares, gives up again
    assert run(other := _SharedDevice(), speed={"tf32": True}) and other.most == 2  # other settings: never crowded
    assert run(fine := _SharedDevice(fits_shared=True), share_again=True) and fine.most == 2
    assert events()[-2] == campaign.SHARING_FITS  # sharing worked this time: the next campaign shares
    assert run(next_one := _SharedDevice(fits_shared=True)) and next_one.most == 2


def test_a_job_that_gave_up_sharing_and_then_ran_alone_until_the_deadline_settles_it(roots, monkeypatch):
    """The usual case in a window: the job queued to run alone is stopped by the deadline (no
    speed in its outcome); it passed its fit check alone, so later campaigns start one at a time."""
    names, events, run = _sharing_roots(roots, monkeypatch)
    run(_SharedDevice(alone_status="deadline"))
    assert events().count(campaign.SHARING_DID_NOT_FIT) == 1
    assert run(later := _SharedDevice()) and later.most == 1


def test_a_run_too_long_for_the_time_left_does_not_stop_the_sharing(roots, monkeypatch):
    """A job that gives up while sharing but would not fit alone either is an ordinary "does not
    fit": not queued again, and the campaign goes on sharing the device."""
    names, events, run = _sharing_roots(roots, monkeypatch)
    worker = _SharedDevice(never_fits=names[:1], fits_shared=True)
    summary = run(worker)
    assert worker.calls.count(names[0]) == 1 and worker.most == 2
    assert [o["status"] for o in summary["outcomes"] if o["name"] == names[0]] == ["does not fit"]
    assert campaign.ONE_AT_A_TIME not in events() and campaign.SHARING_DID_NOT_FIT not in events()


def _interrupt_after_epoch_4(ctx, monkeypatch, module):
    """Make the next training in ``ctx`` stop at a deadline after epoch 4 (a fake clock in ``module``)."""
    from synthetic import deadline_after_epoch

    ctx.deadline, ctx.epoch_hook, _ = deadline_after_epoch(monkeypatch, module)


def test_a_run_stopped_by_a_deadline_is_budgeted_for_the_rest_and_resumed(roots, monkeypatch):
    """The second call of a window: a run that a deadline stopped after epoch 4 of 6 is estimated for its
    2 remaining epochs (not 6), logged as resumed, and finished from its checkpoint."""
    import time

    from fmrec_lib import train
    from fmrec_lib.runs import run, spec_hash
    from fmrec_lib.train import DeadlineReached

    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    spec = RunSpec("ml-100k", "fmrec", 1997, {"epochs": 6, "eval_every": 2})
    job = campaign.PlannedJob(spec.name, spec, [], (0,), ["x"], spec_hash(ctx, spec))
    assert campaign.epochs_done(ctx, job) == 0 and campaign.epochs_budget(ctx, job) == (6, 0)
    _interrupt_after_epoch_4(ctx, monkeypatch, train)
    with pytest.raises(DeadlineReached):
        run(ctx, spec)
    monkeypatch.setattr(train, "time", time)  # the real clock again
    assert campaign.epochs_done(ctx, job) == 4 and campaign.epochs_budget(ctx, job) == (6, 4)
    assert campaign.epochs_done(ctx, job, stack=4) == 4  # no interrupted stack holds it: its own checkpoint
    speeds = {campaign.speed_key(ctx, spec): 10.0}
    assert campaign._estimate(ctx, job, speeds) == pytest.approx(10.0 * 2 * campaign.EVAL_OVERHEAD)
    # with --stack it is neither put into a new stack nor taken as another job's partner: it resumes alone
    other_spec = RunSpec("ml-100k", "fmrec", 1998, {"epochs": 6, "eval_every": 2})
    other = campaign.PlannedJob(other_spec.name, other_spec, [], (0,), ["x"], spec_hash(ctx, other_spec))
    assert campaign._stack_partners(ctx, job, [other], [], 4) == []
    assert campaign._stack_partners(ctx, other, [job], [], 4) == []
    # the first steady epoch of this call is the resumed run's second (epoch 6 of 6: nothing left to check)
    check = campaign._fit_check(ctx, spec, 300)
    ctx.deadline = time.time() + 10
    check(201, {"seconds": 1.0})
    with pytest.raises(campaign.DoesNotFit, match="98 more epochs"):
        check(202, {"seconds": 1.0})
    trained = []
    monkeypatch.setattr(campaign, "_fit_check", lambda ctx, spec, budget=None: lambda e, r: trained.append(e))
    outcome = campaign.execute_job(job.payload(ctx, time.time() + 600, 6))
    assert outcome["status"] == "done" and outcome["epochs_run"] == 6 and trained == [5, 6]
    assert campaign.epochs_done(ctx, job) == 0  # recorded: the running checkpoint is gone
    rows = read_results(ctx.store.runs)
    assert rows["config_hash"].eq(job.config_hash).any()


def test_an_interrupted_stack_is_resumed_with_its_own_members(roots, monkeypatch):
    """With --stack, a job whose run sits in an interrupted stack takes that stack's other unfinished runs
    as partners (not whatever the priority order would pick), and is budgeted from the stack's epoch."""
    from fmrec_lib import stacked
    from fmrec_lib.runs import run_stacked, spec_hash
    from fmrec_lib.train import DeadlineReached

    out = roots / "repo"
    ctx = Context.create("smoke", "cpu", out, progress=False)
    specs = [RunSpec("ml-100k", "fmrec", seed, {"epochs": 6, "eval_every": 2}) for seed in (1997, 1998, 1999)]
    jobs = [campaign.PlannedJob(s.name, s, [], (0,), ["x"], spec_hash(ctx, s)) for s in specs]
    _interrupt_after_epoch_4(ctx, monkeypatch, stacked)
    with pytest.raises(DeadlineReached):
        run_stacked(ctx, [specs[0], specs[2]])
    earlier = campaign._interrupted_stack_of(ctx, jobs[0], 4)
    assert earlier is not None and campaign._interrupted_stack_of(ctx, jobs[1], 4) is None
    assert campaign._interrupted_stack_of(ctx, jobs[0], 1) is None  # not stacking: not resumed as a stack
    # the priority order would pair 1997 with 1998; the interrupted stack pairs it with 1999
    assert campaign._stack_partners(ctx, jobs[0], jobs[1:], [], 4) == [jobs[1], jobs[2]]
    assert campaign._stack_partners(ctx, jobs[0], jobs[1:], [], 4, earlier) == [jobs[2]]
    assert campaign.epochs_done(ctx, jobs[0], 4) == 4 and campaign.epochs_done(ctx, jobs[0], 1) == 0
    assert campaign.epochs_budget(ctx, jobs[2], "max", 4) == (6, 4)
    # priced at the stack's own speed (it trains both its runs), unknown until a stack of 2 was measured
    assert campaign._estimate(ctx, jobs[0], {campaign.speed_key(ctx, specs[0]): 1.0}, "max", 4) is None
    stack_speed = {campaign.speed_key(ctx, specs[0], 2): 5.0}
    assert campaign._estimate(ctx, jobs[0], stack_speed, "max", 4) == pytest.approx(5.0 * 2 * campaign.EVAL_OVERHEAD)
    jobs[0].solo = True  # sent to run alone: it starts afresh, and is priced so
    assert campaign.epochs_done(ctx, jobs[0], 4) == 0 and campaign._interrupted_stack_of(ctx, jobs[0], 4) is None
    jobs[0].solo = False
    monkeypatch.setattr(stacked, "time", __import__("time"))
    import time

    trained = []
    monkeypatch.setattr(campaign, "_fit_check", lambda ctx, spec, budget=None: lambda e, r: trained.append(e))
    outcomes = campaign.execute_stack([j.payload(ctx, time.time() + 600, 6) for j in (jobs[0], jobs[2])])
    assert [o["status"] for o in outcomes] == ["done", "done"] and all(o["epochs_run"] == 6 for o in outcomes)
    assert trained == [5, 6]  # resumed, not started again
    assert not list(ctx.store.checkpoints.glob("fmrec-stack-*"))  # the stack is over


def test_fit_within_starts_runs_that_finish_in_a_later_call_but_stops_at_the_deadline(roots, monkeypatch):
    """A window's first call: a run that cannot finish by this call's deadline but can within the window
    (--fit-within) is started and not given up; nothing starts once the deadline is near."""
    import time

    from fmrec_lib.runs import spec_hash

    monkeypatch.setattr(reports, "DEFAULTS", SMALL)
    ctx = Context.create("smoke", "cpu", roots / "repo", progress=False)
    spec = RunSpec("ml-100k", "fmrec", 1997, {"epochs": 100})
    job = campaign.PlannedJob(spec.name, spec, [], (0,), ["x"], spec_hash(ctx, spec))
    speeds = {campaign.speed_key(ctx, spec): 1.0}  # 100 epochs x 1.15: 115 s
    now = time.time()
    pick = campaign._next_startable
    assert pick(ctx, [job], [], speeds, now + 60) is None  # must finish by the deadline: does not fit
    assert pick(ctx, [job], [], speeds, now + 60, t_fit=now + 300) is job  # may finish in the next call
    assert pick(ctx, [job], [], speeds, now + campaign.SAFETY_S - 1, t_fit=now + 300) is None  # deadline near
    payload = job.payload(ctx, now + 60, 100, fit_by=now + 300)
    worker = campaign._job_context(payload)
    assert worker.deadline < now + 60 < worker.fit_by < now + 300
    check = campaign._fit_check(worker, spec, 100)
    check(1, {"seconds": 1.0})
    check(2, {"seconds": 1.0})  # 98 x 1.15 s fits the window, though not this call: goes on
    worker.fit_by = None  # without it, the deadline decides
    check = campaign._fit_check(worker, spec, 100)
    check(1, {"seconds": 1.0})
    with pytest.raises(campaign.DoesNotFit):
        check(2, {"seconds": 1.0})
    with pytest.raises(ValueError, match="must not be shorter"):
        campaign.run_campaign("smoke", "cpu", 60, output_dir=roots / "repo", fit_within_s=30)
