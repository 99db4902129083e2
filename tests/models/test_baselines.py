import pytest
import torch

from fmrec_lib.models import (DiffuRec, DiffuRecConfig, GRU4Rec, GRU4RecConfig, SASRec, SASRecConfig, build_model,
                              model_config_class)
from fmrec_lib.models.diffurec import beta_schedule
from fmrec_lib.models.transformer import causal_mask
from fmrec_lib.training.train import fit
from synthetic import cyclic_dataset

TINY = {
    "gru4rec": dict(embedding=16, hidden=32, max_len=8),
    "sasrec": dict(hidden=16, heads=1, max_len=8),
    "diffurec": dict(hidden=16, heads=2, max_len=8, diffusion_steps=6),
}
HIST = torch.tensor([[0, 0, 0, 3, 5, 7, 1, 2], [0, 0, 0, 0, 0, 0, 4, 9]])


@pytest.mark.parametrize("name", list(TINY))
def test_forward_shapes_and_loss(name):
    ds = cyclic_dataset(20, n_items=12)
    torch.manual_seed(0)
    model = build_model(name, ds, model_config_class(name)(**TINY[name]))
    terms = model.loss(HIST, torch.tensor([4, 10]))
    assert terms["loss"].dim() == 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    model.eval()
    scores = model.score(HIST, torch.Generator().manual_seed(0))
    assert scores.shape == (2, 13) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", list(TINY))
def test_short_training_beats_popularity(name):
    ds = cyclic_dataset()
    pop = fit(ds, "pop", {}, {}, device="cpu", progress=False)
    run = fit(ds, name, TINY[name], dict(epochs=9, batch_size=64, eval_every=4, lr=3e-3), device="cpu", progress=False)
    assert run.test["HR@10"] > pop.test["HR@10"] + 20


def test_sasrec_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    m = SASRec(12, SASRecConfig(hidden=16, max_len=8)).eval()
    a = m.user_vector(HIST)
    changed = HIST.clone()
    changed[0, :3] = 0  # already padding: nothing changes
    assert torch.allclose(a, m.user_vector(changed))
    mask = causal_mask(torch.tensor([[True, False, False]]))
    assert mask[0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_gru4rec_depends_on_order():
    torch.manual_seed(0)
    m = GRU4Rec(12, GRU4RecConfig(embedding=8, hidden=8, max_len=8)).eval()
    assert not torch.allclose(m.user_vector(HIST), m.user_vector(HIST.flip(1)))


def test_diffurec_schedule_and_reproducible_sampling():
    betas = beta_schedule("trunc_lin", 32)
    assert betas.shape == (32,) and (betas.diff() > 0).all()
    assert betas[0].item() == pytest.approx(0.0001 * 1000 / 32 + 0.01) and betas[-1].item() == pytest.approx(0.02 * 1000 / 32 + 0.01)
    assert beta_schedule("trunc_lin", 10)[-1].item() == pytest.approx(0.001 * 100 + 0.01)  # end truncated below 1
    with pytest.raises(ValueError, match="unknown schedule"):
        beta_schedule("cosine", 4)
    torch.manual_seed(0)
    m = DiffuRec(12, DiffuRecConfig(hidden=16, heads=2, max_len=8, diffusion_steps=5)).eval()
    a = m.score(HIST, torch.Generator().manual_seed(1))
    assert torch.equal(a, m.score(HIST, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, m.score(HIST, torch.Generator().manual_seed(2)))  # ancestral sampling is random
    assert m.n_model_calls() == 5


def test_sasrec_sdpa_equals_reference_attention():
    outs = []
    for attention in ("sdpa", "math"):
        torch.manual_seed(0)
        outs.append(SASRec(12, SASRecConfig(hidden=16, max_len=8, attention=attention)).eval().user_vector(HIST))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_diffurec_time_input_is_the_rescaled_step(monkeypatch):
    import fmrec_lib.models.fusion as fusion

    seen = []
    real = fusion.timestep_embedding
    monkeypatch.setattr(fusion, "timestep_embedding", lambda t, dim: seen.append(t.clone()) or real(t, dim))
    torch.manual_seed(0)
    m = DiffuRec(12, DiffuRecConfig(hidden=16, heads=2, max_len=8, diffusion_steps=32)).eval()
    m.score(HIST, torch.Generator().manual_seed(0))
    assert [float(t[0]) for t in seen] == [s * 1000 / 32 for s in reversed(range(32))]  # 968.75 ... 0
    seen.clear()
    m.train()
    m.loss(HIST, torch.tensor([4, 10]))
    assert all(float(v) in {s * 1000 / 32 for s in range(32)} for v in seen[0])
    index = DiffuRec(12, DiffuRecConfig(hidden=16, heads=2, max_len=8, diffusion_steps=32, time_input="index"))
    assert torch.equal(index.time_value(torch.arange(32)), torch.arange(32).float())


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_diffurec_reverse_step_noise(variance):
    """Each reverse step's input is the posterior mean plus noise of variance beta_s (s >= 1),
    and the last step (s = 0) adds none: checked with a stand-in network that predicts 0."""
    T = 5
    m = DiffuRec(12, DiffuRecConfig(hidden=16, heads=2, max_len=8, diffusion_steps=T, reverse_variance=variance)).eval()
    inputs = []

    def zero_net(x, time_value, h, pad, generator=None, need_mid=False):
        inputs.append(x.clone())
        return torch.zeros_like(x), None

    m.net.forward = zero_net
    final = m.generate(HIST, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, generator=g)
    betas = beta_schedule("trunc_lin", T)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    var = betas if variance == "beta" else betas * (1 - abar_prev) / (1 - abar)
    ct = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)
    for step, s in enumerate(reversed(range(T))):
        assert torch.allclose(inputs[step], x, atol=1e-6)
        x = float(ct[s]) * x + (float(var[s].sqrt()) * torch.randn(2, 16, generator=g) if s > 0 else 0)
    assert torch.equal(final, torch.zeros(2, 16)) and float(ct[0]) == 0.0  # s = 0: the posterior mean is x0_hat
    if variance == "beta":
        assert torch.allclose(m.reverse_std[1:] ** 2, betas[1:].float())


def test_the_device_of_a_model_without_parameters_is_its_buffers():
    from fmrec_lib.training.train import model_device

    pop = build_model("pop", cyclic_dataset(10), model_config_class("pop")()).to("meta")
    assert list(pop.parameters()) == [] and model_device(pop).type == "meta"  # evaluation follows it to the GPU
