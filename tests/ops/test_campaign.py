"""The campaign: tiers and priority from the notebooks' declarations, end to end at smoke size on
CPU (by tier; a second invocation trains nothing; the notebooks then render from the results
alone), the deadline, estimates, resume, failures, speed settings, pricing, and merging an
archive."""
import json
import time

import pytest

from fmrec_lib.experiments import context as context_module
from fmrec_lib.experiments import notebooks, reports, tiers
from fmrec_lib.experiments.context import Context
from fmrec_lib.experiments.runs import RunSpec, TunedSpec, run, spec_hash
from fmrec_lib.experiments.store import read_results
from fmrec_lib.ops import campaign
from fmrec_lib.training import DeadlineReached, train
from synthetic import deadline_after_epoch

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
    monkeypatch.setattr(notebooks, "defaults", lambda name: SMALL[name])
    return tmp_path


def _ctx(roots, name="repo"):
    return Context.create("smoke", "cpu", roots / name, progress=False)


def test_tiers_and_priority_order(roots):
    ctx = _ctx(roots)
    jobs = campaign.plan(ctx)
    first = jobs[0]
    assert first.name == "ml-100k fmrec seed 1997" and first.tier == 1
    assert {"01_main_results", "02_trajectory", "04_sampler", "06_open_questions", "07_does_the_flow_matter",
            "05_sensitivity"} <= set(first.notebooks)  # alpha = 0.2 is the default run itself
    assert {"metrics", "trajectory", "noise_sensitivity", "lists"} <= {s.kind for s in first.sweeps}
    assert [j.priority for j in jobs] == sorted(j.priority for j in jobs)
    by_tier = {t: {j.name for j in jobs if j.tier == t} for t in (1, 2, 3, 4)}
    assert {"ml-100k pop seed 1997", "ml-100k pop seed 1998", "ml-100k sasrec seed 1997 (lr=0.001, profile=paper)",
            "ml-100k sasrec seed 1997 (lr=0.003, profile=paper)",
            "ml-100k fmrec seed 1997 (lr=0.003, profile=paper)"} <= by_tier[1]  # the main table
    assert {"ml-100k fmrec seed 1997 (alpha=0.0)", "ml-100k fmrec seed 1997 (path=cosine)",
            "ml-100k fmrec seed 1997 (prediction=velocity)", "ml-100k fmrec seed 1997 (fm_weight=0.0)",
            "ml-100k fmrec seed 1997 (flow_input=False, sampler={'steps': 1, 'method': 'euler', 'update': 'paper', "
            "'noise_scale': 0.0})"} <= by_tier[2]
    assert {"ml-100k fmrec seed 1998", "ml-100k fmrec seed 1997 (alpha=0.02)", "ml-100k fmrec seed 1997 (delta=0.5)",
            "ml-100k fmrec seed 1997 (profile=clean)"} <= by_tier[3]
    assert "ml-100k fmrec seed 1998 (delta=0.5)" in by_tier[4]
    tuned = [j for j in jobs if isinstance(j.spec, TunedSpec)]
    assert tuned and {j.tier for j in tuned if j.spec.model == "sasrec"} == {4}  # the strongest baseline is not known yet
    hashes = [j.config_hash for j in jobs if j.config_hash]
    assert len(hashes) == len(set(hashes))  # a run several notebooks need is planned once
    assert {j.tier for j in campaign.plan(ctx, max_tier=1)} == {1}
    assert tiers.tier(ctx, RunSpec("yelp", "fmrec", 1997), {}) == 3  # Yelp waits for tier 3


