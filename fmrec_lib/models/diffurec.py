"""DiffuRec (Li et al., TOIS 2023), FMRec's predecessor, following DiffuRec's public code
(github WHUIR/DiffuRec, read as a specification) in everything it computes:

Names: diffusion's clean data is ``x_start`` here (DDPM papers write x_0, but in FMRec's flow
``x_0`` is the *noise*; DiffuRec's own code says x_start), the step is ``s``, its noisy state ``x_s``.

* Forward process: DDPM on the target item embedding ``x_start = E[y]``,
  ``x_s = sqrt(abar_s) x_start + sqrt(1 - abar_s) eps`` for s in 0..T-1, T = 32.
* Schedule "truncated linear" (DiffuRec's ``trunc_lin``): betas linear from ``1e-4 k + 0.01`` to
  ``0.02 k + 0.01`` with ``k = 1000 / T``; when that end exceeds 1 (T < 21) it becomes ``1e-3 k + 0.01``.
* Approximator: the same history-fusion Transformer as FMRec (lambda ~ N(delta, delta),
  4 pre-LN blocks, the profile's mask, dropout inside the FFN; Xavier-normal attention output
  and FFN weights, biases left at PyTorch's defaults); it predicts ``x_start``.
* Time input: the sinusoidal embedding sees the rescaled step ``s * 1000 / T`` (0 .. 968.75
  for T = 32), DiffuRec's default ``rescale_timesteps``; ``time_input="index"`` feeds ``s``.
* Loss: cross-entropy of ``x_start_hat @ E.T`` against the target (no reconstruction term).
  Steps are drawn uniformly: DiffuRec's "loss-aware" sampler is never updated in its code
  (the update call is commented out), so it draws uniformly too.
* Inference: ancestral sampling from ``x_T ~ N(0, I)``: at each step predict ``x_start_hat``, take
  the posterior mean of ``q(x_{s-1} | x_s, x_start_hat)`` and, for s >= 1, add noise of variance
  ``beta_s`` (DiffuRec's choice; ``reverse_variance="posterior"`` uses the posterior variance).
  The result after the last step (s = 0, no noise) equals the final ``x_start_hat``, which is scored
  against every item. All noise comes from the evaluation generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config import check_settings
from ..flow.losses import cross_entropy_loss, item_scores
from .base import Recommender
from .fusion import FusionTransformer


@dataclass
class DiffuRecConfig:
    profile: Literal["paper", "clean"] = "paper"
    hidden: int = 128
    heads: int = 4
    num_blocks: int = 4
    ffn_mult: int = 4
    dropout: float = 0.1
    emb_dropout: float = 0.3
    ln_eps: float = 1e-12
    max_len: int = 50
    delta: float = 1e-3
    diffusion_steps: int = 32
    schedule: Literal["trunc_lin", "linear"] = "trunc_lin"
    attention: Literal["sdpa", "math"] = "sdpa"
    time_input: Literal["rescaled", "index"] = "rescaled"  # what the time embedding sees: s * 1000 / T, or s
    reverse_variance: Literal["beta", "posterior"] = "beta"  # noise variance of a reverse step s >= 1
    ffn_dropout: bool = True
    init: Literal["xavier", "xavier-zero-bias", "torch"] = "xavier"  # DiffuRec's initialisation

    def __post_init__(self):
        check_settings(self, positive=("hidden", "heads", "num_blocks", "ffn_mult", "max_len", "diffusion_steps"),
                       probabilities=("dropout", "emb_dropout"), non_negative=("delta",))
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")
        if self.time_input not in ("rescaled", "index"):
            raise ValueError(f"time_input must be 'rescaled' or 'index', got {self.time_input!r}")
        if self.reverse_variance not in ("beta", "posterior"):
            raise ValueError(f"reverse_variance must be 'beta' or 'posterior', got {self.reverse_variance!r}")


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    """Betas (steps,) in float64."""
    k = 1000.0 / steps
    if name == "trunc_lin":
        end = 0.02 * k + 0.01
        betas = torch.linspace(1e-4 * k + 0.01, end if end <= 1 else 1e-3 * k + 0.01, steps, dtype=torch.float64)
    elif name == "linear":
        betas = torch.linspace(1e-4 * k, 0.02 * k, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {name!r}; known: trunc_lin, linear")
    return betas


class DiffuRec(Recommender):
    name = "diffurec"
    version = 2  # 2: DiffuRec's time input, reverse variance, FFN dropout and initialisation

    def __init__(self, num_items: int, config: DiffuRecConfig | None = None):
        config = config or DiffuRecConfig()
        super().__init__(num_items, config)
        self.net = FusionTransformer(num_items, config)
        betas = beta_schedule(config.schedule, config.diffusion_steps)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # posterior q(x_{s-1} | x_s, x_start) = N(c0 x_start + ct x_s, var)
        buffers = {
            "sqrt_abar": abar.sqrt(), "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "post_c0": betas * abar_prev.sqrt() / (1 - abar),
            "post_ct": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
            "reverse_std": (betas if config.reverse_variance == "beta" else betas * (1 - abar_prev) / (1 - abar)).sqrt(),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def item_emb(self):
        return self.net.item_emb

    def n_model_calls(self) -> int:
        return self.config.diffusion_steps

    def time_value(self, s: torch.Tensor) -> torch.Tensor:
        """What the time embedding sees for steps s (B,): ``s * 1000 / T`` or ``s``."""
        scale = 1000.0 / self.config.diffusion_steps if self.config.time_input == "rescaled" else 1.0
        return s.float() * scale

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        h, pad = self.net.encode_history(inputs)
        x_start = self.item_emb(targets)  # (B, d) the clean target embedding
        s = torch.randint(0, self.config.diffusion_steps, (len(targets),), device=inputs.device)
        noise = torch.randn_like(x_start)
        x_s = self.sqrt_abar[s, None] * x_start + self.sqrt_one_minus_abar[s, None] * noise
        x_start_hat, _ = self.net(x_s, self.time_value(s), h, pad)
        ce = cross_entropy_loss(x_start_hat, self.item_emb.weight, targets, mask_padding=self.config.profile == "clean")
        return {"ce": ce, "loss": ce}

    @torch.no_grad()
    def generate(self, histories: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The final x_start_hat (B, d) of reverse ancestral sampling."""
        h, pad = self.net.encode_history(histories)
        B, d = histories.shape[0], self.config.hidden
        x = torch.randn(B, d, device=histories.device, generator=generator)
        x_start_hat = x
        for s in reversed(range(self.config.diffusion_steps)):
            step = torch.full((B,), s, device=histories.device)
            x_start_hat, _ = self.net(x, self.time_value(step), h, pad, generator)
            x = self.post_c0[s] * x_start_hat + self.post_ct[s] * x
            if s > 0:
                x = x + self.reverse_std[s] * torch.randn(B, d, device=histories.device, generator=generator)
        return x_start_hat

    @torch.no_grad()
    def score(self, histories: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return item_scores(self.generate(histories, generator), self.item_emb.weight)
