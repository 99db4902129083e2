import json
import math

import pandas as pd
import pytest
import torch

from fmrec_lib import cli
from fmrec_lib.training import checkpoints
from fmrec_lib.experiments.store import COLUMNS, find_run, read_results, record_run
from fmrec_lib.training.train import LossTracker, NonFiniteLossError, TrainConfig, evaluate_model, fit, load_model, run_config_hash
from synthetic import TINY_FMREC, cyclic_dataset, deadline_after_epoch, write_sequences

FAST = dict(epochs=4, batch_size=64, eval_every=3, lr=3e-3)  # the paper profile validates after epoch 4


def _resume_file(folder):
    (path,) = [p for p in folder.glob("*.pt") if not p.name.endswith(".best.pt")]
    return path


def test_short_fmrec_training_beats_popularity(tmp_path):
    ds = cyclic_dataset()
    results = tmp_path / "runs.csv"
    pop = fit(ds, "pop", {}, {}, device="cpu", progress=False)
    fm = fit(ds, "fmrec", TINY_FMREC, FAST, device="cpu", progress=False)
    assert not results.exists()  # fit writes nothing it is not asked to; the experiment layer records
    record_run(pop, results)
    record_run(fm, results)
    assert fm.test["HR@10"] > pop.test["HR@10"] + 20
    rows = read_results(results)
    assert list(rows.columns) == COLUMNS
    assert set(rows["model"]) == {"pop", "fmrec"} and set(rows["split"]) == {"val", "test"}
    fm_rows = find_run(fm.config_hash, results)
    test_hr = fm_rows[(fm_rows["split"] == "test") & (fm_rows["metric"] == "HR@10")]["value"].item()
    assert test_hr == pytest.approx(fm.test["HR@10"])
    assert (fm_rows["n_model_calls"] == 5).all() and (fm_rows["profile"] == "paper").all()
    assert json.loads(fm_rows["config"].iloc[0])["model_config"]["hidden"] == 32


def test_same_seed_same_numbers_on_cpu():
    ds = cyclic_dataset(60)
    cfg = dict(TINY_FMREC, hidden=16)
    a = fit(ds, "fmrec", cfg, dict(FAST, epochs=2, eval_every=1), device="cpu", progress=False)
    b = fit(ds, "fmrec", cfg, dict(FAST, epochs=2, eval_every=1), device="cpu", progress=False)
    assert a.history == b.history and a.test == b.test


def test_killed_run_resumes_to_the_same_result(tmp_path):
    ds = cyclic_dataset(80)
    cfg, train = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=6, eval_every=2, patience=10)
    whole = fit(ds, "fmrec", cfg, train, device="cpu", progress=False)

    def kill(epoch, record):
        if epoch == 4:  # after the epoch-3 checkpoint (validations follow epochs 3 and 5), mid-way to the next
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False,
            on_epoch_end=kill)
    ckpt = checkpoints.load(_resume_file(tmp_path))
    assert ckpt["epoch"] == 3 and {"model", "optimizer", "scheduler", "rng", "best", "model_config"} <= ckpt.keys()
    resumed = fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert resumed.history == whole.history  # every epoch's losses and validation metrics
    assert resumed.test == whole.test and resumed.best_epoch == whole.best_epoch
    assert resumed.wall_time_s > ckpt["wall_time_s"] > 0  # the interrupted part is counted


def test_a_deadline_stop_keeps_every_trained_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    """Stopped by a deadline between validations (after epoch 4; validations follow epochs 3 and 5), the run
    writes its running checkpoint after epoch 4, not only at epoch 3, and resumes from there to the
    numbers of an uninterrupted run."""
    from fmrec_lib.training import train
    from fmrec_lib.training.train import DeadlineReached

    ds = cyclic_dataset(80)
    cfg, tconf = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=6, eval_every=2, patience=10)
    whole = fit(ds, "fmrec", cfg, tconf, device="cpu", progress=False)
    deadline, at_4, trained = deadline_after_epoch(monkeypatch, train)
    with pytest.raises(DeadlineReached, match="after epoch 4"):
        fit(ds, "fmrec", cfg, tconf, device="cpu", checkpoint_dir=tmp_path, progress=False,
            on_epoch_end=at_4, deadline=deadline)
    assert trained == [1, 2, 3, 4]
    assert checkpoints.load(_resume_file(tmp_path))["epoch"] == 4
    resumed = fit(ds, "fmrec", cfg, tconf, device="cpu", checkpoint_dir=tmp_path, progress=False,
                  on_epoch_end=lambda epoch, record: trained.append(epoch))
    assert trained[4:] == [5, 6]  # epochs 1-4 are not trained again
    assert resumed.history == whole.history and resumed.test == whole.test and resumed.best_epoch == whole.best_epoch