@pytest.mark.slow
def test_a_smoke_campaign_by_tier_end_to_end_then_the_notebooks_render_from_the_results_alone(roots, monkeypatch):
    out = roots / "repo"
    archive = roots / "session" / "results-smoke.tar.gz"
    first = campaign.run_campaign("smoke", "cpu", 900, tier=1, output_dir=out, archive=archive)
    assert {o["status"] for o in first["outcomes"]} == {"done"} and not first["not_started"], first
    ctx = _ctx(roots)
    assert all(j.tier > 1 for j in campaign.plan(ctx) if not campaign._is_done(ctx, j))
    # with the first seed's main table recorded, SASRec is the strongest baseline: its later seed is tier 3
    (later,) = [j for j in campaign.plan(ctx, max_tier=3) if j.spec.model == "sasrec" and j.spec.seed == 1998]
    assert later.tier == 3 and isinstance(later.spec, RunSpec)  # resolved when planned: the tuned lr is known
    summary = campaign.run_campaign("smoke", "cpu", 900, output_dir=out, archive=archive)
    assert {o["status"] for o in summary["outcomes"]} == {"done"} and not summary["not_started"], summary
    log = [json.loads(line) for line in (out / "results" / "smoke" / campaign.LOG_NAME).read_text().splitlines()]
    trained = [e for e in log if e["event"] == "done" and e.get("trained")]
    assert trained and all(e["s_per_epoch"] > 0 and e["epochs_run"] >= 1 for e in trained if e["model"] != "pop")
    n_runs = read_results(out / "results" / "smoke" / "runs.csv")["run_id"].nunique()
    assert n_runs == len({e["config_hash"] for e in trained})
    again = campaign.run_campaign("smoke", "cpu", 900, output_dir=out)
    assert again["outcomes"] == [] and again["already_done"] == len(campaign.plan(_ctx(roots)))

    # the notebooks render from the results alone: nothing may be trained or swept any more
    import fmrec_lib.experiments.analyses as analyses
    import fmrec_lib.experiments.runs as runs_module

    monkeypatch.setattr(runs_module, "fit", lambda *a, **k: pytest.fail("a notebook retrained a run"))
    monkeypatch.setattr(analyses, "SWEEPS", {k: (lambda *a, **kw: pytest.fail("a notebook recomputed a sweep"))
                                             for k in analyses.SWEEPS})
    monkeypatch.setattr(reports, "sampling_cost", lambda *a, **k: pytest.fail("the latency table was timed again"))
    ctx = _ctx(roots)
    p = SMALL
    reports.main_results(ctx, **p["01_main_results"])
    reports.trajectory_report(ctx, **p["02_trajectory"])
    reports.loss_ablation(ctx, **p["03_loss_ablation"])
    reports.sampler_report(ctx, **p["04_sampler"])
    reports.sensitivity(ctx, **p["05_sensitivity"])
    reports.diversity_report(ctx, **p["06_open_questions"])
    reports.profile_report(ctx, **p["06_open_questions"])
    res = reports.flow_matters(ctx, **p["07_does_the_flow_matter"])
    assert len(res.variants) and res.cost["ms_per_1000_users"].notna().all()

    # the session's archive merges into another checkout: appended once, never twice
    other = roots / "other"
    added = campaign.merge_archive(archive, size="smoke", output_dir=other)
    assert added["runs"] == n_runs and added["cache_entries"] > 0 and added["per_user"] == n_runs
    assert campaign.merge_archive(archive, size="smoke", output_dir=other) == {
        "runs": 0, "per_user": 0, "cache_entries": 0, "log_lines": 0}


def test_the_deadline_stops_the_campaign_cleanly(roots):
    summary = campaign.run_campaign("smoke", "cpu", campaign.SAFETY_S - 1, output_dir=roots / "repo")
    assert summary["outcomes"] == [] and summary["not_started"]
    assert '"campaign end"' in (roots / "repo" / "results" / "smoke" / campaign.LOG_NAME).read_text()
    with pytest.raises(ValueError, match="a local campaign needs a deadline"):
        campaign.run_campaign("smoke", "cpu", None, output_dir=roots / "repo")


