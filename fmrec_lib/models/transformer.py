"""Pre-LayerNorm Transformer blocks with the two padding-mask semantics of the profiles.

* ``paper``: the authors' mask hits *query rows*: a padded position's row of scores is set to
  -1e9 everywhere, so it attends uniformly to all positions, and real positions attend to
  padded ones as if nothing were masked.
* ``clean``: padded positions are masked as *keys*; real positions never see them.
* ``causal`` (SASRec): keys after the query and padded keys are masked.

``attention="math"`` computes the scores explicitly (the reference); ``"sdpa"`` uses
``scaled_dot_product_attention`` and, for the paper profile, replaces padded query rows by
the mean of the values, which is what a uniform softmax gives (identical in eval mode; in
training the reference also applies attention dropout to those uniform rows).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(pad: torch.Tensor) -> torch.Tensor:
    """(B, L, L) True where query i may attend key j: j <= i and j is not padding. Each
    position also sees itself, so padded rows are never empty (an empty row would give NaN,
    and 0 * NaN leaks into the real rows' weighted sums)."""
    L = pad.shape[1]
    lower = torch.ones(L, L, dtype=torch.bool, device=pad.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=pad.device)
    return (lower & ~pad[:, None, :]) | eye


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float,
                 mask_mode: Literal["query", "key", "causal"], attention: Literal["sdpa", "math"]):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        if attention not in ("sdpa", "math"):
            raise ValueError(f"attention must be 'sdpa' or 'math', got {attention!r}")
        self.heads, self.dropout, self.mask_mode, self.attention = heads, dropout, mask_mode, attention
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x (B, L, d), pad (B, L) True at padding -> (B, L, d), or (B, 1, d) for the last
        query row alone (never padding: histories are left-padded and non-empty)."""
        B, L, d = x.shape
        if last_only:
            w_q, w_kv = self.qkv.weight.split([d, 2 * d])
            b_q, b_kv = self.qkv.bias.split([d, 2 * d])
            q = F.linear(x[:, -1:], w_q, b_q).view(B, 1, self.heads, d // self.heads).transpose(1, 2)  # (B, h, 1, d_h)
            k, v = F.linear(x, w_kv, b_kv).view(B, L, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            pad_q = pad[:, -1:]
        else:
            q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, d_h)
            pad_q = pad
        p = self.dropout if self.training else 0.0
        if self.attention == "math":
            out = self._math(q, k, v, pad_q, pad, p)
        elif self.mask_mode == "key":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :], dropout_p=p)
        elif self.mask_mode == "causal":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(pad)[:, None, -q.shape[2]:], dropout_p=p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            out = torch.where(pad_q[:, None, :, None], v.mean(dim=2, keepdim=True), out)
        return self.proj(out.transpose(1, 2).reshape(B, q.shape[2], d))

    def _math(self, q, k, v, pad_q, pad_k, p):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, L_q, L)
        if self.mask_mode == "query":
            scores = scores.masked_fill(pad_q[:, None, :, None], -1e9)
        elif self.mask_mode == "causal":
            scores = scores.masked_fill(~causal_mask(pad_k)[:, None, -q.shape[2]:], float("-inf"))
        else:
            scores = scores.masked_fill(pad_k[:, None, None, :], float("-inf"))
        return F.dropout(scores.softmax(dim=-1), p=p, training=p > 0) @ v


INITS = ("torch", "xavier", "xavier-zero-bias")


class TransformerBlock(nn.Module):
    """``x + Drop(Attn(LN(x)))``, then ``x + Drop(FFN(LN(x)))``, FFN d -> 4d -> d with tanh-GELU,
    and ``Drop`` on the block's output.

    ``ffn_dropout`` adds a dropout between the GELU and the second FFN matrix (the FMRec and
    DiffuRec codes have it; SASRec here does not). ``init``: ``torch`` keeps PyTorch's defaults;
    ``xavier`` draws the attention output projection and both FFN weight matrices from
    Xavier-normal (DiffuRec's code); ``xavier-zero-bias`` also zeroes the FFN biases (FMRec's code).
    """

    def __init__(self, hidden: int, heads: int, ffn_mult: int, dropout: float, mask_mode, attention, ln_eps: float,
                 ffn_dropout: bool = False, init: str = "torch"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
        self.norm1 = nn.LayerNorm(hidden, eps=ln_eps)
        self.attn = SelfAttention(hidden, heads, dropout, mask_mode, attention)
        self.norm2 = nn.LayerNorm(hidden, eps=ln_eps)
        inner = [nn.Dropout(dropout)] if ffn_dropout else []
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), nn.GELU(approximate="tanh"), *inner,
                                 nn.Linear(ffn_mult * hidden, hidden))
        self.drop = nn.Dropout(dropout)
        if init != "torch":
            for linear in (self.attn.proj, self.ffn[0], self.ffn[-1]):
                nn.init.xavier_normal_(linear.weight)
            if init == "xavier-zero-bias":
                nn.init.zeros_(self.ffn[0].bias)
                nn.init.zeros_(self.ffn[-1].bias)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); with ``last_only`` just the last row (B, 1, d), which is
        all the final block has to produce (its keys and values still use every row)."""
        x = (x[:, -1:] if last_only else x) + self.drop(self.attn(self.norm1(x), pad, last_only))
        x = x + self.drop(self.ffn(self.norm2(x)))
        return self.drop(x)
