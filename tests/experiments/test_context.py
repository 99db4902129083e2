"""One context for the command line, the notebooks and the campaign: shared runs, outputs
that never touch the committed files unless asked, a checkout that stays clean."""
import json
import os
import subprocess

import pandas as pd
import pytest

import fmrec_lib
from fmrec_lib import cli
from fmrec_lib.experiments import context as context_module
from fmrec_lib.experiments import notebooks, reports
from fmrec_lib.experiments.context import Context
from fmrec_lib.experiments.store import read_results
from fmrec_lib.utils import REPO_ROOT
from synthetic import cyclic_dataset, write_sequences


@pytest.fixture
def roots(tmp_path, monkeypatch):
    repo, local = tmp_path / "repo", tmp_path / "repo" / "runs"
    monkeypatch.setattr(context_module, "REPO_ROOT", repo)
    monkeypatch.setattr(context_module, "LOCAL_ROOT", local)
    return repo, local


def test_a_cli_run_is_reused_by_the_notebook_and_vice_versa(roots, tmp_path, capsys):
    repo, local = roots
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(60), data)
    assert cli.main(["train", "--dataset", str(data), "--size", "smoke", "--device", "cpu", "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not trained["reused"] and (local / "results" / "smoke" / "runs.csv").exists()  # the CLI's default: runs/
    assert trained["dataset"] == "seqs"  # a file dataset is named after its file, never by an absolute path
    # the notebook's function at its committed configuration writes to the repository and reuses the CLI's run
    ctx = fmrec_lib.setup("04_sampler", "smoke", "cpu", dataset=str(data), seed=1997, noise_scales=[0.1, 0.3, 1.0],
                          eval_seeds=[0, 1, 2], steps=[1, 2, 5, 10, 30])
    assert ctx.output_dir == local  # a dataset other than the committed one: outputs go to runs/
    ctx = Context.create("smoke", "cpu", None, progress=False)
    assert ctx.output_dir == repo
    r = ctx.run(str(data), "fmrec", 1997)
    assert r.reused and r.config_hash == trained["config_hash"]
    # nothing retrained: the CLI's run is copied into the repository's store (same run id), so the
    # committed results never rest on rows kept only in the git-ignored runs/
    local_rows = read_results(local / "results" / "smoke" / "runs.csv")
    repo_rows = read_results(repo / "results" / "smoke" / "runs.csv")
    assert list(repo_rows["run_id"].unique()) == list(local_rows["run_id"].unique())
    assert (repo / "results" / "smoke" / "per_user" / f"{r.config_hash}.npy").exists()
    # and vice versa: a run made through the notebook layer is found by the command line
    other = ctx.run(str(data), "fmrec", 1997, alpha=0.5)
    assert cli.main(["train", "--dataset", str(data), "--size", "smoke", "--device", "cpu", "--quiet",
                     "--alpha", "0.5"]) == 0
    again = capsys.readouterr()
    assert "already finished" in again.err and json.loads(again.out.strip().splitlines()[-1])["config_hash"] == \
        other.config_hash


def test_the_cli_default_output_is_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/results/paper/runs.csv"], cwd=REPO_ROOT)
    ckpt = subprocess.run(["git", "check-ignore", "-q", "checkpoints/quick/fmrec-0.pt"], cwd=REPO_ROOT)
    assert ignored.returncode == 0 and ckpt.returncode == 0
    assert context_module.LOCAL_ROOT == REPO_ROOT / "runs"


def test_notebook_parameters_other_than_the_committed_ones_leave_committed_files_untouched(roots):
    repo, local = roots
    committed = fmrec_lib.setup("03_loss_ablation", "smoke", "cpu", **notebooks.defaults("03_loss_ablation"))
    assert committed.output_dir == repo and committed.committed
    custom = fmrec_lib.setup("03_loss_ablation", "smoke", "cpu", dataset="ml-100k", seeds=[1997])
    assert custom.output_dir == local and custom.figures_dir == local / "figures" / "smoke"
    chosen = fmrec_lib.setup("03_loss_ablation", "smoke", "cpu", "elsewhere", dataset="ml-100k", seeds=[1])
    assert chosen.output_dir.name == "elsewhere"
    custom.write(pd.DataFrame({"a": [1.5, 2.5], "empty": [None, None]}), "03_loss_ablation", "%", dataset="ml-100k")
    written = pd.read_csv(local / "results" / "smoke" / "03_loss_ablation.csv")
    # a table says its unit and user cap, and holds no column empty on every row
    assert list(written.columns) == ["a", "unit", "max_users"] and set(written["max_users"]) == {60}
    assert not (repo / "results").exists()


def test_every_figure_carries_its_size_and_the_devices_its_runs_were_trained_on(roots, tmp_path):
    import matplotlib.pyplot as plt

    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(30), data)
    ctx = Context.create("quick", "cpu", tmp_path / "out", progress=False)
    assert "trained on" not in ctx.stamp()
    ctx.run(str(data), "pop")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2])
    ctx.save_figure(fig, "probe")
    texts = [t.get_text() for t in fig.texts]
    # the runs' device (as recorded), never the rendering machine's: a figure re-renders the same anywhere
    assert any("size: quick" in t and "3 %" in t and "trained on: cpu (" in t for t in texts)
    assert (tmp_path / "out" / "figures" / "quick" / "probe.png").exists()
    assert not list((tmp_path / "out" / "figures" / "quick").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("argv,needle", [
    (["--sampler-steps", "0"], "steps must be"),
    (["--hidden", "0"], "hidden must be >= 1"),
    (["--max-len", "0"], "max_len must be >= 1"),
    (["--eval-every", "0"], "eval_every must be >= 1"),
    (["--lr", "-1"], "lr must be"),
    (["--epochs", "3", "--eval-every", "3"], "no validation would happen"),
])
def test_bad_settings_are_refused_before_any_training(roots, tmp_path, capsys, monkeypatch, argv, needle):
    import fmrec_lib.training.train as train_module

    monkeypatch.setattr(train_module, "fit", lambda *a, **k: pytest.fail("training started"))
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(30), data)
    rc = cli.main(["train", "--dataset", str(data), "--size", "smoke", "--device", "cpu", "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--train-steps", "0"], ["--batch-size", "0"], ["--sample-users", "0"]])
