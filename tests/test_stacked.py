import json
import math

import pytest
import torch

from fmrec_lib import checkpoints
from fmrec_lib.models import build_model, model_config_class
from fmrec_lib.results import read_results
from fmrec_lib.stacked import fit_stacked, interrupted_stacks, stack_key, stack_paths, stacked_loss
from fmrec_lib.train import fit, load_model, resolve_configs
from synthetic import TINY_FMREC, cyclic_dataset, deadline_after_epoch

FAST = dict(epochs=6, batch_size=64, eval_every=2, lr=3e-3)  # the paper profile validates after epochs 3 and 5
TINY = {"fmrec": TINY_FMREC, "diffurec": dict(hidden=32, heads=2, max_len=8), "sasrec": dict(hidden=32, heads=2, max_len=8)}


@pytest.mark.parametrize("model,varying", [
    ("fmrec", [{}, {"alpha": 0.5, "delta": 0.1}, {"beta": 1.0}]),
    ("fmrec", [{"fm_weight": 0.3}, {"fm_weight": 0.0}]),
    ("fmrec", [dict(rec_loss="sparse"), dict(rec_loss="sparse", alpha=1.0)]),
    ("diffurec", [{}, {"delta": 0.5}]),
    ("sasrec", [{}, {}])])
def test_the_vmapped_loss_and_gradients_equal_each_models_own(model, varying):
    """With the same random draws (vmap's randomness="same" against a reseeded single call), the
    stacked loss terms and every gradient are each model's own: the K runs do not mix."""
    ds = cyclic_dataset()
    nets = []
    for seed, over in enumerate(varying):
        mc, _ = resolve_configs(model, dict(TINY[model], **over), {})
        torch.manual_seed(seed)
        nets.append(build_model(model, ds, mc).train())
    inputs, targets = ds.training_samples(8)
    x, y = inputs[:64], targets[:64]
    loss_fn, params, buffers = stacked_loss(nets, randomness="same")
    K = len(nets)
    torch.manual_seed(7)
    terms = loss_fn(params, buffers, x.expand(K, *x.shape), y.expand(K, *y.shape))
    terms["loss"].sum().backward()
    for k, net in enumerate(nets):
        torch.manual_seed(7)
        own = net.loss(x, y)
        own["loss"].backward()
        assert set(own) == set(terms)
        for name, value in own.items():
            assert terms[name][k].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
        for name, p in net.named_parameters():
            torch.testing.assert_close(params[f"net.{name}"].grad[k], p.grad, rtol=1e-4, atol=1e-6)


def test_one_adam_over_stacked_parameters_equals_one_adam_per_model():
    torch.manual_seed(0)
    singles = [torch.randn(5, 3, requires_grad=True) for _ in range(3)]
    stacked = torch.stack([s.detach() for s in singles]).requires_grad_()
    opts = [torch.optim.Adam([s], lr=1e-2, weight_decay=0.1) for s in singles]
    opt = torch.optim.Adam([stacked], lr=1e-2, weight_decay=0.1)
    for _ in range(4):
        grads = torch.randn(3, 5, 3)
        for s, o, g in zip(singles, opts, grads):
            s.grad = g.clone()
            o.step()
        stacked.grad = grads.clone()
        opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([s.detach() for s in singles]), rtol=0, atol=0)


def test_a_stack_of_one_trains_like_fit():
    """A stack of one draws exactly what fit draws: the same losses, selection and test metrics
    up to float round-off."""
    ds = cyclic_dataset(80)
    cfg = dict(TINY_FMREC, hidden=16)
    single = fit(ds, "fmrec", cfg, FAST, device="cpu", results_path=None, progress=False)
    (stacked,) = fit_stacked(ds, "fmrec", [(cfg, FAST)], device="cpu", progress=False)
    assert len(stacked.history) == len(single.history) and stacked.best_epoch == single.best_epoch
    for a, b in zip(stacked.history, single.history):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-4) for k in a)
    assert stacked.test == pytest.approx(single.test, rel=1e-4, abs=1e-3)
    assert stacked.config_hash == single.config_hash and stacked.runtime["stacked"] == 1