def test_checkpoint_of_another_config_is_not_silently_reused(tmp_path):
    ds = cyclic_dataset(40)
    cfg = dict(TINY_FMREC, hidden=16)
    first = fit(ds, "fmrec", cfg, dict(FAST, epochs=2, eval_every=1), device="cpu", checkpoint_dir=tmp_path, progress=False)
    path = _resume_file(tmp_path)
    other = path.with_name(path.name.replace(first.config_hash, "0" * 12))
    path.rename(other)
    ckpt = checkpoints.load(other)
    ckpt["config_hash"] = "0" * 12
    torch.save(ckpt, other)
    # a file named for this config but holding another one is refused
    torch.save(ckpt, path)
    with pytest.raises(checkpoints.CheckpointError, match="another configuration"):
        fit(ds, "fmrec", cfg, dict(FAST, epochs=2, eval_every=1), device="cpu", checkpoint_dir=tmp_path, progress=False)


def test_nan_loss_stops_with_epoch_and_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from fmrec_lib.models import FMRec

    real = FMRec.reconstruction_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] > 33 else value  # 14 batches per epoch: from epoch 3, batch 5 on

    monkeypatch.setattr(FMRec, "reconstruction_loss", poisoned)
    ds = cyclic_dataset()
    with pytest.raises(NonFiniteLossError, match=r"epoch 3: loss term 'rec' is nan from batch 5 on"):
        fit(ds, "fmrec", TINY_FMREC, dict(FAST, eval_every=1), device="cpu", checkpoint_dir=tmp_path,
            progress=False)
    assert checkpoints.load(_resume_file(tmp_path))["epoch"] == 2  # the first validation follows epoch 2


def test_bad_train_config_is_refused():
    with pytest.raises(ValueError, match="unknown TrainConfig key"):
        fit(cyclic_dataset(10), "fmrec", TINY_FMREC, {"epoch": 3}, )
    with pytest.raises(ValueError, match="unknown FMRecConfig key"):
        fit(cyclic_dataset(10), "fmrec", {"hiden": 3}, {}, )
    with pytest.raises(ValueError, match="unknown model"):
        fit(cyclic_dataset(10), "bert4rec", {}, {}, )


def test_cli_train_prints_one_json_line(tmp_path, capsys):
    ds = cyclic_dataset(60)
    path = tmp_path / "seqs.txt"
    write_sequences(ds, path)
    argv = ["train", "--dataset", str(path), "--device", "cpu", "--seed", "3", "--epochs", "2", "--size", "smoke",
            "--eval-every", "1", "--batch-size", "64", "--hidden", "16", "--heads", "2", "--max-len", "8",
            "--rec-hidden", "16", "32", "--sampler-steps", "3", "--alpha", "0.5", "--profile", "clean",
            "--output-dir", str(tmp_path / "out"), "--quiet"]
    assert cli.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["profile"] == "clean" and line["model_config"]["alpha"] == 0.5 and line["seed"] == 3
    assert line["model_config"]["rec_hidden"] == [16, 32] and line["model_config"]["sampler"]["steps"] == 3
    assert "HR@10" in line and "NDCG@10" in line and not line["reused"]
    runs = tmp_path / "out" / "results" / "smoke" / "runs.csv"
    n_rows = len(pd.read_csv(runs))
    assert n_rows == 6 + 9  # val: HR/NDCG@5/10/20; test: the same and three beyond-accuracy measures
    # rerunning the finished command says so and reuses it: no second row set, no training
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "already finished" in out.err and json.loads(out.out.strip().splitlines()[-1])["reused"]
    assert len(pd.read_csv(runs)) == n_rows