def test_bad_bench_settings_are_refused(tmp_path, capsys, argv):
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(30), data)
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--dataset", str(data), "--device", "cpu", *argv])
    assert e.value.code == 2 and "must be > 0" in capsys.readouterr().err


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["train", "--dataset", str(tmp_path / "nope.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0] and "Traceback" not in err[0]
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "train", "--dataset", str(tmp_path / "nope.csv"), "--device", "cpu"])


def test_data_without_any_dataset_fails_with_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FMREC_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("fmrec_lib.data.registry.project_data_dir", lambda: tmp_path / "none")
    assert cli.main(["data", "ml-100k", "beauty", "--no-download"]) == 1
    err = capsys.readouterr().err
    assert "looked in" in err and str(tmp_path) in err and "FMREC_DATA_DIR" in err and "no dataset could be loaded" in err


def test_results_rows_record_fingerprint_stop_reason_and_runtime(roots, tmp_path):
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(40), data)
    ctx = Context.create("smoke", "cpu", tmp_path / "out", progress=False)
    r = ctx.run(str(data), "fmrec")
    rows = read_results(ctx.store.runs)
    row = rows.iloc[0]
    assert row["fingerprint"] == ctx.dataset(str(data)).fingerprint() and row["stop_reason"] in ("patience", "max_epochs")
    runtime = json.loads(row["runtime"])
    assert {"tf32", "compiled", "deterministic_algorithms", "torch"} <= runtime.keys()
    assert r.per_user_ranks() is not None and len(r.per_user_ranks()) == len(ctx.dataset(str(data)).train)


def test_a_reuse_only_context_trains_nothing_and_reports_what_is_missing(roots, tmp_path, monkeypatch):
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(60), data)
    trainer = Context.create("smoke", "cpu", None, progress=False)
    recorded = trainer.run(str(data), "sasrec", 1997)
    monkeypatch.setenv("FMREC_REUSE_ONLY", "1")
    ctx = Context.create("smoke", "cpu", None, progress=False)
    assert ctx.reuse_only
    assert ctx.run(str(data), "sasrec", 1997).config_hash == recorded.config_hash  # reused as before
    with pytest.raises(fmrec_lib.experiments.runs.MissingRunError,
                       match=r"smoke-size run .* is not recorded and this context trains nothing"):
        ctx.run(str(data), "sasrec", 1998)
    runs_csv = roots[0] / "results" / "smoke" / "runs.csv"
    trained = read_results(runs_csv)
    assert trained[trained["model"] == "sasrec"]["seed"].astype(int).unique().tolist() == [1997]  # nothing trained
    # a recorded run whose model file is gone is not retrained either
    recorded.checkpoint().unlink()
    with pytest.raises(fmrec_lib.experiments.runs.MissingModelError, match="reuse only"):
        ctx.run(str(data), "sasrec", 1997).load_model()
    # below paper size a notebook whose runs are missing fails (it must not render less than it should)
    with pytest.raises(fmrec_lib.experiments.runs.MissingRunError):
        reports.main_results(ctx, [str(data)], ["sasrec"], seeds=[1997, 1998], grid={"lr": [1e-3]})
    monkeypatch.setenv("FMREC_REUSE_ONLY", "maybe")
    with pytest.raises(ValueError, match="FMREC_REUSE_ONLY"):
        Context.create("smoke", "cpu", None, progress=False)


