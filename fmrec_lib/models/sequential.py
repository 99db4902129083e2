"""Cross-entropy sequential baselines: GRU4Rec and SASRec.

Both read the same left-padded histories as FMRec, produce a user vector from the last
position, score every item by a dot product with the (tied) item table and train with
cross-entropy over all N + 1 rows (the padding row is masked in the clean profile).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import check_settings
from ..flow.losses import cross_entropy_loss, item_scores
from .base import Recommender
from .transformer import TransformerBlock


class _CrossEntropyRecommender(Recommender):
    item_emb: nn.Embedding

    def user_vector(self, histories: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = cross_entropy_loss(self.user_vector(inputs), self.item_emb.weight, targets,
                                mask_padding=self.config.profile == "clean")
        return {"ce": ce, "loss": ce}

    @torch.no_grad()
    def score(self, histories: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return item_scores(self.user_vector(histories), self.item_emb.weight)


@dataclass
class GRU4RecConfig:
    """Defaults of RecBole's GRU4Rec (Hidasi et al. 2016 with a cross-entropy loss)."""

    profile: Literal["paper", "clean"] = "paper"
    embedding: int = 64
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.3
    max_len: int = 50

    def __post_init__(self):
        check_settings(self, positive=("embedding", "hidden", "layers", "max_len"), probabilities=("dropout",))


class GRU4Rec(_CrossEntropyRecommender):
    name = "gru4rec"

    def __init__(self, num_items: int, config: GRU4RecConfig | None = None):
        config = config or GRU4RecConfig()
        super().__init__(num_items, config)
        self.item_emb = nn.Embedding(num_items + 1, config.embedding, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, 0.0, 0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding, config.hidden, config.layers, batch_first=True)
        self.out = nn.Linear(config.hidden, config.embedding)

    def user_vector(self, histories: torch.Tensor) -> torch.Tensor:
        # Left padding with the zero padding embedding: the GRU reads zeros, then the items,
        # and its state after the last item is the user.
        states, _ = self.gru(self.dropout(self.item_emb(histories)))  # (B, L, hidden)
        return self.out(states[:, -1])


@dataclass
class SASRecConfig:
    """Kang & McAuley 2018: two causal self-attention blocks, learned positions."""

    profile: Literal["paper", "clean"] = "paper"
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    attention: Literal["sdpa", "math"] = "sdpa"

    def __post_init__(self):
        check_settings(self, positive=("hidden", "blocks", "heads", "max_len"), probabilities=("dropout",))
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")


class SASRec(_CrossEntropyRecommender):
    name = "sasrec"

    def __init__(self, num_items: int, config: SASRecConfig | None = None):
        config = config or SASRecConfig()
        super().__init__(num_items, config)
        d = config.hidden
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        for emb in (self.item_emb, self.pos_emb):
            nn.init.normal_(emb.weight, 0.0, 0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d, config.heads, 4, config.dropout, "causal", config.attention, 1e-8)
                                    for _ in range(config.blocks))
        self.norm = nn.LayerNorm(d, eps=1e-8)

    def user_vector(self, histories: torch.Tensor) -> torch.Tensor:
        L = histories.shape[1]
        pad = histories == 0
        x = self.item_emb(histories) * self.config.hidden ** 0.5 + self.pos_emb.weight[-L:]  # (B, L, d)
        x = self.dropout(x).masked_fill(pad[..., None], 0.0)
        for i, block in enumerate(self.blocks, 1):
            x = block(x, pad, last_only=i == len(self.blocks))
        return self.norm(x[:, -1])
