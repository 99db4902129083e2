"""What every recommender in the harness provides to training and evaluation."""
from __future__ import annotations

import torch
from torch import nn

from ..evaluation.metrics import check_profile


class Recommender(nn.Module):
    """A sequential recommender over items 1..N (0 = padding).

    ``loss(inputs, targets)`` returns a dict of scalar tensors with the total under ``"loss"``;
    ``score(histories, generator)`` returns (B, N + 1) scores for left-padded histories (B, L).
    """

    name: str = "recommender"
    trainable: bool = True
    # Part of every run's identity: bumped whenever what the model computes or how it trains
    # changes without a config field saying so, so results of the old code are never reused.
    version: int = 1
    # Parameters only the training loss reads (left out of the saved selected model).
    training_only: tuple[str, ...] = ()

    def __init__(self, num_items: int, config):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        check_profile(getattr(config, "profile", "paper"))
        self.num_items = num_items
        self.config = config

    def check_inputs(self, histories: torch.Tensor) -> None:
        """Ids must lie in 0..N. A host sync: call it outside the training hot path."""
        if histories.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"histories must be integer item ids, got {histories.dtype}")
        if histories.numel() and (int(histories.min()) < 0 or int(histories.max()) > self.num_items):
            raise ValueError(f"item ids must lie in 0..{self.num_items} (0 = padding), got "
                             f"{int(histories.min())}..{int(histories.max())}")

    def n_model_calls(self) -> int:
        """Network evaluations per scored batch (1 for a one-shot model)."""
        return 1

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, histories: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError
