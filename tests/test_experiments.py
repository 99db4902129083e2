import pytest

from fmrec_lib import experiments
from fmrec_lib.experiments import cached_rows, configs_for, evaluate_variant, resolve_size, run, tune
from fmrec_lib.results import read_results
from synthetic import cyclic_dataset, write_sequences


@pytest.fixture
def seq_file(tmp_path):
    ds = cyclic_dataset(50)
    path = tmp_path / "cyclic.txt"
    write_sequences(ds, path)
    experiments.dataset_for.cache_clear()
    return str(path)


def _kw(tmp_path):
    return dict(size="smoke", device="cpu", results_path=tmp_path / "runs.csv", checkpoint_dir=tmp_path / "ck",
                progress=False)


def test_runs_are_reused_by_configuration(seq_file, tmp_path):
    first = run(seq_file, "fmrec", **_kw(tmp_path))
    again = run(seq_file, "fmrec", **_kw(tmp_path))
    assert not first.reused and again.reused and again.test == pytest.approx(first.test)
    assert len(read_results(tmp_path / "runs.csv")) == 12  # one run recorded, not two
    other = run(seq_file, "fmrec", **_kw(tmp_path), alpha=0.5)
    assert other.config_hash != first.config_hash and not other.reused


def test_lost_checkpoint_is_retrained_to_the_same_numbers(seq_file, tmp_path):
    first = run(seq_file, "fmrec", **_kw(tmp_path))
    base = evaluate_variant(first, device="cpu")
    first.checkpoint.unlink()
    again = run(seq_file, "fmrec", **_kw(tmp_path))
    assert evaluate_variant(again, device="cpu")["NDCG@10"] == pytest.approx(base["NDCG@10"])
    assert len(read_results(tmp_path / "runs.csv")) == 12


def test_tune_keeps_the_best_on_validation(seq_file, tmp_path):
    best, table = tune(seq_file, "sasrec", {"lr": [1e-4, 1e-2]}, **_kw(tmp_path))
    assert table["selected"].sum() == 1
    chosen = table[table["selected"]].iloc[0]
    assert chosen["val_NDCG@10"] == table["val_NDCG@10"].max() and best.config_hash == chosen["config_hash"]


def test_cached_rows_compute_once(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or [{"a": 1, "b": "x"}]
    assert cached_rows(tmp_path / "c.jsonl", {"k": 1}, compute) == [{"a": 1, "b": "x"}]
    assert cached_rows(tmp_path / "c.jsonl", {"k": 1}, compute) == [{"a": 1, "b": "x"}]
    cached_rows(tmp_path / "c.jsonl", {"k": 2, "other": "column"}, lambda: [{"c": 3}])
    assert len(calls) == 1


def test_sizes_and_settings():
    mc, tc = configs_for("fmrec", "quick", alpha=0.1, lr=0.01)
    assert mc["hidden"] == 64 and mc["alpha"] == 0.1 and tc["lr"] == 0.01 and tc["last_k_samples"] == 20
    assert configs_for("sasrec", "quick")[0] == {"max_len": 20}  # only keys the model has
    assert configs_for("fmrec", "paper") == ({}, {})
    with pytest.raises(ValueError, match="unknown setting 'alpah'"):
        configs_for("fmrec", "quick", alpah=0.1)
    with pytest.raises(ValueError, match="unknown size"):
        resolve_size("huge")
    assert resolve_size("auto", "cpu") == "quick"


def test_noise_sensitivity_grows_with_delta(seq_file, tmp_path):
    from fmrec_lib.experiments import noise_sensitivity

    small = noise_sensitivity(run(seq_file, "fmrec", **_kw(tmp_path), delta=0.001), users=20, device="cpu")
    large = noise_sensitivity(run(seq_file, "fmrec", **_kw(tmp_path), delta=1.0), users=20, device="cpu")
    assert list(small["t"]) == [0.001, 0.25, 0.5, 0.75, 0.97]
    assert (small["relative_change_of_x1_hat"] >= 0).all()
    assert large["relative_change_of_x1_hat"].mean() > 10 * small["relative_change_of_x1_hat"].mean()
