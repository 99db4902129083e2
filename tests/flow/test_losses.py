import pytest
import torch
import torch.nn.functional as F

from fmrec_lib.flow.losses import (balanced_reconstruction_loss, cross_entropy_loss, history_cells, item_scores, multi_hot,
                              nth_zero_cells, sparse_balanced_reconstruction_loss)


def test_multi_hot_zeroes_padding():
    mh = multi_hot(torch.tensor([[0, 0, 2, 3, 2], [1, 4, 4, 4, 4]]), 6)
    assert mh.tolist() == [[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]]


def _batch(seed=0, B=16, C=200, L=6):
    g = torch.Generator().manual_seed(seed)
    return multi_hot(torch.randint(0, C, (B, L), generator=g), C)


def test_balanced_loss_counts_every_positive():
    target = _batch()
    # error 2 on positives, 0 elsewhere: all positives counted, negatives add nothing
    pred = target * 3
    loss = balanced_reconstruction_loss(pred, target, max_positives=16 * 6)
    assert loss.item() == pytest.approx(4 * target.sum().item() / target.numel())


def test_balanced_loss_draws_about_as_many_zero_cells_as_positives():
    target = _batch()
    pred = torch.ones_like(target)  # error 1 on zero cells only
    n_pos = int(target.sum())
    counts = [balanced_reconstruction_loss(pred, target, 16 * 6, torch.Generator().manual_seed(s)).item() * target.numel()
              for s in range(20)]
    # with replacement from ~3,100 zero cells: a few repeats, never more than the positives
    assert all(0.9 * n_pos <= round(c) <= n_pos for c in counts)
    assert len({round(c, 6) for c in counts}) > 1  # the draw is random


def test_balanced_loss_zero_when_prediction_is_target():
    target = _batch(1)
    assert balanced_reconstruction_loss(target.clone(), target, 96).item() == 0.0


def test_cross_entropy_matches_torch_and_masks_padding_in_clean_profile():
    g = torch.Generator().manual_seed(0)
    x, table, y = torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g), torch.tensor([1, 2, 3, 9])
    assert torch.allclose(cross_entropy_loss(x, table, y), F.cross_entropy(x @ table.T, y))
    logits = x @ table.T
    logits[:, 0] = -torch.inf
    assert torch.allclose(cross_entropy_loss(x, table, y, mask_padding=True), F.cross_entropy(logits, y))


def _histories(seed=0, B=12, L=7, C=15):
    """Histories with repeated items and heavy left padding (some rows all padding but one item)."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, C, (B, L), generator=g)
    items[:, :3] = torch.randint(1, 4, (B, 3), generator=g)  # repeats within a row
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[:3] = 1
    return torch.where(torch.arange(L)[None] >= L - lengths[:, None], items, 0)


def test_nth_zero_cells_equal_the_dense_search_for_every_rank():
    C = 15
    for seed in range(5):
        hist = _histories(seed, C=C)
        B = hist.shape[0]
        if seed == 1:
            hist[-1, -1] = C - 1  # the batch's last cell is a positive
        zero_flat = (multi_hot(hist, C) == 0).flatten()
        n_zero = int(zero_flat.sum())
        r = torch.arange(1, n_zero + 2)  # n_zero + 1: the float32 rounding case, clamped to the last cell
        dense = torch.searchsorted(zero_flat.cumsum(0), r).clamp(max=B * C - 1)
        _, cells, positive = history_cells(hist, C)
        assert int(positive.sum()) == B * C - n_zero
        assert torch.equal(nth_zero_cells(cells, positive, r, C, B * C), dense)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_reconstruction_loss_equals_the_dense_one_with_its_gradients(seed):
    C, H = 15, 6
    hist = _histories(seed, C=C)
    g = torch.Generator().manual_seed(100 + seed)
    features, weight, bias = (torch.randn(*shape, generator=g, requires_grad=True)
                              for shape in ((hist.shape[0], H), (C, H), (C,)))
    dense = balanced_reconstruction_loss(features @ weight.T + bias, multi_hot(hist, C), hist.numel(),
                                         torch.Generator().manual_seed(seed))
    dense_grads = torch.autograd.grad(dense, (features, weight, bias))
    sparse = sparse_balanced_reconstruction_loss(features, weight, bias, hist, hist.numel(),
                                                 torch.Generator().manual_seed(seed))
    sparse_grads = torch.autograd.grad(sparse, (features, weight, bias))
    assert torch.allclose(sparse, dense, rtol=1e-6, atol=0)
    for a, b in zip(sparse_grads, dense_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # the same cells: another draw gives another loss, in both
    other = sparse_balanced_reconstruction_loss(features, weight, bias, hist, hist.numel(),
                                                torch.Generator().manual_seed(seed + 50))
    assert not torch.allclose(other, sparse, rtol=1e-6, atol=0)


def test_cross_entropy_stays_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    shared = F.normalize(torch.randn(128, generator=g), dim=0)
    # every logit about 100 (bf16 steps of 0.5 there), the differences between items of order 1
    table = 7.0 * shared + 0.1 * torch.randn(500, 128, generator=g)
    targets = torch.randint(0, 500, (64,), generator=g)
    x1_hat = 14.0 * shared + table[targets] - 7.0 * shared + 0.1 * torch.randn(64, 128, generator=g)
    reference = F.cross_entropy(x1_hat @ table.T, targets)
    assert 90 < (x1_hat @ table.T).mean() < 110 and reference > 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = cross_entropy_loss(x1_hat, table, targets)
        bf16 = F.cross_entropy(x1_hat @ table.T, targets, reduction="none")  # what a bf16 matmul gives
        scores = item_scores(x1_hat, table)
    assert amp.dtype == torch.float32 and scores.dtype == torch.float32
    assert torch.allclose(amp, reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(scores, x1_hat @ table.T)
    per_sample = F.cross_entropy(x1_hat @ table.T, targets, reduction="none")
    assert (bf16 - per_sample).abs().max() > 0.05  # the test would catch bf16 logits