def test_a_run_that_cannot_fit_is_not_started_or_gives_up_after_its_first_steady_epoch(roots):
    ctx = _ctx(roots)
    default = RunSpec("ml-100k", "fmrec", 1997)
    campaign.CampaignLog(ctx.results_dir / campaign.LOG_NAME).write(
        "done", dataset="ml-100k", model="fmrec", s_per_epoch=1000.0, speed_key=campaign.speed_key(ctx, default))
    summary = campaign.run_campaign("smoke", "cpu", 120, output_dir=roots / "repo", dry_run=True)
    fm = [p for p in summary["plan"] if p["name"] == "ml-100k fmrec seed 1997"]
    assert fm and fm[0]["estimate_s"] > 120 and fm[0]["speed_from"] == "this device's log"
    job = campaign.PlannedJob("probe", RunSpec("ml-100k", "fmrec", 1, {"epochs": 10_000, "eval_every": 5000}), [],
                              ["x"], (1,))
    outcome = campaign.execute_job(job.payload(ctx, deadline=time.time() + 30))
    assert outcome["status"] == "does not fit" and "s per epoch" in outcome["reason"] and outcome["s_per_epoch"] > 0
    assert read_results(ctx.store.runs).empty


def test_a_failure_that_repeats_is_skipped_under_its_settings_until_retried(roots, monkeypatch):
    ctx = _ctx(roots)
    first = campaign.plan(ctx)[0]
    clog = campaign.CampaignLog(ctx.results_dir / campaign.LOG_NAME)
    clog.write("failed", config_hash=first.config_hash, name=first.name, permanent=True, speed={},
               reason="NonFiniteLossError")
    entries = clog.entries()
    assert first.config_hash in campaign._permanent_failures(ctx, entries)
    ctx.speed = {"tf32": True}  # other settings: not known to fail
    assert first.config_hash not in campaign._permanent_failures(ctx, entries)
    ctx.speed = {}
    summary = campaign.run_campaign("smoke", "cpu", campaign.SAFETY_S + 5, output_dir=roots / "repo")
    assert first.name in summary["skipped_after_permanent_failure"]
    clog.write("deadline", config_hash=first.config_hash, name=first.name, speed={})  # a later attempt clears it
    assert first.config_hash not in campaign._permanent_failures(ctx, clog.entries())
    # a failure that may not repeat is retried (max_retries), a permanent one is not
    pending, attempts = [], {}
    for outcome in ({"status": "failed", "reason": "OSError: disk"}, {"status": "failed", "permanent": True}):
        campaign._handle_outcome(clog, first, {"name": first.name, **outcome}, [], {}, attempts, 1, pending, {})
    assert pending == [first] and attempts == {first.name: 1}


def test_speed_settings_apply_to_every_run_and_are_recorded_not_identifying(roots, monkeypatch):
    monkeypatch.setattr(notebooks, "defaults", lambda name: {**SMALL, "01_main_results": {
        **SMALL["01_main_results"], "models": ["pop"], "seeds": [1997]}}[name] if name == "01_main_results" else
        {**SMALL[name], **({"datasets": []} if name == "07_does_the_flow_matter" else {})})
    with pytest.raises(ValueError, match="not speed fields"):
        campaign.run_campaign("smoke", "cpu", 60, output_dir=roots / "repo", speed={"lr": 0.1})
    out = roots / "fast"
    summary = campaign.run_campaign("smoke", "cpu", 600, tier=1, output_dir=out, speed={"tf32": True})
    rows = read_results(out / "results" / "smoke" / "runs.csv")
    assert summary["outcomes"] and all(json.loads(r)["tf32"] for r in rows["runtime"])
    assert spec_hash(_ctx(roots, "plain"), RunSpec("ml-100k", "fmrec", 1997)) in set(rows["config_hash"])
    key = campaign.speed_key(ctx := _ctx(roots), RunSpec("ml-100k", "fmrec", 1997))
    ctx.speed = {"tf32": True}
    assert key != campaign.speed_key(ctx, RunSpec("ml-100k", "fmrec", 1997)) and "tf32=False" in key