def test_a_compiled_stack_compiles_one_graph_and_runs_the_last_batch_eagerly(monkeypatch):
    """As in fit: one compilation per stack, the last, smaller batch eager, the same numbers as the
    same (rand-based dropout) loss run without compilation."""
    from torch._dynamo.testing import CompileCounter

    from fmrec_lib import stacked as stacked_module

    ds = cyclic_dataset(30)
    cfg = dict(TINY_FMREC, hidden=16)
    runs = [(cfg, dict(FAST, epochs=3, eval_every=1, seed=seed, compile=True)) for seed in (1, 2)]
    assert len(ds.training_samples(TINY_FMREC["max_len"])[1]) % FAST["batch_size"]  # a partial batch
    monkeypatch.setattr(stacked_module, "compile_loss", lambda fn, mode="default": fn)
    eager = fit_stacked(ds, "fmrec", runs, device="cpu", progress=False)
    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setattr(stacked_module, "compile_loss",
                        lambda fn, mode="default": torch.compile(fn, backend=counter, dynamic=False))
    compiled = fit_stacked(ds, "fmrec", runs, device="cpu", progress=False)
    torch._dynamo.reset()
    assert counter.frame_count == 1
    for a, b in zip(compiled, eager):
        assert [h["loss_loss"] for h in a.history] == pytest.approx([h["loss_loss"] for h in b.history], rel=1e-5)
        assert a.test == pytest.approx(b.test, rel=1e-4, abs=1e-6)


def _traced_ops(fn, *args) -> set[str]:
    """The aten operators of ``fn``'s forward graph as AOTAutograd traces it for torch.compile."""
    from torch._dynamo.backends.common import aot_autograd

    ops: set[str] = set()

    def capture(gm, example_inputs):
        ops.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=aot_autograd(fw_compiler=capture), dynamic=False)(*args)
    torch._dynamo.reset()
    return ops


@pytest.mark.parametrize("model", ["fmrec", "diffurec"])
def test_a_compiled_stack_draws_its_dropout_masks_without_bernoulli(model):
    """Under vmap a dropout becomes bernoulli of an empty tensor, which inductor turned into NaN
    losses (next test); a compiled stack's dropouts (blocks, FFN, embeddings, attention
    probabilities) draw with rand_like instead, and eager stacks keep F.dropout."""
    ds = cyclic_dataset(12)
    cfg = dict(TINY_FMREC, hidden=16) if model == "fmrec" else dict(hidden=16, heads=2, max_len=8, diffusion_steps=4)
    nets = [build_model(model, ds, model_config_class(model)(**cfg)) for _ in range(2)]
    x, y = ds.training_samples(8)
    batch = (x[:12].expand(2, -1, -1).contiguous(), y[:12].expand(2, -1).contiguous())
    plain, params, buffers = stacked_loss(nets)
    assert any("bernoulli" in op for op in _traced_ops(plain, params, buffers, *batch))
    rand, params, buffers = stacked_loss(nets, rand_dropout=True)
    ops = _traced_ops(rand, params, buffers, *batch)
    assert not any("bernoulli" in op or "dropout" in op for op in ops) and any("rand" in op for op in ops)


@pytest.mark.slow
def test_a_compiled_stack_trains_finite_losses():
    """A real inductor compile (CPU): a stack of two FMRec runs. With the vmapped bernoulli
    masks every loss was NaN from the first batch on (torch 2.13; found on Beauty at smoke size)."""
    from fmrec_lib.train import RunResult

    ds = cyclic_dataset(30)
    runs = [(dict(TINY_FMREC, hidden=16), dict(FAST, epochs=2, eval_every=1, seed=seed, compile=True)) for seed in (1, 2)]
    torch._dynamo.reset()
    results = fit_stacked(ds, "fmrec", runs, device="cpu", progress=False)
    torch._dynamo.reset()
    assert all(isinstance(r, RunResult) for r in results), results
    assert all(math.isfinite(h[k]) for r in results for h in r.history for k in h if k.startswith("loss_"))


def test_a_stack_records_each_run_like_fit(tmp_path):
    ds = cyclic_dataset(80)
    cfg = dict(TINY_FMREC, hidden=16)
    configs = [(cfg, dict(FAST, seed=1)), (cfg, dict(FAST, seed=2)), (dict(cfg, alpha=1.0), dict(FAST, seed=1))]
    ended = []
    results = fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path / "ckpt",
                          results_path=tmp_path / "runs.csv", progress=False,
                          on_run_end=lambda result, error, k: ended.append((k, error)))
    assert sorted(k for k, _ in ended) == [0, 1, 2] and all(e is None for _, e in ended)
    rows = read_results(tmp_path / "runs.csv")
    assert rows["run_id"].nunique() == 3 and set(rows["config_hash"]) == {r.config_hash for r in results}
    hashes = [r.config_hash for r in results]
    for r in results:
        runtime = json.loads(rows[rows["config_hash"] == r.config_hash]["runtime"].iloc[0])
        assert runtime["stacked"] == 3 and runtime["stack"] == hashes
        assert r.epochs_run == len(r.history) and r.stop_reason in ("patience", "max_epochs")
        assert r.best_epoch in (3, 5)
        selected = load_model(checkpoints.selected_path(tmp_path / "ckpt", "fmrec", r.config_hash))
        assert selected.config.alpha == r.model_config["alpha"]
    # the same configurations as single runs have the same identities (a stack changes only the draws)
    single = fit(ds, "fmrec", cfg, dict(FAST, seed=2, epochs=1, eval_every=1, eval_schedule="regular"),
                 device="cpu", progress=False)
    assert single.config_hash != hashes[1]  # another schedule: another run
    from fmrec_lib.train import run_config_hash
    mc, tc = resolve_configs("fmrec", cfg, dict(FAST, seed=2))
    assert run_config_hash(ds, "fmrec", mc, tc) == hashes[1]
    # different seeds: different initial weights and batches, so different training
    assert results[0].history[0]["loss_loss"] != results[1].history[0]["loss_loss"]


