import pytest
import torch

from fmrec_lib.data import build_dataset
from fmrec_lib.models import FMRec, FMRecConfig
from fmrec_lib.models.transformer import TransformerBlock
from fmrec_lib.flow.solvers import SamplerConfig
from fmrec_lib.training.train import evaluate_model

SMALL = dict(hidden=32, heads=4, max_len=8, rec_hidden=(16, 32), sampler=SamplerConfig(steps=4))


def histories():
    return torch.tensor([[0, 0, 0, 3, 5, 7, 1, 2], [0, 0, 0, 0, 0, 0, 4, 9], [1, 2, 3, 4, 5, 6, 7, 8]])


def model(**overrides):
    torch.manual_seed(0)
    return FMRec(20, FMRecConfig(**{**SMALL, **overrides}))


def test_loss_terms_and_shapes():
    m = model()
    terms = m.loss(histories(), torch.tensor([4, 5, 6]))
    assert set(terms) == {"fm", "ce", "rec", "loss"} and all(v.dim() == 0 for v in terms.values())
    assert terms["loss"].item() == pytest.approx((terms["fm"] + 0.2 * terms["ce"] + 0.4 * terms["rec"]).item(), rel=1e-5)
    terms["loss"].backward()
    assert m.item_emb.weight.grad[0].abs().sum() > 0  # the padding row learns like any row
    m.eval()
    assert m.score(histories(), torch.Generator().manual_seed(0)).shape == (3, 21)


def test_zero_weights_skip_their_terms():
    m = model(alpha=0.0, beta=0.0)
    called = []
    m.reconstructor.register_forward_hook(lambda *a: called.append(1))
    terms = m.loss(histories(), torch.tensor([4, 5, 6]))
    assert set(terms) == {"fm", "loss"} and not called


def test_velocity_prediction_regresses_the_velocity():
    m = model(prediction="velocity")
    assert set(m.loss(histories(), torch.tensor([4, 5, 6]))) == {"fm", "ce", "rec", "loss"}
    with pytest.raises(ValueError, match="prediction"):
        FMRecConfig(prediction="eps")


def _output_with_padding_row(profile, attention, padding_row):
    m = model(profile=profile, attention=attention, delta=0.0).eval()
    with torch.no_grad():
        m.item_emb.weight[0] = padding_row
        x_t, t = torch.ones(3, 32), torch.full((3,), 0.5)
        return m(x_t, t, histories())


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_profiles_differ_in_what_real_positions_see(attention):
    a, b = torch.zeros(32), torch.randn(32, generator=torch.Generator().manual_seed(3)) * 5
    # clean: padding keys are masked, so the padding embedding cannot change the output
    assert torch.allclose(_output_with_padding_row("clean", attention, a), _output_with_padding_row("clean", attention, b), atol=1e-5)
    # paper: real positions attend to padded ones (the authors' query-row mask)
    assert not torch.allclose(_output_with_padding_row("paper", attention, a), _output_with_padding_row("paper", attention, b), atol=1e-3)


@pytest.mark.parametrize("profile", ["paper", "clean"])
def test_sdpa_equals_reference_attention_in_eval(profile):
    x_t, t = torch.randn(3, 32), torch.full((3,), 0.3)
    outs = []
    for attention in ("sdpa", "math"):
        m = model(profile=profile, attention=attention, delta=0.0).eval()
        outs.append(m(x_t, t, histories()))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("mask_mode", ["query", "key"])
def test_last_row_shortcut_equals_full_block(mask_mode):
    torch.manual_seed(0)
    block = TransformerBlock(32, 4, 4, 0.1, mask_mode, "sdpa", 1e-12).eval()
    x, pad = torch.randn(3, 8, 32), histories() == 0
    assert torch.allclose(block(x, pad)[:, -1:], block(x, pad, last_only=True), atol=1e-5)


