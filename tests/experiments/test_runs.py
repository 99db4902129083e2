"""The experiment layer: run-or-reuse by content, tuning, sweeps and their caches, sizes."""
import dataclasses

import pytest

from fmrec_lib.experiments import context as context_module
from fmrec_lib.experiments.context import Context
from fmrec_lib.data import load_dataset
from fmrec_lib.experiments.store import read_results
from fmrec_lib.experiments.runs import MissingModelError, MissingRunError, RunSpec, grid_points, spec_hash, tune
from fmrec_lib.training import checkpoints
from fmrec_lib.experiments.sizes import Size, get_size, resolve_size
from synthetic import cyclic_dataset, write_sequences


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Contexts whose committed and local roots are temporary folders."""
    monkeypatch.setattr(context_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(context_module, "LOCAL_ROOT", tmp_path / "repo" / "runs")
    return tmp_path


@pytest.fixture
def seq_file(tmp_path):
    path = tmp_path / "cyclic.txt"
    write_sequences(cyclic_dataset(50), path)
    return str(path)


def _ctx(isolated, size="smoke", output=None):
    ctx = Context.create(size, "cpu", output or isolated / "out", progress=False)
    return ctx


def test_runs_are_reused_by_configuration(isolated, seq_file):
    ctx = _ctx(isolated)
    first = ctx.run(seq_file, "fmrec")
    # recorded: its selected model is kept, its running checkpoint (the resume point) is not
    assert first.checkpoint() is not None
    assert not checkpoints.running_path(ctx.store.checkpoints, "fmrec", first.config_hash).exists()
    again = _ctx(isolated).run(seq_file, "fmrec")
    assert not first.reused and again.reused and again.test == pytest.approx(first.test)
    assert read_results(ctx.store.runs)["run_id"].nunique() == 1  # one run recorded, not two
    other = ctx.run(seq_file, "fmrec", alpha=0.5)
    assert other.config_hash != first.config_hash and not other.reused


def test_changed_content_is_a_new_run_and_renaming_is_not(isolated, tmp_path):
    ds = cyclic_dataset(50)
    a, b = tmp_path / "a" / "data.txt", tmp_path / "b" / "data.txt"
    a.parent.mkdir()
    b.parent.mkdir()
    write_sequences(ds, a)
    # the same users and items, every user's order reversed: same name, same counts, other content
    b.write_text("\n".join(" ".join([line.split()[0], *reversed(line.split()[1:])])
                           for line in a.read_text().splitlines()))
    ctx = _ctx(isolated)
    da, db = load_dataset(str(a)), load_dataset(str(b))
    assert (len(da.train), da.num_items) == (len(db.train), db.num_items)
    ha, hb = spec_hash(ctx, RunSpec(str(a))), spec_hash(ctx, RunSpec(str(b)))
    assert ha != hb
    renamed = tmp_path / "c" / "other_name.txt"
    renamed.parent.mkdir()
    renamed.write_text(a.read_text())
    assert spec_hash(ctx, RunSpec(str(renamed))) == ha  # identity is the content, not the file name


def test_lost_model_is_retrained_at_quick_and_smoke_but_never_at_paper(isolated, seq_file):
    ctx = _ctx(isolated)
    first = ctx.run(seq_file, "fmrec")
    base = ctx.sweep(first, "metrics", eval_seed=3)[0]
    first.checkpoint().unlink()
    again = _ctx(isolated).run(seq_file, "fmrec")
    assert again.checkpoint() is None
    assert ctx.sweep(again, "metrics", eval_seed=4)  # retrained on demand (same seed, same model)
    assert again.load_model() is not None and read_results(ctx.store.runs)["run_id"].nunique() == 1
    assert ctx.sweep(again, "metrics", eval_seed=3)[0]["NDCG@10"] == pytest.approx(base["NDCG@10"])
    # at paper size a missing model is an error naming the campaign job, never a silent CPU retraining
    paper_run = dataclasses.replace(again, size="paper")
    paper_run.checkpoint().unlink()
    with pytest.raises(MissingModelError, match=r"campaign job .*cyclic.* fmrec seed 1997.*campaign --size paper"):
        paper_run.load_model()


def test_a_missing_paper_size_run_is_not_trained_on_a_cpu(isolated, seq_file):
    ctx = Context.create("paper", "cpu", isolated / "out", progress=False)
    with pytest.raises(MissingRunError, match="campaign --size paper"):
        ctx.run(seq_file, "fmrec")


def test_tune_keeps_the_best_on_validation(isolated, seq_file):
    ctx = _ctx(isolated)
    points = grid_points({"lr": [1e-4, 1e-2]})
    best, table = tune(ctx, [RunSpec(seq_file, "sasrec", 1997, p) for p in points], points)
    assert table["selected"].sum() == 1
    chosen = table[table["selected"]].iloc[0]
    assert chosen["val_NDCG@10"] == table["val_NDCG@10"].max() and best.config_hash == chosen["config_hash"]


def test_sizes_and_settings():
    quick = get_size("quick")
    mc, tc = quick.configs("fmrec", alpha=0.1, lr=0.01)
    assert mc["hidden"] == 64 and mc["alpha"] == 0.1 and tc["lr"] == 0.01 and tc["last_k_samples"] == 20
    assert quick.configs("sasrec")[0] == {"max_len": 20}
    assert get_size("paper").configs("fmrec") == ({}, {})
    assert quick.user_cap("beauty") == 2000 and quick.user_cap("my_own.csv") == 2000
    assert get_size("smoke").user_cap("ml-100k") == 60 and get_size("smoke").user_cap("x.csv") == 200
    with pytest.raises(ValueError, match="unknown setting 'alpah'"):
        quick.configs("fmrec", alpah=0.1)
    with pytest.raises(ValueError, match="unknown size"):
        resolve_size("huge")
    assert resolve_size("auto", "cpu") == "quick"


@pytest.mark.parametrize("model,train", [({"fmrec": {"hiden": 3}}, {}), ({"*": {"hidden": 3}}, {}),
                                         ({"bert": {}}, {}), ({}, {"epoch": 3})])
def test_size_presets_reject_unknown_keys(model, train):
    with pytest.raises(ValueError, match="unknown"):
        Size("custom", model, train, {}, "a misspelt preset")


def test_noise_sensitivity_grows_with_delta(isolated, seq_file):
    ctx = _ctx(isolated)
    small = ctx.sweep(ctx.run(seq_file, "fmrec", delta=0.001), "noise_sensitivity", users=20)
    large = ctx.sweep(ctx.run(seq_file, "fmrec", delta=1.0), "noise_sensitivity", users=20)
    assert [r["t"] for r in small] == [0.001, 0.25, 0.5, 0.75, 0.97]
    mean = lambda rows: sum(r["relative_change_of_x1_hat"] for r in rows) / len(rows)  # noqa: E731
    assert mean(large) > 10 * mean(small) >= 0


def test_a_hash_that_looks_like_a_number_is_still_found(tmp_path):
    from fmrec_lib.experiments.store import COLUMNS, append_rows, find_run

    path = tmp_path / "runs.csv"
    for h in ("123456789012", "12e456789012"):  # an integer and an overflowing float to a CSV reader
        append_rows([{c: "x" for c in COLUMNS} | {"config_hash": h, "run_id": f"{h}-1", "value": 1.0}], path)
    assert find_run("123456789012", path) is not None and find_run("12e456789012", path) is not None


def test_failed_sweep_lookups_do_not_reload_a_missing_dataset(isolated, monkeypatch):
    import fmrec_lib.experiments.context as ctx_module

    calls = []

    def missing(*a, **k):
        calls.append(1)
        raise ModuleNotFoundError("No module named 'pooch'")  # what the bare GPU machine says

    monkeypatch.setattr(ctx_module, "load_dataset", missing)
    ctx = _ctx(isolated)
    from fmrec_lib.experiments import reports

    assert not reports.available(ctx, "yelp") and not reports.available(ctx, "yelp") and len(calls) == 1
    assert ctx_module  # the context remembers the failure, the campaign plans around it
