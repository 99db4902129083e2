"""FMRec's loss terms: ``L = L_FM + alpha L_CE + beta L_rec`` (METHOD.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_matching_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the network output and its regression target (B, d): the clean item
    embedding ``x_1`` for x1 prediction, the velocity ``x_1 - x_0`` for v prediction."""
    return F.mse_loss(prediction, target)


def cross_entropy_loss(x1_hat: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                       mask_padding: bool = False) -> torch.Tensor:
    """Cross-entropy of the scores ``x1_hat @ E.T`` (B, N + 1) against the target items (B,)."""
    logits = x1_hat @ item_table.T
    if mask_padding:
        logits = logits.masked_fill(_padding_column(logits), float("-inf"))
    return F.cross_entropy(logits, targets)


def _padding_column(logits: torch.Tensor) -> torch.Tensor:
    col = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    col[0] = True
    return col


def multi_hot(histories: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, L) item ids -> (B, num_classes) float multi-hot, column 0 (padding) zeroed."""
    out = torch.zeros(histories.shape[0], num_classes, device=histories.device)
    out.scatter_(1, histories, 1.0)
    out[:, 0] = 0.0
    return out


def balanced_reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, max_positives: int,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Squared error over every positive cell of the multi-hot ``target`` (B, C) plus as many
    zero cells of the batch drawn uniformly with replacement, divided by all B x C cells.

    ``max_positives`` bounds the number of positives (B x max_len) so the draw has a static
    size: no host sync. Draws beyond the true count are discarded on the device.
    """
    positive = target > 0
    zero_flat = (~positive).flatten()
    n_pos = positive.sum()
    n_zero = zero_flat.sum()
    # r-th zero cell (1-based r) is the first index where the running count of zeros reaches r.
    zeros_so_far = zero_flat.cumsum(0)
    r = (torch.rand(max_positives, device=target.device, generator=generator) * n_zero).floor().long() + 1
    idx = torch.searchsorted(zeros_so_far, r).clamp_(max=zero_flat.numel() - 1)
    keep = (torch.arange(max_positives, device=target.device) < n_pos).to(prediction.dtype)
    chosen = torch.zeros(zero_flat.numel(), device=target.device, dtype=prediction.dtype).index_add_(0, idx, keep)
    mask = positive.flatten() | (chosen > 0)
    squared = (prediction.flatten() - target.flatten()) ** 2
    return (squared * mask).sum() / target.numel()