def test_the_paper_size_main_table_shows_what_is_computed_and_names_the_rest(roots, tmp_path, monkeypatch):
    """Paper-size runs come in tiers from GPU sessions: the table renders what exists."""
    data = tmp_path / "seqs.txt"
    write_sequences(cyclic_dataset(60), data)
    trainer = Context.create("paper", "cpu", None, progress=False)
    trainer.allow_cpu_training = True
    trainer.run(str(data), "pop", 1997)  # the first seed only: no sasrec, no second popularity seed
    monkeypatch.setenv("FMREC_REUSE_ONLY", "1")
    ctx = Context.create("paper", "cpu", None, progress=False)
    res = reports.main_results(ctx, [str(data)], ["pop", "sasrec"], seeds=[1997, 1998], grid={"lr": [1e-3]})
    assert res.per_seed[["model", "seed"]].values.tolist() == [["pop", 1997]]
    assert res.summary["seeds"].unique().tolist() == [1]
    assert [m.split(" (")[0] for m in res.missing] == ["seqs pop seed 1998", "seqs sasrec"]
    assert all("not computed yet" in m for m in res.missing)


def test_the_suite_reaches_the_kernels_keeps_a_failed_notebooks_copy_and_scrubs_the_rest(monkeypatch, tmp_path,
                                                                                          data_dir):
    import nbformat

    from fmrec_lib.experiments import suite

    monkeypatch.setenv("FMREC_DATA_DIR", str(data_dir))
    seen = []

    class FakePapermill:
        @staticmethod
        def execute_notebook(source, output, **kwargs):
            seen.append((context_module.reuse_only_from_environment(), os.environ["MPLBACKEND"]))
            nb = nbformat.read(source, as_version=4)
            nb.metadata["papermill"] = {"duration": 1.5}
            nb.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
            nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
                                   nbformat.v4.new_output("stream", name="stderr", text="/home/x: noise\n")]
            nbformat.write(nb, output)
            if seen[-1][0] is False:
                raise RuntimeError("a cell failed")

    monkeypatch.setitem(__import__("sys").modules, "papermill", FakePapermill)
    monkeypatch.delenv("FMREC_REUSE_ONLY", raising=False)
    assert suite.run_suite("smoke", "cpu", only=["00"], output_dir=str(tmp_path), reuse_only=True) == 0
    assert seen == [(True, "module://matplotlib_inline.backend_inline")]  # for the kernels only
    assert not context_module.reuse_only_from_environment()
    written = (tmp_path / "00_datasets.ipynb").read_text()
    nb = nbformat.reads(written, as_version=4)
    assert set(nb.metadata) == {"kernelspec", "language_info", "fmrec"} and nb.metadata["fmrec"]["size"] == "smoke"
    assert nb.cells[1].metadata == {"tags": ["parameters"]} and nb.cells[2].outputs[0]["text"] == "kept\n"
    assert len(nb.cells[2].outputs) == 1  # stderr is log noise of this machine
    # a failing notebook keeps its previous executed copy and leaves no temporary file
    assert suite.run_suite("smoke", "cpu", only=["00"], output_dir=str(tmp_path)) == 1
    assert (tmp_path / "00_datasets.ipynb").read_text() == written and [p.name for p in tmp_path.iterdir()] == [
        "00_datasets.ipynb"]


def test_a_cpu_device_spells_its_threads_and_old_labels_read_the_same():
    from fmrec_lib.utils import device_name, device_text

    torch = __import__("torch")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_name(torch.device("cpu")) == "cpu (1 thread)"
        torch.set_num_threads(2)
        assert device_name(torch.device("cpu")) == "cpu (2 threads)"
    finally:
        torch.set_num_threads(threads)
    assert device_text("cpu (1 threads)") == "cpu (1 thread)" and device_text("NVIDIA H100") == "NVIDIA H100"


def test_the_paper_is_compared_only_where_it_applies(roots):
    table = pd.DataFrame([{"variant": v, "metric": "HR@5", "mean": 1.0, "low": 0.5, "high": 1.5, "hits": 3, "users": 60,
                           "error_bar": "interval"} for v in reports.LOSS_VARIANTS])
    ctx = Context.create("smoke", "cpu", None, progress=False)
    assert "**Paper:** Beauty HR@5 = 5.84 %" in reports.loss_caption(ctx, table, "beauty")
    other = reports.loss_caption(ctx, table, "ml-100k")
    assert "Paper" not in other and other.startswith("**Measured:** ml-100k HR@5")