@pytest.mark.parametrize("other,why", [
    (dict(hidden=32), "differ in more than"),
    (dict(alpha=0.0), "differ in more than"),  # the cross-entropy term switched off: another graph
    (dict(time_sampler="uniform"), "differ in more than")])
def test_runs_that_differ_in_structure_are_refused_before_training(other, why):
    ds = cyclic_dataset(20)
    cfg = dict(TINY_FMREC, hidden=16)
    with pytest.raises(ValueError, match=why):
        fit_stacked(ds, "fmrec", [(cfg, FAST), (dict(cfg, **other), FAST)], device="cpu", progress=False)


def test_unstackable_models_and_repeated_runs_are_refused():
    ds = cyclic_dataset(20)
    with pytest.raises(ValueError, match="cannot be stacked"):
        fit_stacked(ds, "gru4rec", [({"hidden": 16, "max_len": 8}, FAST)] * 2, device="cpu", progress=False)
    with pytest.raises(ValueError, match="each run once"):
        fit_stacked(ds, "fmrec", [(TINY_FMREC, FAST)] * 2, device="cpu", progress=False)
    mc, tc = resolve_configs("fmrec", TINY_FMREC, FAST)
    assert stack_key("fmrec", mc, tc) == stack_key("fmrec", *resolve_configs("fmrec", dict(TINY_FMREC, beta=0.9),
                                                                              dict(FAST, seed=5)))
    assert stack_key("fmrec", mc, tc) != stack_key("fmrec", *resolve_configs("fmrec", TINY_FMREC, dict(FAST, lr=1e-3)))


class _Stop(Exception):
    pass


def test_an_interrupted_stack_resumes_to_the_same_numbers(tmp_path):
    ds = cyclic_dataset(80)
    cfg = dict(TINY_FMREC, hidden=16)
    configs = [(cfg, dict(FAST, seed=1)), (dict(cfg, beta=1.0), dict(FAST, seed=2))]
    whole = fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path / "a",
                        results_path=tmp_path / "a.csv", progress=False)

    def stop_at_4(epoch, record):
        if epoch == 4:
            raise _Stop
    with pytest.raises(_Stop):
        fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path / "b",
                    results_path=tmp_path / "b.csv", progress=False, on_epoch_end=stop_at_4)
    (running,) = (tmp_path / "b").glob("fmrec-stack-*.pt")
    (members,) = interrupted_stacks(tmp_path / "b", "fmrec")
    assert members["members"] == [r.config_hash for r in whole] and members["configs"][1][0]["beta"] == 1.0
    resumed = fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path / "b",
                          results_path=tmp_path / "b.csv", progress=False)
    for a, b in zip(whole, resumed):
        assert a.history == b.history and a.test == b.test and a.best_epoch == b.best_epoch
    assert not running.exists() and not list((tmp_path / "b").glob("fmrec-stack-*"))  # the stack is over
    assert read_results(tmp_path / "b.csv")["run_id"].nunique() == 2
    other, _ = stack_paths(tmp_path / "c", "fmrec", [r.config_hash for r in whole])
    other.parent.mkdir()
    checkpoints.save({"kind": "stack", "model": {}, "members": ["x", "y"]}, other)  # a foreign file under its name
    with pytest.raises(checkpoints.CheckpointError, match="another stack"):
        fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path / "c", progress=False)


