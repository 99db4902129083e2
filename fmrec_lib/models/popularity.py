"""Popularity: every user gets the items most frequent in the training sequences (the floor)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .base import Recommender


@dataclass
class PopularityConfig:
    profile: Literal["paper", "clean"] = "paper"
    max_len: int = 50


class Popularity(Recommender):
    name = "pop"
    trainable = False

    def __init__(self, num_items: int, config: PopularityConfig | None = None, counts: torch.Tensor | None = None):
        super().__init__(num_items, config or PopularityConfig())
        counts = torch.zeros(num_items + 1) if counts is None else counts.float()
        if counts.shape != (num_items + 1,):
            raise ValueError(f"counts must have shape ({num_items + 1},), got {tuple(counts.shape)}")
        self.register_buffer("counts", counts)

    def score(self, histories: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.counts.expand(histories.shape[0], -1)
