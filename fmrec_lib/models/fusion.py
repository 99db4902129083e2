"""The approximator FMRec shares with DiffuRec: the history fused with a noisy target.

    h' = h + lambda * (x_t + MLP(sinusoid(time_value)))   # lambda ~ N(delta, delta), (B, L, d)
    out = LayerNorm(Dropout(blocks(h')))[:, -1]            # (B, d)

FMRec feeds ``time_value = t (1/eps - 1)`` for t in [0, 1]; DiffuRec its rescaled step index.
A config with ``flow_input=False`` (FMRec's no-flow ablation) drops the fusion term: ``h' = h``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..utils import generator_kwargs
from .transformer import TransformerBlock


class FusionTransformer(nn.Module):
    """The approximator FMRec shares with DiffuRec: history fused with the noisy target and
    its time embedding, then pre-LN Transformer blocks; returns the last row's output (B, d)."""

    def __init__(self, num_items: int, config):
        super().__init__()
        d = config.hidden
        self.config = config
        self.item_emb = nn.Embedding(num_items + 1, d)  # row 0 = padding, learnable like any row
        nn.init.normal_(self.item_emb.weight, 0.0, 1.0)  # same scale as the N(0, I) noise
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.emb_norm = nn.LayerNorm(d, eps=config.ln_eps)
        self.time_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        mask_mode = "query" if config.profile == "paper" else "key"
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.heads, config.ffn_mult, config.dropout, mask_mode, config.attention, config.ln_eps,
                             ffn_dropout=config.ffn_dropout, init=config.init)
            for _ in range(config.num_blocks))
        self.out_dropout = nn.Dropout(config.dropout)
        self.out_norm = nn.LayerNorm(d, eps=config.ln_eps)
        # a tensor, not a Python float, so that torch.compile does not recompile for each delta
        self.register_buffer("delta", torch.tensor(config.delta, dtype=torch.float32), persistent=False)

    def encode_history(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, L, d) and the padding mask (B, L), True at padding."""
        return self.emb_norm(self.emb_dropout(self.item_emb(histories))), histories == 0

    def forward(self, x_t: torch.Tensor, time_value: torch.Tensor, h: torch.Tensor, pad: torch.Tensor,
                generator: torch.Generator | None = None, need_mid: bool = False):
        """Output (B, d) and, if asked, block ``rec_after_block``'s last row (B, d).

        ``time_value`` (B,) is what the sinusoidal embedding sees (a step index for DiffuRec)."""
        cfg = self.config
        if getattr(cfg, "flow_input", True):
            temb = self.time_mlp(timestep_embedding(time_value, cfg.hidden))  # (B, d)
            lam = self.delta + self.delta * torch.randn(h.shape, device=h.device, dtype=h.dtype,
                                                        **generator_kwargs(generator))
            z = h + lam * (x_t + temb)[:, None, :]  # (B, L, d)
        else:  # the no-flow ablation: a plain encoder of the history
            z = h
        mid = None
        for i, block in enumerate(self.blocks, 1):
            z = block(z, pad, last_only=i == cfg.num_blocks)  # only the last row is needed at the end
            if need_mid and i == getattr(cfg, "rec_after_block", 0):
                mid = z[:, -1]
        return self.out_norm(self.out_dropout(z[:, -1])), mid


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): ``[cos(t w_i), sin(t w_i)]``, w_i = max_period^(-i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))
