"""ODE samplers from noise ``x_0`` (t = eps) to a generated target embedding (t = 1).

The network predicts ``x1_hat = f(x_t, t)``; the update turns that into a velocity:

* ``update="paper"``: the authors' rule, the velocity with the *initial* noise fixed,
  ``x1_hat - x_0`` on the straight path (:meth:`AffinePath.velocity_with_noise`). With Euler
  the result is the mean of the step predictions.
* ``update="textbook"``: the path's velocity at the current state, ``(x1_hat - x_t) / (1 - t)``
  on the straight path (:meth:`AffinePath.velocity_from_x1`).

Time grid as in the authors' code: ``t_i = i / n (1 - eps) + eps`` for i = 0..n. The paper
update steps by 1/n as the authors do (so Euler returns exactly the mean of the predictions);
the textbook update steps by the grid spacing (1 - eps) / n, so it integrates from eps to 1.
Methods: ``euler`` (n model calls), ``heun`` (second order, 2n - 1 calls: its last step is
an Euler step, because the textbook velocity is undefined at t = 1), and ``stochastic`` (Euler
plus ``noise_scale * sqrt(dt) * N(0, I)`` after every step: the determinism ablation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from .paths import AffinePath, StraightPath
from .time_samplers import TIME_EPS

X1Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, d), t (B,)) -> x1_hat (B, d)
METHODS = ("euler", "heun", "stochastic")
UPDATES = ("paper", "textbook")


@dataclass(frozen=True)
class SamplerConfig:
    """How a recommendation is generated: the one typed route for every sampler option.

    FMRec's config holds the default (the paper's: 30 deterministic Euler steps with the
    authors' update); an evaluation sweep passes another ``SamplerConfig`` per call.
    ``noise_scale`` is used by ``method="stochastic"`` only.
    """

    steps: int = 30
    method: Literal["euler", "heun", "stochastic"] = "euler"
    update: Literal["paper", "textbook"] = "paper"
    noise_scale: float = 0.0

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler steps must be an integer >= 1, got {self.steps!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown sampler method {self.method!r}; known: {', '.join(METHODS)}")
        if self.update not in UPDATES:
            raise ValueError(f"unknown sampler update {self.update!r}; known: {', '.join(UPDATES)}")
        if self.noise_scale < 0:
            raise ValueError(f"sampler noise_scale must be >= 0, got {self.noise_scale}")
        if self.noise_scale > 0 and self.method != "stochastic":
            raise ValueError("noise_scale > 0 needs method='stochastic' (the other samplers inject no noise)")

    @property
    def n_model_calls(self) -> int:
        return count_model_calls(self.steps, self.method, self.update)

    def label(self) -> str:
        noise = f", noise {self.noise_scale:g}" if self.method == "stochastic" else ""
        return f"{self.method} ({self.update} update{noise}), {self.steps} steps"


@dataclass
class Solution:
    x: torch.Tensor  # (B, d) the generated x_1
    n_calls: int  # model evaluations
    times: list[float] = field(default_factory=list)  # t of each stored state
    trajectory: list[torch.Tensor] = field(default_factory=list)  # states x_t (B, d), when asked for
    predictions: list[torch.Tensor] = field(default_factory=list)  # x1_hat at each model call, when asked for


def time_grid(steps: int, eps: float = TIME_EPS) -> list[float]:
    return [i / steps * (1 - eps) + eps for i in range(steps + 1)]


def solve(
    predict_x1: X1Predictor,
    x_0: torch.Tensor,
    *,
    steps: int = 30,
    method: Literal["euler", "heun", "stochastic"] = "euler",
    update: Literal["paper", "textbook"] = "paper",
    path: AffinePath | None = None,
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
    eps: float = TIME_EPS,
    return_trajectory: bool = False,
) -> Solution:
    """Integrate from ``x_0`` (B, d) with ``steps`` steps; see the module docstring."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if update not in UPDATES:
        raise ValueError(f"unknown update {update!r}; known: {', '.join(UPDATES)}")
    if method == "stochastic" and noise_scale < 0:
        raise ValueError("noise_scale must be >= 0")
    path = path or StraightPath()
    grid = time_grid(steps, eps)
    dt = 1.0 / steps if update == "paper" else (1.0 - eps) / steps
    n_calls = 0
    sol = Solution(x=x_0, n_calls=0)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        nonlocal n_calls
        t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x1_hat = predict_x1(x, t_vec)
        n_calls += 1
        if return_trajectory:
            sol.predictions.append(x1_hat.detach())
        if update == "paper":
            return path.velocity_with_noise(x1_hat, x_0, t_vec)
        return path.velocity_from_x1(x1_hat, x, t_vec)

    x = x_0
    if return_trajectory:
        sol.times.append(grid[0])
        sol.trajectory.append(x.detach())
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        v = velocity(x, t)
        last = i == steps - 1
        if method == "heun" and not (last and update == "textbook"):
            v_next = velocity(x + dt * v, t_next)
            v = 0.5 * (v + v_next)
        x = x + dt * v
        if method == "stochastic" and noise_scale > 0:
            x = x + noise_scale * math.sqrt(dt) * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        if return_trajectory:
            sol.times.append(t_next)
            sol.trajectory.append(x.detach())
    sol.x, sol.n_calls = x, n_calls
    return sol


def count_model_calls(steps: int, method: str, update: str) -> int:
    """Model evaluations of :func:`solve` for these settings."""
    if method == "heun":
        return 2 * steps - (1 if update == "textbook" else 0)
    return steps
