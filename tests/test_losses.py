import pytest
import torch
import torch.nn.functional as F

from fmrec_lib.losses import balanced_reconstruction_loss, cross_entropy_loss, multi_hot


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
