"""Pricing the suite's pending jobs with benchmark lines (fmrec_lib.planning, tools/windows_needed.py)."""
import json
import math

import pytest

from fmrec_lib import campaign, planning, reports
from fmrec_lib import context as context_module
from fmrec_lib.context import Context
from test_campaign import SMALL


@pytest.fixture
def ctx(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("FMREC_DATA_DIR", str(data_dir))
    monkeypatch.setattr(context_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(context_module, "LOCAL_ROOT", tmp_path / "repo" / "runs")
    monkeypatch.setattr(reports, "DEFAULTS", {**SMALL, "01_main_results": {**SMALL["01_main_results"],
                                                                           "datasets": ["ml-100k", "beauty"]}})
    return Context.create("smoke", "cpu", tmp_path / "repo", progress=False)


def _line(dataset, model, s, variant="", device="H100"):
    return json.dumps({"dataset": dataset, "model": model, "s_per_epoch": s, "variant": variant, "device": device})


def test_jobs_are_priced_measured_scaled_or_from_the_eager_line(ctx, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join([_line("ml-100k", "fmrec", 2.0), _line("ml-100k", "fmrec", 1.0, "fast"),
                                _line("ml-100k", "fmrec", 1.5, "fast"),  # the fastest line of a setting counts
                                _line("ml-100k", "sasrec", 3.0), _line("ml-100k", "fmrec", 0.1, "fast", "other GPU"),
                                json.dumps({"event": "not a bench line"})]) + "\n\n")
    rows = planning.read_bench([bench])
    assert len(rows) == 5
    jobs = planning.suite_estimate(ctx, rows, "fast", compile_s=0.0, device="H100")
    assert len(jobs) == len(campaign.plan(ctx))  # nothing recorded yet: every job is pending
    samples = {name: len(ctx.dataset(name).training_samples(50)[1]) for name in ("ml-100k", "beauty")}

    def one(dataset, model):
        return jobs[(jobs["dataset"] == dataset) & (jobs["model"] == model)].iloc[0]

    fm = one("ml-100k", "fmrec")
    assert fm["s_per_epoch"] == 1.0 and fm["speed_from"] == "measured"
    epochs = campaign.planned_epochs(ctx, campaign.plan(ctx)[0].spec, "expected")
    assert fm["epochs"] == epochs and fm["seconds"] == pytest.approx(1.0 * epochs * campaign.EVAL_OVERHEAD)
    beauty = one("beauty", "fmrec")
    assert beauty["speed_from"] == "scaled from ml-100k"
    assert beauty["s_per_epoch"] == pytest.approx(samples["beauty"] / samples["ml-100k"])
    sas = one("ml-100k", "sasrec")  # no line for the setting: its eager line
    assert sas["s_per_epoch"] == 3.0 and sas["speed_from"] == "measured, eager line"
    assert one("ml-100k", "pop")["seconds"] == 0.0
    summary = planning.windows_needed(jobs, window_s=600.0, throughput=2.0)
    assert summary["unpriced_jobs"] == 0 and summary["jobs"] == len(jobs)
    assert summary["windows"] == math.ceil(jobs["seconds"].sum() / 2.0 / 600.0)
    table = planning.summary_table(jobs)
    assert table["jobs"].sum() == len(jobs)
    per_nb = planning.by_notebook(jobs).set_index("notebook")
    plan = campaign.plan(ctx)
    main = per_nb.loc["01_main_results"]
    assert main["jobs"] == sum("01_main_results" in j.notebooks for j in plan)
    assert main["jobs only it needs"] == sum(j.notebooks == ["01_main_results"] for j in plan) < main["jobs"]
    first = jobs.iloc[0]  # the FMRec default: needed by several notebooks, so in none's "only it needs"
    assert "," in first["notebooks"] and per_nb["their minutes"].sum() < jobs["seconds"].sum() / 60
    assert planning.markdown(table).splitlines()[0].startswith("| dataset | model | epochs")
    # a compiled setting: each run priced with a compiled line pays one compilation, one on its eager line none
    bench.write_text("\n".join([_line("ml-100k", "fmrec", 1.0, "compile=true"), _line("ml-100k", "sasrec", 3.0)]))
    compiled = planning.suite_estimate(ctx, planning.read_bench([bench]), "compile=true", compile_s=30.0)
    fm, sas = (compiled[(compiled["dataset"] == "ml-100k") & (compiled["model"] == m)].iloc[0] for m in ("fmrec", "sasrec"))
    assert fm["seconds"] == pytest.approx(1.0 * epochs * campaign.EVAL_OVERHEAD + 30.0)
    assert sas["seconds"] == pytest.approx(3.0 * sas["epochs"] * campaign.EVAL_OVERHEAD)


def test_a_job_without_any_line_is_counted_not_priced_and_bad_lines_are_named(ctx, tmp_path):
    jobs = planning.suite_estimate(ctx, [], "")
    summary = planning.windows_needed(jobs, 600.0)
    assert summary["unpriced_jobs"] == int((jobs["speed_from"] == "none").sum()) > 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line("ml-100k", "fmrec", 1.0) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2"):
        planning.read_bench([bad])
    with pytest.raises(ValueError, match="must be > 0"):
        planning.windows_needed(jobs, 0.0)
    two = [json.loads(_line("ml-100k", "fmrec", 1.0)), json.loads(_line("ml-100k", "fmrec", 0.5, device="B"))]
    with pytest.raises(ValueError, match="several devices"):  # never the fastest line of whichever GPU
        planning.suite_estimate(ctx, two, "")
    stack = [{**json.loads(_line("ml-100k", "fmrec", 4.0, "stack=4")), "s_per_run_epoch": 1.0}]
    priced = planning.suite_estimate(ctx, stack, "stack=4")  # a stack's line: one run's share of its epoch
    assert priced[(priced["dataset"] == "ml-100k") & (priced["model"] == "fmrec")]["s_per_epoch"].iloc[0] == 1.0


def test_the_command_prints_the_table_and_one_json_line(ctx, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("windows_needed",
                                                  Path(__file__).resolve().parents[1] / "tools" / "windows_needed.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(_line("ml-100k", "fmrec", 1.0) + "\n")
    assert tool.main(["--size", "smoke", "--bench", str(bench), "--window-s", "100"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("| dataset |") and "| ml-100k | fmrec |" in "\n".join(out)
    summary = json.loads(out[-1])
    assert summary["window_s"] == 100 and summary["unpriced_jobs"] > 0 and summary["windows"] >= 1


def _bench_row(variant, s, stack=1, device="GPU A", model="fmrec", dataset="ml-100k"):
    return {"dataset": dataset, "model": model, "variant": variant, "device": device, "stack": stack,
            "s_per_epoch": s * stack, "s_per_run_epoch": s}


def test_the_fastest_runnable_setting_is_picked_per_run_and_per_device():
    rows = [_bench_row("", 3.0), _bench_row("tf32=true,fused_adam=true", 2.0),
            _bench_row("tf32=true,fused_adam=true,stack=4", 0.6, stack=4),  # 2.4 s per stack epoch, 0.6 per run
            _bench_row("tf32=true,amp_bf16=true", 0.1),  # bf16 autocast changes the run: never picked
            _bench_row("hidden=64", 0.1),  # a model field: not a speed setting
            _bench_row("tf32=true,stack=8", 0.05, stack=8, device="GPU B"),  # another kind of GPU
            _bench_row("", 0.01, model="sasrec")]
    best = planning.fastest_setting(rows, device="GPU A")
    assert best == {"speed": "tf32=true,fused_adam=true", "stack": 4, "s_per_run_epoch": 0.6,
                    "variant": "tf32=true,fused_adam=true,stack=4", "device": "GPU A"}
    default = planning.fastest_setting(rows)  # default device: that of the last line of the dataset and model
    assert default["device"] == "GPU B" and default["stack"] == 8 and default["speed"] == "tf32=true"
    assert planning.fastest_setting(rows, device="GPU C") is None
    assert planning.fastest_setting(rows[:1], device="GPU A")["speed"] == ""
    # a stack gives more runs per second, but each of its runs takes the whole stack's time
    assert planning.fastest_setting(rows, device="GPU A", fit_s=2.4 * 100 * campaign.EVAL_OVERHEAD,
                                    epochs=100)["stack"] == 4
    fits_one = planning.fastest_setting(rows, device="GPU A", fit_s=2.4 * 100 * campaign.EVAL_OVERHEAD - 1,
                                        epochs=100)
    assert fits_one["stack"] == 1 and fits_one["s_per_run_epoch"] == 2.0
    assert planning.fastest_setting(rows, device="GPU A", fit_s=1.0, epochs=100) is None
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        planning.parse_variant("tf32")


def test_pick_speed_prints_what_the_window_script_reads(tmp_path, capsys):
    from fmrec_lib import cli

    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps(r) for r in [_bench_row("", 3.0), _bench_row("tf32=true,stack=4", 0.5, 4)]))
    assert cli.main(["pick-speed", str(bench)]) == 0
    assert capsys.readouterr().out.split() == ["tf32=true", "4"]
    bench.write_text(json.dumps(_bench_row("", 3.0)))
    assert cli.main(["pick-speed", str(bench)]) == 0
    assert capsys.readouterr().out.split() == ["-", "1"]  # eager: no speed settings
    assert cli.main(["pick-speed", str(bench), "--model", "sasrec"]) != 0  # nothing to pick: an error, not a guess
    # a run must fit: at paper size it takes the authors' 260 ML-100k epochs, at smoke size the size's 2
    assert cli.main(["pick-speed", str(bench), "--fit-seconds", "60"]) != 0
    assert cli.main(["pick-speed", str(bench), "--fit-seconds", "60", "--size", "smoke"]) == 0