def test_a_run_stopped_by_a_deadline_is_budgeted_for_the_rest_and_resumed(roots, monkeypatch):
    ctx = _ctx(roots)
    spec = RunSpec("ml-100k", "fmrec", 1997, {"epochs": 6, "eval_every": 2})
    job = campaign.PlannedJob(spec.name, spec, [], ["x"], (1,), spec_hash(ctx, spec))
    assert campaign.epochs_budget(ctx, job) == (6, 0)
    ctx.deadline, ctx.epoch_hook, _ = deadline_after_epoch(monkeypatch, train)
    with pytest.raises(DeadlineReached):
        run(ctx, spec)
    monkeypatch.setattr(train, "time", time)  # the real clock again
    assert campaign.epochs_budget(ctx, job) == (6, 4)
    assert campaign._estimate(ctx, job, {campaign.speed_key(ctx, spec): 10.0}, "max") == pytest.approx(
        10.0 * 2 * campaign.EVAL_OVERHEAD)
    trained = []
    monkeypatch.setattr(campaign, "_fit_check", lambda *a: lambda e, r: trained.append(e))
    outcome = campaign.execute_job(job.payload(ctx, time.time() + 600, 6))
    assert outcome["status"] == "done" and outcome["epochs_run"] == 6 and trained == [5, 6]
    assert campaign.epochs_budget(ctx, job) == (6, 0)  # recorded: the running checkpoint is gone
    assert read_results(ctx.store.runs)["config_hash"].eq(job.config_hash).any()


def test_fit_within_starts_runs_that_a_later_campaign_finishes_but_stops_at_the_deadline(roots):
    ctx = _ctx(roots)
    spec = RunSpec("ml-100k", "fmrec", 1997, {"epochs": 100})
    job = campaign.PlannedJob(spec.name, spec, [], ["x"], (1,), spec_hash(ctx, spec))
    speeds = {campaign.speed_key(ctx, spec): 1.0}  # 100 epochs x 1.15: 115 s
    now = time.time()
    assert campaign._startable(ctx, [job], [], speeds, now + 60, now + 60, "max") == []
    assert campaign._startable(ctx, [job], [], speeds, now + 60, now + 300, "max") == [job]
    assert campaign._startable(ctx, [job], [], speeds, now + campaign.SAFETY_S - 1, now + 300, "max") == []
    check = campaign._fit_check(ctx, spec, 100, now + 300)
    check(1, {"seconds": 1.0})
    check(2, {"seconds": 1.0})  # 98 x 1.15 s fits the later finish, though not this deadline: goes on
    check = campaign._fit_check(ctx, spec, 100, now + 60)
    check(1, {"seconds": 1.0})
    with pytest.raises(campaign.DoesNotFit, match="98 more epochs"):
        check(2, {"seconds": 1.0})
    with pytest.raises(ValueError, match="must not be shorter"):
        campaign.run_campaign("smoke", "cpu", 60, output_dir=roots / "repo", fit_within_s=30)


def test_a_dry_run_prices_each_tier_from_bench_lines(roots, tmp_path):
    lines = tmp_path / "bench.jsonl"
    flags = {"fused_adam": False, "amp_bf16": False, "compile": False, "compile_mode": "default", "tf32": False}
    common = {"device": "GPU X", "torch": "2.x", "train_samples_per_epoch": 100}
    lines.write_text("\n".join(json.dumps({**common, **row}) for row in [
        {"dataset": "ml-100k", "model": "fmrec", "flags": flags, "s_per_epoch": 2.0},
        {"dataset": "ml-100k", "model": "fmrec", "flags": {**flags, "tf32": True}, "s_per_epoch": 1.0},
        {"dataset": "ml-100k", "model": "sasrec", "flags": flags, "s_per_epoch": 0.5},
        {"dataset": "ml-100k", "model": "sasrec", "error": "RuntimeError: x"}]) + "\n")
    summary = campaign.run_campaign("smoke", "cpu", None, output_dir=roots / "repo", dry_run=True, bench=[str(lines)],
                                    speed={"tf32": True}, tier=1)
    rows = {r["name"]: r for r in summary["plan"]}
    default = rows["ml-100k fmrec seed 1997"]
    assert default["speed_from"] == "bench (GPU X)"  # the line with the campaign's settings
    assert default["estimate_s"] == pytest.approx(1.0 * 2 * campaign.EVAL_OVERHEAD)  # smoke: 2 epochs
    assert rows["ml-100k sasrec seed 1997 (lr=0.001, profile=paper)"]["speed_from"] == "bench, fp32 line (GPU X)"
    assert summary["tiers"][1]["device_minutes"] > 0 and set(summary["tiers"]) == {1}