def test_same_generator_seed_same_scores_whatever_the_global_rng():
    m = model().eval()
    a = m.score(histories(), torch.Generator().manual_seed(7))
    torch.manual_seed(123)
    torch.rand(1000)
    b = m.score(histories(), torch.Generator().manual_seed(7))
    c = m.score(histories(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_evaluation_is_reproducible_and_independent_of_training_draws():
    seqs = {str(u): [str((u + i) % 20 + 1) for i in range(6)] for u in range(30)}
    ds = build_dataset(seqs, "toy")
    m = model()
    first = evaluate_model(m, ds, "val", seed=5)
    m.loss(*[x[:4] for x in ds.training_samples(8)])  # draws from the global RNG
    assert evaluate_model(m, ds, "val", seed=5) == first
    assert m.training  # evaluation restores the mode


def test_out_of_range_and_bad_ids_are_refused():
    m = model()
    with pytest.raises(ValueError, match=r"0\.\.20"):
        m.check_inputs(torch.tensor([[0, 21]]))
    with pytest.raises(TypeError):
        m.check_inputs(torch.tensor([[0.0, 1.0]]))


def test_generation_options():
    m = model().eval()
    g = lambda: torch.Generator().manual_seed(0)
    sol = m.generate(histories(), g(), SamplerConfig(steps=3, method="heun", update="textbook"), return_trajectory=True)
    assert sol.n_calls == 5 and len(sol.trajectory) == 4
    assert m.n_model_calls() == 4 and m.n_model_calls(SamplerConfig(steps=3, method="heun", update="textbook")) == 5
    det = m.generate(histories(), g(), SamplerConfig(steps=3)).x
    sto = m.generate(histories(), g(), SamplerConfig(steps=3, method="stochastic", noise_scale=1.0)).x
    assert not torch.allclose(det, sto)
    # the config's sampler is the default of the per-call one: one route for each option
    assert torch.equal(m.generate(histories(), g()).x, m.generate(histories(), g(), SamplerConfig(steps=4)).x)
    with pytest.raises(ValueError, match="steps must be"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="noise_scale > 0 needs"):
        SamplerConfig(noise_scale=0.5)


def test_no_flow_input_variant_ignores_x_t_and_t_and_needs_one_call():
    m = model(flow_input=False).eval()
    h = histories()
    a = m(torch.randn(3, 32), torch.full((3,), 0.1), h)
    b = m(torch.randn(3, 32) * 10, torch.full((3,), 0.9), h)
    assert torch.allclose(a, b)  # the network cannot see x_t or t
    assert m.n_model_calls() == 1 and m.generate(h, torch.Generator().manual_seed(0)).n_calls == 1
    assert torch.allclose(m.generate(h, torch.Generator().manual_seed(0)).x, a)
    with pytest.raises(ValueError, match="velocity prediction needs the flow input"):
        FMRecConfig(flow_input=False, prediction="velocity")


def test_fm_weight_zero_removes_the_flow_matching_term():
    t0 = model(fm_weight=0.0).loss(histories(), torch.tensor([4, 5, 6]))
    assert t0["fm"].item() > 0  # still reported, but not in the total
    assert t0["loss"].item() == pytest.approx((0.2 * t0["ce"] + 0.4 * t0["rec"]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="nothing that trains"):
        FMRecConfig(fm_weight=0.0, alpha=0.0)


@pytest.mark.parametrize("bad", [dict(hidden=0), dict(max_len=0), dict(heads=3), dict(dropout=1.0), dict(rec_hidden=(0,)),
                                 dict(delta=-1.0)])
def test_impossible_settings_are_refused_at_construction(bad):
    with pytest.raises(ValueError):
        FMRecConfig(**{**SMALL, **bad})


def test_ffn_dropout_is_stochastic_in_training_and_off_in_eval():
    block = TransformerBlock(16, 2, 4, 0.1, "key", "sdpa", 1e-12, ffn_dropout=True, init="xavier-zero-bias")
    x, pad = torch.randn(3, 5, 16), torch.zeros(3, 5, dtype=torch.bool)
    assert isinstance(block.ffn[2], torch.nn.Dropout) and block.ffn[2].p == 0.1  # between GELU and the 2nd Linear
    block.train()
    h = torch.randn(3, 5, 16)
    assert not torch.equal(block.ffn(h), block.ffn(h))
    block.eval()
    assert torch.equal(block.ffn(h), block.ffn(h)) and torch.equal(block(x, pad), block(x, pad))
    assert len(TransformerBlock(16, 2, 4, 0.1, "causal", "sdpa", 1e-8).ffn) == 3  # SASRec: no inner dropout


@pytest.mark.parametrize("init,zero_bias", [("xavier-zero-bias", True), ("xavier", False)])
def test_initialisation_is_xavier_normal(init, zero_bias):
    torch.manual_seed(0)
    d = 128
    blocks = [TransformerBlock(d, 4, 4, 0.1, "query", "sdpa", 1e-12, ffn_dropout=True, init=init) for _ in range(4)]
    for get, fan_in, fan_out in ((lambda b: b.attn.proj, d, d), (lambda b: b.ffn[0], d, 4 * d),
                                 (lambda b: b.ffn[-1], 4 * d, d)):
        w = torch.cat([get(b).weight.detach().flatten() for b in blocks])
        expected = (2.0 / (fan_in + fan_out)) ** 0.5
        # sd of a sample sd is about sd / sqrt(2n): 5 of those is far beyond chance
        assert abs(w.std().item() - expected) < 5 * expected / (2 * w.numel()) ** 0.5
        assert abs(w.mean().item()) < 5 * expected / w.numel() ** 0.5
    biases = torch.cat([torch.cat([b.ffn[0].bias, b.ffn[-1].bias]).detach() for b in blocks])
    assert bool((biases == 0).all()) == zero_bias
    # PyTorch's default for the untouched Q/K/V: uniform with bound 1/sqrt(fan_in)
    qkv = torch.cat([b.attn.qkv.weight.detach().flatten() for b in blocks])
    assert qkv.abs().max() <= d ** -0.5 and abs(qkv.std().item() - d ** -0.5 / 3 ** 0.5) < 0.01 * d ** -0.5


def test_fmrec_and_diffurec_use_their_codes_initialisation():
    from fmrec_lib.models import DiffuRec, DiffuRecConfig

    fm = model()
    assert fm.config.init == "xavier-zero-bias" and fm.config.ffn_dropout
    assert all((b.ffn[0].bias == 0).all() and (b.ffn[-1].bias == 0).all() for b in fm.net.blocks)
    dr = DiffuRec(20, DiffuRecConfig(hidden=32, heads=4, max_len=8))
    assert dr.config.init == "xavier" and not (dr.net.blocks[0].ffn[-1].bias == 0).all()
    assert isinstance(dr.net.blocks[0].ffn[2], torch.nn.Dropout)


@pytest.mark.parametrize("profile", ["paper", "clean"])
def test_sparse_reconstruction_loss_equals_the_dense_one_in_the_model(profile):
    # repeated items in a history and heavy padding; the same seed gives the same draws
    hist = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 20], [0, 0, 0, 0, 4, 4, 4, 9], [1, 2, 3, 4, 5, 6, 7, 8],
                         [0, 0, 0, 0, 0, 0, 11, 11], [3, 3, 3, 3, 3, 3, 3, 3]])
    targets = torch.tensor([4, 5, 6, 7, 20])
    results = {}
    for rec_loss in ("dense", "sparse"):
        m = model(profile=profile, rec_loss=rec_loss)
        torch.manual_seed(1)
        terms = m.loss(hist, targets)
        terms["loss"].backward()
        results[rec_loss] = terms, {n: p.grad for n, p in m.named_parameters()}
    (dense, dense_grads), (sparse, sparse_grads) = results["dense"], results["sparse"]
    assert torch.equal(dense["fm"], sparse["fm"]) and torch.equal(dense["ce"], sparse["ce"])
    assert torch.allclose(dense["rec"], sparse["rec"], rtol=1e-6, atol=0)
    assert dense_grads.keys() == sparse_grads.keys()
    for name, grad in dense_grads.items():
        assert torch.allclose(sparse_grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_run_specific_hyperparameters_do_not_recompile_the_loss():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    for overrides in ({}, dict(alpha=0.1), dict(beta=0.3, delta=0.01), dict(time_eps=1e-2)):
        m = model(**overrides)
        torch.compile(m.loss, backend=counter, dynamic=False)(histories(), torch.tensor([4, 5, 6]))
    assert counter.frame_count == 1  # one graph, traced once, for all four models
    m = model(alpha=0.0)  # a term switched off is another graph
    torch.compile(m.loss, backend=counter, dynamic=False)(histories(), torch.tensor([4, 5, 6]))
    assert counter.frame_count == 2
    torch._dynamo.reset()


def test_hyperparameter_buffers_follow_the_config_and_stay_out_of_checkpoints():
    m = model(alpha=0.3, beta=0.5, delta=0.02, time_eps=1e-2)
    assert (m.alpha.item(), m.beta.item(), m.net.delta.item()) == pytest.approx((0.3, 0.5, 0.02))
    assert m.time_scale.item() == pytest.approx(99.0)
    assert not {"alpha", "beta", "time_eps", "time_scale", "net.delta"} & set(m.state_dict())