def test_cli_bench_runs_at_tiny_size(tmp_path, capsys):
    ds = cyclic_dataset(40)
    path = tmp_path / "seqs.txt"
    write_sequences(ds, path)
    assert cli.main(["bench", "--dataset", str(path), "--device", "cpu", "--train-steps", "2", "--batch-size", "32",
                     "--hidden", "16", "--heads", "2", "--max-len", "8", "--rec-hidden", "16", "32"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["samples_per_s"] > 0 and report["users_per_s"] > 0 and report["model_calls_per_user"] == 30
    n, batch = report["train_samples_per_epoch"], report["batch_size"]
    assert n % batch and not report["partial_eager"]  # an epoch: its full batches, then its last, smaller one
    assert report["s_per_epoch"] == pytest.approx(n // batch * report["ms_per_step"] / 1000
                                                  + report["partial_steady_s"], abs=2e-3)


def test_a_compiled_bench_compiles_one_graph_and_steps_the_last_batch_eagerly(monkeypatch):
    from fmrec_lib.training import train
    from fmrec_lib.ops.bench import benchmark

    counter = _counting_compile(monkeypatch, train)
    report = benchmark(cyclic_dataset(40), model_config=dict(TINY_FMREC, hidden=16), device="cpu", batch_size=32,
                       train_steps=2, warmup=1, sample_users=4, compile=True)
    assert report["partial_eager"] and report["train_samples_per_epoch"] % 32
    assert counter.frame_count == 1  # one graph (the full batch), as fit compiles per run
    # an epoch of one batch, smaller than the batch size: fit compiles it, and so does the bench
    report = benchmark(cyclic_dataset(40), model_config=dict(TINY_FMREC, hidden=16), device="cpu", batch_size=4096,
                       train_steps=2, warmup=1, sample_users=4, compile=True)
    assert counter.frame_count == 2 and not report["partial_eager"]
    assert report["s_per_epoch"] == report["partial_steady_s"]
    torch._dynamo.reset()


def test_selected_model_is_saved_and_reloads_to_the_same_metrics(tmp_path):
    ds = cyclic_dataset(60)
    run = fit(ds, "fmrec", dict(TINY_FMREC, hidden=16), dict(FAST, epochs=2, eval_every=1), device="cpu",
              checkpoint_dir=tmp_path, progress=False)
    model = load_model(checkpoints.selected_path(tmp_path, "fmrec", run.config_hash))
    assert evaluate_model(model, ds, "test", seed=0) == {k: v for k, v in run.test.items() if "@" in k and
                                                         k.split("@")[0] in ("HR", "NDCG")}


def test_last_k_samples_keeps_each_users_most_recent_prefixes():
    ds = cyclic_dataset(30)
    full_x, full_y = ds.training_samples(8)
    x, y = ds.training_samples(8, last_k=2)
    assert len(y) == 2 * 30
    # the last two samples of the first user are its two most recent prefixes
    n0 = len(ds.train[ds.users[0]]) - 1
    assert torch.equal(x[:2], full_x[n0 - 2:n0]) and torch.equal(y[:2], full_y[n0 - 2:n0])


def test_bf16_autocast_switch_trains_with_finite_losses():
    run = fit(cyclic_dataset(40), "fmrec", dict(TINY_FMREC, hidden=16), dict(FAST, epochs=2, eval_every=1, amp_bf16=True),
              device="cpu", progress=False)
    assert all(math.isfinite(v) for k, v in run.history[0].items() if k.startswith("loss_"))


def test_validation_schedules_follow_the_profile():
    from fmrec_lib.training.train import TrainConfig

    paper = TrainConfig().resolved("paper")
    assert [e for e in range(1, 501) if paper.validates_after(e)] == list(range(21, 482, 20))  # never at 500
    clean = TrainConfig().resolved("clean")
    assert [e for e in range(1, 501) if clean.validates_after(e)] == list(range(20, 501, 20))
    assert TrainConfig(eval_schedule="regular").resolved("paper").eval_schedule == "regular"
    ds = cyclic_dataset(40)
    cfg = dict(TINY_FMREC, hidden=16)
    for profile, expected in (("paper", [4, 7, 10]), ("clean", [3, 6, 9, 10])):
        run = fit(ds, "fmrec", dict(cfg, profile=profile), dict(FAST, epochs=10, eval_every=3, patience=10),
                  device="cpu", progress=False)
        assert [h["epoch"] for h in run.history if "val_HR@10" in h] == expected
        assert run.train_config["eval_schedule"] == ("authors" if profile == "paper" else "regular")
    with pytest.raises(ValueError, match="no validation would happen"):
        fit(ds, "fmrec", cfg, dict(FAST, epochs=3, eval_every=3), device="cpu", progress=False)


def test_stops_after_patience_validations_without_a_new_best_on_any_metric():
    # lr so small that the model never changes: the first validation sets every best, the
    # next ones tie (not a new best), so the run stops after 1 + patience validations.
    run = fit(cyclic_dataset(40), "fmrec", dict(TINY_FMREC, hidden=16),
              dict(FAST, epochs=30, eval_every=3, patience=2, lr=1e-30), device="cpu", 
              progress=False)
    assert [h["epoch"] for h in run.history if "val_HR@10" in h] == [4, 7, 10]
    assert run.epochs_run == 10 and run.best_epoch == 4


def test_reported_validation_metrics_are_the_selected_models():
    run = fit(cyclic_dataset(80), "fmrec", dict(TINY_FMREC, hidden=16),
              dict(FAST, epochs=12, eval_every=1, patience=20), device="cpu", progress=False)
    at_best = next(h for h in run.history if h["epoch"] == run.best_epoch)
    assert run.val == {k[len("val_"):]: v for k, v in at_best.items() if k.startswith("val_")}


def test_checkpoints_are_lean_and_the_running_one_goes_once_recorded(tmp_path):
    ds = cyclic_dataset(60)
    cfg, train = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=6, eval_every=2, patience=10)

    def inspect(epoch, record):
        if epoch == 3:  # right after a validation that set the first best: no second copy of the weights
            ckpt = checkpoints.load(_resume_file(tmp_path), kind="running")
            assert ckpt["best_epoch"] == 3 and ckpt["best_state"] is None

    run = fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False, on_epoch_end=inspect)
    # kept for the caller, which removes it once the run is recorded (tests/experiments/test_runs.py)
    assert checkpoints.load(_resume_file(tmp_path), kind="running")["config_hash"] == run.config_hash
    selected = checkpoints.load(checkpoints.selected_path(tmp_path, "fmrec", run.config_hash), kind="selected")
    assert not any(k.startswith("reconstructor.") for k in selected["model"])  # training-only part left out
    assert load_model(checkpoints.selected_path(tmp_path, "fmrec", run.config_hash)).num_items == ds.num_items


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_checkpoint_names_the_file_and_the_way_out(tmp_path, damage):
    ds = cyclic_dataset(40)
    cfg, train = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=4, eval_every=1)

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False, on_epoch_end=stop)
    path = _resume_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint"}[damage])
    with pytest.raises(checkpoints.CheckpointError, match=rf"{path.name}.*(move it aside|--no-resume)"):
        fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False)
    # starting over is offered and works
    again = fit(ds, "fmrec", cfg, train, device="cpu", checkpoint_dir=tmp_path, progress=False, resume=False)
    assert again.epochs_run == 4


