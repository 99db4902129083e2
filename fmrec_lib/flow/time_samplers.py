"""Training-time samplers for t in [0, 1] (1 = data), as in METHOD.md.

Every sampler draws ``u ~ U(0, 1)`` (or a normal) from the given generator and the result is
squeezed into ``[eps, 1]``: ``t = t (1 - eps) + eps`` so that t = 0 is never seen.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..utils import generator_kwargs

TIME_EPS = 1e-3


def uniform(u: torch.Tensor) -> torch.Tensor:
    return u


def mode(u: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    """``1 - u - s (cos^2(pi u / 2) - 1 + u)``: with s = 1 the density is highest near t = 1."""
    return 1 - u - s * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)


def cosmap(u: torch.Tensor) -> torch.Tensor:
    """``1 - 1 / (tan(pi u / 2) + 1)``."""
    return 1 - 1 / (torch.tan(math.pi * u / 2) + 1)


SAMPLERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"uniform": uniform, "mode": mode, "cosmap": cosmap}
NAMES = ("uniform", "logit-normal", "mode", "cosmap")


def sample_time(name: str, n: int, *, eps: float = TIME_EPS, device=None, generator: torch.Generator | None = None,
                logit_mean: float = 1.0, logit_std: float = 0.6, mode_scale: float = 1.0) -> torch.Tensor:
    """Draw n times (n,) in [eps, 1] with the named sampler."""
    if name == "logit-normal":
        t = torch.sigmoid(logit_mean + logit_std * torch.randn(n, device=device, **generator_kwargs(generator)))
    elif name in SAMPLERS:
        u = torch.rand(n, device=device, **generator_kwargs(generator))
        t = mode(u, mode_scale) if name == "mode" else SAMPLERS[name](u)
    else:
        raise ValueError(f"unknown time sampler {name!r}; known: {', '.join(NAMES)}")
    return t.clamp(0, 1) * (1 - eps) + eps