def test_a_stack_stopped_by_a_deadline_keeps_every_trained_epoch(tmp_path, monkeypatch):
    """A deadline between validations (after epoch 4; the stack validates after 3 and 5) writes the stack's
    checkpoint after epoch 4; the resumed stack trains epochs 5 on and ends with the uninterrupted numbers."""
    from fmrec_lib import stacked
    from fmrec_lib.train import DeadlineReached

    ds = cyclic_dataset(80)
    cfg = dict(TINY_FMREC, hidden=16)
    configs = [(cfg, dict(FAST, seed=1)), (dict(cfg, beta=1.0), dict(FAST, seed=2))]
    whole = fit_stacked(ds, "fmrec", configs, device="cpu", progress=False)
    deadline, at_4, trained = deadline_after_epoch(monkeypatch, stacked)
    with pytest.raises(DeadlineReached):
        fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path, results_path=tmp_path / "r.csv",
                    progress=False, on_epoch_end=at_4, deadline=deadline)
    (running,) = tmp_path.glob("fmrec-stack-*.pt")
    assert trained == [1, 2, 3, 4] and checkpoints.load(running)["epoch"] == 4
    resumed = fit_stacked(ds, "fmrec", configs, device="cpu", checkpoint_dir=tmp_path, results_path=tmp_path / "r.csv",
                          progress=False, on_epoch_end=lambda epoch, record: trained.append(epoch))
    assert trained[4] == 5  # epochs 1-4 are not trained again
    for a, b in zip(whole, resumed):
        assert a.history == b.history and a.test == b.test and a.best_epoch == b.best_epoch


def test_a_run_whose_loss_turns_non_finite_ends_alone(tmp_path):
    """A cross-entropy weight of 1e38 overflows the loss: that run ends with NonFiniteLossError and is
    not recorded; its neighbour in the stack trains on and is recorded as usual."""
    from fmrec_lib.train import NonFiniteLossError

    ds = cyclic_dataset(60)
    cfg = dict(TINY_FMREC, hidden=16)
    ended = []
    results = fit_stacked(ds, "fmrec", [(cfg, FAST), (dict(cfg, alpha=1e38), FAST)], device="cpu",
                          results_path=tmp_path / "runs.csv", progress=False,
                          on_run_end=lambda result, error, k: ended.append((k, type(error).__name__)))
    assert isinstance(results[1], NonFiniteLossError) and "not finite at epoch 1" in str(results[1])
    assert not isinstance(results[0], BaseException) and results[0].epochs_run >= 5
    assert ended[0] == (1, "NonFiniteLossError") and ended[-1] == (0, "NoneType")
    assert set(read_results(tmp_path / "runs.csv")["config_hash"]) == {results[0].config_hash}


def test_the_comparison_tool_sets_new_runs_beside_the_recorded_ones(tmp_path, monkeypatch):
    import importlib.util

    from fmrec_lib import context as context_module
    from fmrec_lib.context import Context
    from fmrec_lib.utils import REPO_ROOT
    from synthetic import write_sequences

    monkeypatch.setattr(context_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(context_module, "LOCAL_ROOT", tmp_path / "repo" / "runs")
    data = write_sequences(cyclic_dataset(60), tmp_path / "toy.txt")
    ctx = Context.create("smoke", "cpu", output_dir=tmp_path / "repo" / "runs", progress=False)  # the CLI's store
    singles = [ctx.run(str(data), "fmrec", seed) for seed in (1, 2)]
    committed = Context.create("smoke", "cpu", progress=False).store.runs
    spec = importlib.util.spec_from_file_location("compare_training", REPO_ROOT / "tools" / "compare_training.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "report.json"
    assert tool.main(["--size", "smoke", "--dataset", str(data), "--seeds", "1", "2", "--device", "cpu",
                      "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    hr = next(r for r in report["rows"] if r["metric"] == "HR@10")
    assert hr["recorded"] == [r.test["HR@10"] for r in singles] and len(hr["new"]) == 2
    assert hr["difference"] == pytest.approx(sum(hr["new"]) / 2 - sum(hr["recorded"]) / 2)
    assert [r["stacked"] for r in report["new_runtime"]] == [2, 2]
    assert read_results(ctx.store.runs)["run_id"].nunique() == 2  # the stack recorded nothing
    assert not committed.exists()  # and nothing was copied into the committed results
    # one by one with a speed setting: a single run on a CPU repeats the recorded one exactly (TF32 is CUDA's)
    assert tool.main(["--size", "smoke", "--dataset", str(data), "--seeds", "1", "2", "--device", "cpu",
                      "--mode", "single", "--speed", "tf32=true", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    hr = next(r for r in report["rows"] if r["metric"] == "HR@10")
    assert hr["new"] == hr["recorded"] and [r["tf32"] for r in report["new_runtime"]] == [True, True]
    assert [r["tf32"] for r in report["recorded_runtime"]] == [False, False]
    assert not committed.exists()
    assert tool.main(["--size", "smoke", "--dataset", str(data), "--seeds", "3", "--device", "cpu"]) == 2  # not recorded
