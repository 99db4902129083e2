"""FMRec's loss terms: ``L = L_FM + alpha L_CE + beta L_rec`` (METHOD.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import generator_kwargs


def flow_matching_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the network output and its regression target (B, d): the clean item
    embedding ``x_1`` for x1 prediction, the velocity ``x_1 - x_0`` for v prediction."""
    return F.mse_loss(prediction, target)


def item_scores(x: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
    """Scores ``x @ E.T`` (B, N + 1) of vectors x (B, d) against the item table E (N + 1, d),
    always in float32, also under autocast.

    FMRec's scores reach about 100, where bfloat16 is 0.25 to 0.5 apart: a bf16 matmul would
    round the logits of the cross-entropy and the ranking scores by more than their gaps."""
    with torch.autocast(x.device.type, enabled=False):
        return x.float() @ item_table.float().T


def cross_entropy_loss(x1_hat: torch.Tensor, item_table: torch.Tensor, targets: torch.Tensor,
                       mask_padding: bool = False) -> torch.Tensor:
    """Cross-entropy of the scores ``x1_hat @ E.T`` (B, N + 1) against the target items (B,),
    logits and softmax in float32 whatever the autocast state (:func:`item_scores`)."""
    logits = item_scores(x1_hat, item_table)
    with torch.autocast(logits.device.type, enabled=False):
        if mask_padding:
            logits = logits.masked_fill(_padding_column(logits), float("-inf"))
        return F.cross_entropy(logits, targets)


def _padding_column(logits: torch.Tensor) -> torch.Tensor:
    col = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    col[0] = True
    return col


def multi_hot(histories: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, L) item ids -> (B, num_classes) float multi-hot, column 0 (padding) zeroed."""
    out = torch.zeros(histories.shape[0], num_classes, device=histories.device).scatter(1, histories, 1.0)
    out[:, 0] = 0.0
    return out


def draw_zero_ranks(n_draws: int, n_zero: torch.Tensor, device: torch.device | str,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """1-based ranks r (n_draws,) of zero cells drawn uniformly with replacement among ``n_zero``
    (a 0-dim int64 tensor): ``r = floor(u n_zero) + 1``, u ~ U(0, 1) in float32. The product is
    rounded in float32, so r can reach n_zero + 1 (such a draw lands on the batch's last cell)."""
    return (torch.rand(n_draws, device=device, **generator_kwargs(generator)) * n_zero).floor().long() + 1


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
    r = draw_zero_ranks(max_positives, n_zero, target.device, generator)
    idx = torch.searchsorted(zeros_so_far, r).clamp(max=zero_flat.numel() - 1)
    keep = (torch.arange(max_positives, device=target.device) < n_pos).to(prediction.dtype)
    chosen = torch.zeros(zero_flat.numel(), device=target.device, dtype=prediction.dtype).index_add(0, idx, keep)
    mask = positive.flatten() | (chosen > 0)
    squared = (prediction.flatten() - target.flatten()) ** 2
    return (squared * mask).sum() / target.numel()


def history_cells(histories: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The multi-hot's history cells: each row's items sorted (B, L), their flat cell ids
    ``b C + item`` (B * L,), sorted overall since row b's ids lie in [b C, (b + 1) C), and which
    of them are positives counted once (B * L,): a row's distinct items, never the padding 0."""
    items, _ = histories.sort(dim=1)  # (B, L)
    first = torch.ones_like(items, dtype=torch.bool)
    first[:, 1:] = items[:, 1:] != items[:, :-1]
    rows = torch.arange(histories.shape[0], device=histories.device)[:, None]
    return items, (rows * num_classes + items).flatten(), (first & (items != 0)).flatten()


def nth_zero_cells(cells: torch.Tensor, positive: torch.Tensor, r: torch.Tensor, num_classes: int,
                   numel: int) -> torch.Tensor:
    """Flat ids (D,) of the r-th zero cells (1-based ranks r, (D,)) of a (B, C) multi-hot with
    ``numel = B C`` cells, found from its sorted history cells (:func:`history_cells`) without
    building it; equal to ``searchsorted(cumsum(zero_flat), r).clamp(max=numel - 1)``.

    With ``Z(c)`` the number of zero cells before cell c, the r-th zero cell is
    ``r - 1 + #{positives p : Z(p) <= r - 1}``. Along the sorted cells
    ``Z = cell - #{positives before it}`` is non-decreasing, so the count is a searchsorted;
    a repeated item's positive is its first copy, and a padding cell (column 0) is no positive.
    """
    n_positive_upto = positive.cumsum(0)  # (B * L,) positives at or before each entry
    is_item = (cells % num_classes != 0).long()
    zeros_before = cells - n_positive_upto + is_item  # Z(cell), (B * L,)
    upto = torch.searchsorted(zeros_before, r - 1, right=True)  # entries with Z <= r - 1
    n_positive_upto = torch.cat([n_positive_upto.new_zeros(1), n_positive_upto])
    return (r - 1 + n_positive_upto[upto]).clamp(max=numel - 1)


def sparse_balanced_reconstruction_loss(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                        histories: torch.Tensor, max_positives: int,
                                        generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`balanced_reconstruction_loss` of ``features @ weight.T + bias`` (B, C) against
    ``multi_hot(histories, C)``, with the output layer evaluated only at the cells it reads.

    features (B, H): the reconstructor's last hidden layer; weight (C, H) and bias (C,): its
    output layer; histories (B, L). The candidate cells have static sizes: the B x L history
    cells (each distinct item of a row once) and the ``max_positives`` drawn zero cells (the same
    draws from the same generator as the dense loss; duplicates once; those beyond the number of
    positives discarded). Cost: (B L + max_positives) H multiply-adds instead of B C H, but as
    gathers of H-wide rows, which move more memory than the GEMM: slower on CPU (docs/performance.md).
    """
    B = histories.shape[0]
    C = weight.shape[0]
    numel = B * C
    items, cells, positive = history_cells(histories, C)
    n_pos = positive.sum()
    r = draw_zero_ranks(max_positives, numel - n_pos, histories.device, generator)
    drawn = nth_zero_cells(cells, positive, r, C, numel)
    keep = torch.arange(max_positives, device=histories.device) < n_pos
    # dedupe the kept draws (with replacement) by sorting, discarded ones sort last as numel
    drawn, _ = torch.where(keep, drawn, numel).sort()
    first = torch.ones_like(keep)
    first[1:] = drawn[1:] != drawn[:-1]
    # a draw is a zero cell, except the rounding case r = n_zero + 1 clamped to the last cell
    last_is_positive = cells[-1] == numel - 1  # rows are sorted: the last entry is row B-1's largest item
    counted = first & (drawn < numel) & ~((drawn == numel - 1) & last_is_positive)
    drawn = drawn.clamp(max=numel - 1)
    draw_rows, draw_items = drawn // C, drawn % C  # (D,)
    pred_pos = torch.bmm(F.embedding(items, weight), features[:, :, None]).squeeze(-1) + bias[items]  # (B, L)
    pred_drawn = (F.embedding(draw_rows, features) * F.embedding(draw_items, weight)).sum(-1) + bias[draw_items]  # (D,)
    squared = ((pred_pos - 1.0) ** 2).flatten() * positive
    return (squared.sum() + (pred_drawn ** 2 * counted).sum()) / numel
