"""Flow (probability) paths between noise ``x_0`` (t = 0) and the target item embedding ``x_1`` (t = 1).

An affine path is ``x_t = a(t) x_1 + b(t) x_0`` with velocity ``a'(t) x_1 + b'(t) x_0``.
Given a prediction of ``x_1`` and the current ``x_t``, the path gives back the velocity (and
the other way round), which is what turns an x1-predicting network into an ODE.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

PathName = Literal["straight", "cosine"]


class AffinePath:
    name: str = "affine"

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``a(t), b(t), a'(t), b'(t)``, each shaped like ``t``."""
        raise NotImplementedError

    @staticmethod
    def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        return t.reshape(-1, *([1] * (like.dim() - 1))) if t.dim() > 0 else t

    def sample(self, x_0: torch.Tensor, x_1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_t`` and its velocity ``dx_t/dt`` for x_0, x_1 (B, d) and t (B,) or scalar."""
        a, b, da, db = (self._col(c, x_1) for c in self.coefficients(torch.as_tensor(t)))
        return a * x_1 + b * x_0, da * x_1 + db * x_0

    def velocity_from_x1(self, x1_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The path's velocity at ``x_t`` if ``x_1 = x1_hat`` (x_0 solved from x_t): for the
        straight path ``(x1_hat - x_t) / (1 - t)``."""
        a, b, da, db = (self._col(c, x_t) for c in self.coefficients(torch.as_tensor(t)))
        x0_hat = (x_t - a * x1_hat) / b
        return da * x1_hat + db * x0_hat

    def x1_from_velocity(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`velocity_from_x1`: for the straight path ``x_t + (1 - t) v``."""
        a, b, da, db = (self._col(c, x_t) for c in self.coefficients(torch.as_tensor(t)))
        return (db * x_t - b * v) / (a * db - da * b)

    def velocity_with_noise(self, x1_hat: torch.Tensor, x_0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity with the *initial* noise kept fixed: ``a'(t) x1_hat + b'(t) x_0``.

        For the straight path this is ``x1_hat - x_0``, the authors' Euler update.
        """
        _, _, da, db = (self._col(c, x_0) for c in self.coefficients(torch.as_tensor(t)))
        return da * x1_hat + db * x_0


class StraightPath(AffinePath):
    """``x_t = t x_1 + (1 - t) x_0`` (rectified flow; FMRec's default)."""

    name = "straight"

    def coefficients(self, t):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


class CosinePath(AffinePath):
    """``x_t = sin(pi t / 2) x_1 + cos(pi t / 2) x_0`` (the paper's curved ablation)."""

    name = "cosine"

    def coefficients(self, t):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        h = math.pi / 2
        return torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t)


PATHS = {"straight": StraightPath, "cosine": CosinePath}


def make_path(name: str) -> AffinePath:
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; known: {', '.join(PATHS)}")
    return PATHS[name]()