def test_cli_bench_variants_run_in_one_process(tmp_path, capsys):
    path = write_sequences(cyclic_dataset(30), tmp_path / "seqs.txt")
    assert cli.main(["bench", "--dataset", str(path), "--device", "cpu", "--train-steps", "1", "--warmup", "1",
                     "--batch-size", "32", "--hidden", "16", "--heads", "2", "--max-len", "8", "--rec-hidden", "16",
                     "32", "--sample-users", "8", "--variant", "rec_loss=dense", "--variant", "rec_loss=sparse,alpha=0.1"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["flags"]["rec_loss"], r["variant"]) for r in reports] == [("dense", "rec_loss=dense"),
                                                                         ("sparse", "rec_loss=sparse,alpha=0.1")]


def test_a_failing_bench_variant_does_not_stop_the_next_one(tmp_path, capsys):
    """A GPU session keeps every line it can get: a variant that fails (here an unknown compile
    mode, which torch.compile refuses) prints its error and the next variant is timed; the exit
    status says so."""
    path = write_sequences(cyclic_dataset(30), tmp_path / "seqs.txt")
    assert cli.main(["bench", "--dataset", str(path), "--model", "gru4rec", "--device", "cpu", "--train-steps", "1",
                     "--warmup", "1", "--batch-size", "32", "--hidden", "16", "--max-len", "8", "--sample-users",
                     "8", "--variant", "compile=true,compile_mode=bogus", "--variant", ""]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [("error" in r, r["variant"]) for r in lines] == [(True, "compile=true,compile_mode=bogus"), (False, "")]
    assert lines[1]["s_per_epoch"] > 0 and "FAILED" in captured.err


def test_loss_tracker_sums_on_the_device_and_finds_the_first_bad_batch():
    tracker = LossTracker()
    for b in range(6):
        fm = torch.tensor(float("inf") if b == 4 else 1.0)
        rec = torch.tensor(float("nan") if b in (2, 5) else 2.0)
        tracker.update({"fm": fm, "rec": rec, "loss": fm + rec})
    means, first_bad = tracker.read()
    assert math.isinf(means["fm"]) and math.isnan(means["rec"]) and first_bad == {"fm": 4, "rec": 2, "loss": 2}
    finite = LossTracker()
    for b in range(3):
        finite.update({"ce": torch.tensor(float(b)), "loss": torch.tensor(2.0 * b)})
    assert finite.read() == ({"ce": 1.0, "loss": 2.0}, {"ce": None, "loss": None})


@pytest.mark.parametrize("name,overrides", [("fmrec", {}), ("fmrec", {"rec_loss": "sparse"}), ("diffurec", {})])
def test_losses_trace_with_a_symbolic_batch_size(name, overrides):
    """What torch.compile does at an epoch's last, smaller batch when shapes are dynamic; a
    random call passing ``generator=None`` explicitly cannot be traced then."""
    from fmrec_lib.models import build_model, model_config_class

    ds = cyclic_dataset(12)
    x, y = ds.training_samples(8)
    cfg = dict(TINY_FMREC, hidden=16) if name == "fmrec" else dict(hidden=16, heads=2, max_len=8, diffusion_steps=4)
    cfg.update(overrides)
    torch._dynamo.reset()
    net = build_model(name, ds, model_config_class(name)(**cfg))
    loss = torch.compile(net.loss, backend="eager", dynamic=True)
    for size in (6, 4):
        loss(x[:size], y[:size])["loss"].backward()
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fmrec", "diffurec"])
def test_compiled_training_survives_the_last_smaller_batch(name):
    """A real inductor compile (CPU, needs a C++ compiler): a minute or two per model cold."""
    ds = cyclic_dataset(12)
    n = len(ds.training_samples(8)[1])
    assert n % 32 != 0  # the epoch ends with a partial batch
    cfg = dict(TINY_FMREC, hidden=16) if name == "fmrec" else dict(hidden=16, heads=2, max_len=8, diffusion_steps=4)
    torch._dynamo.reset()
    run = fit(ds, name, cfg, dict(epochs=2, batch_size=32, eval_every=1, compile=True), device="cpu", progress=False)
    torch._dynamo.reset()
    assert run.epochs_run == 2 and run.runtime["compiled"]
    assert all(math.isfinite(v) for h in run.history for k, v in h.items() if k.startswith("loss_"))


def _counting_compile(monkeypatch, module):
    """Replace ``module.compile_loss`` by dynamo with a counting backend that runs the traced
    graph eagerly (the same random draws as eager code): returns the counter."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setattr(module, "compile_loss", lambda fn, mode="default": torch.compile(fn, backend=counter,
                                                                                          dynamic=False))
    return counter


def test_compiled_training_compiles_one_graph_and_runs_the_last_batch_eagerly(monkeypatch):
    """Under compile an epoch's last, smaller batch runs the eager loss: one compilation per run
    instead of two, and the same numbers as eager training."""
    from fmrec_lib.training import train

    ds = cyclic_dataset(20)
    cfg, schedule = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=3, eval_every=1)
    assert len(ds.training_samples(TINY_FMREC["max_len"])[1]) % schedule["batch_size"]  # a partial batch
    eager = fit(ds, "fmrec", cfg, schedule, device="cpu", progress=False)
    counter = _counting_compile(monkeypatch, train)
    compiled = fit(ds, "fmrec", cfg, dict(schedule, compile=True), device="cpu", progress=False)
    torch._dynamo.reset()
    assert counter.frame_count == 1
    assert [h["loss_loss"] for h in compiled.history] == pytest.approx([h["loss_loss"] for h in eager.history],
                                                                        rel=1e-5)
    assert compiled.test == pytest.approx(eager.test, rel=1e-4, abs=1e-6)


def test_compile_uses_static_shapes_and_the_configured_mode(monkeypatch):
    seen = []

    def fake_compile(fn, **kwargs):
        seen.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    run = fit(cyclic_dataset(20), "fmrec", dict(TINY_FMREC, hidden=16),
              dict(FAST, epochs=2, eval_every=1, compile=True, compile_mode="reduce-overhead"), device="cpu", progress=False)
    assert seen == [{"dynamic": False, "mode": "reduce-overhead"}]
    assert run.runtime["compiled"] and run.runtime["compile_mode"] == "reduce-overhead"
    with pytest.raises(ValueError, match="compile_mode"):
        TrainConfig(compile_mode="fast")


def test_precision_is_set_both_ways_for_every_run(tmp_path):
    ds = cyclic_dataset(20)
    cfg, train = dict(TINY_FMREC, hidden=16), dict(FAST, epochs=2, eval_every=1)
    on = fit(ds, "fmrec", cfg, dict(train, tf32=True), device="cpu", progress=False)
    record_run(on, tmp_path / "r.csv")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert on.runtime["tf32"] and on.runtime["float32_matmul_precision"] == "high"
    off = fit(ds, "fmrec", cfg, train, device="cpu", progress=False)
    record_run(off, tmp_path / "r2.csv")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert not off.runtime["tf32"] and off.runtime["float32_matmul_precision"] == "highest"
    assert off.runtime["torch"] == torch.__version__ and not off.runtime["compiled"]
    assert COLUMNS[-1] == "runtime"
    for name, tf32 in (("r.csv", True), ("r2.csv", False)):  # same configuration hash: tf32 is a speed flag
        rows = read_results(tmp_path / name)
        hr = rows[(rows["split"] == "test") & (rows["metric"] == "HR@10")]
        assert [json.loads(r)["tf32"] for r in hr["runtime"]] == [tf32]


def test_old_results_files_without_the_runtime_column_still_read_and_grow(tmp_path):
    from fmrec_lib.experiments.store import append_rows

    path = tmp_path / "old.csv"
    old_row = {c: i for i, c in enumerate(COLUMNS[:-1])}
    pd.DataFrame([old_row], columns=COLUMNS[:-1]).to_csv(path, index=False)
    frame = read_results(path)
    assert list(frame.columns) == COLUMNS and frame["runtime"].isna().all()
    append_rows([{**old_row, "run_id": "new", "runtime": json.dumps({"tf32": False})}], path)
    frame = read_results(path)
    assert list(frame.columns) == COLUMNS and len(frame) == 2
    assert frame["value"].tolist() == [old_row["value"]] * 2
    assert pd.isna(frame["runtime"].iloc[0]) and json.loads(frame["runtime"].iloc[1]) == {"tf32": False}


def test_evaluation_inputs_are_built_once_per_run(monkeypatch):
    from fmrec_lib.data import SequentialDataset

    real, calls = SequentialDataset.eval_inputs, []

    def counted(self, split, *args, **kwargs):
        calls.append(split)
        return real(self, split, *args, **kwargs)

    monkeypatch.setattr(SequentialDataset, "eval_inputs", counted)
    run = fit(cyclic_dataset(40), "fmrec", dict(TINY_FMREC, hidden=16), dict(FAST, epochs=8, eval_every=2, patience=9),
              device="cpu", progress=False)
    assert sum("val_HR@10" in h for h in run.history) == 3 and calls == ["val", "test"]


def test_speed_fields_stay_out_of_the_run_hash():
    from fmrec_lib.models import FMRecConfig

    ds = cyclic_dataset(10)
    base = run_config_hash(ds, "fmrec", FMRecConfig(), TrainConfig())
    assert run_config_hash(ds, "fmrec", FMRecConfig(rec_loss="dense"), TrainConfig(compile=True,
                           compile_mode="reduce-overhead", tf32=True)) == base
    assert run_config_hash(ds, "fmrec", FMRecConfig(alpha=0.1), TrainConfig()) != base


def test_progress_moves_batch_by_batch_within_an_epoch(capsys):
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        logging.getLogger("fmrec_lib.training.train").setLevel(logging.INFO)
        fit(cyclic_dataset(60), "fmrec", dict(TINY_FMREC, hidden=16), dict(FAST, epochs=2, eval_every=1,
                                                                           batch_size=32), device="cpu", progress=True)
    err = capsys.readouterr().err
    n_batches = -(-len(cyclic_dataset(60).training_samples(8)[1]) // 32)
    assert f"/{2 * n_batches} " in err and "batch" in err  # one bar over every batch of every epoch


def test_the_model_code_version_is_part_of_a_runs_identity(monkeypatch):
    """Results of an older model version are never reused as the current one's."""
    from fmrec_lib.models.diffurec import DiffuRec
    from fmrec_lib.models.fmrec import FMRec

    assert FMRec.version == 2 and DiffuRec.version == 2  # the training-fidelity fixes
    ds = cyclic_dataset(30)
    from fmrec_lib.training.train import resolve_configs

    cfg, tc = resolve_configs("fmrec", dict(TINY_FMREC), {"epochs": 2, "eval_every": 1})
    now = run_config_hash(ds, "fmrec", cfg, tc)
    monkeypatch.setattr(FMRec, "version", 1)
    assert run_config_hash(ds, "fmrec", cfg, tc) != now
