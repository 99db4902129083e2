"""Uncertainty and significance from per-user outcomes (pure functions of numpy arrays).

* :func:`paired_bootstrap`: the paired bootstrap over users of the difference (and relative
  difference) of two models' mean metric; users are resampled with replacement, the same
  resample for both models, so their correlation is kept. The two-sided p-value is the share
  of resampled differences on the other side of zero, doubled.
* :func:`interval`: what a figure's error bar shows: the sd over seeds when there are several
  seeds, else a 95 % interval over users (Wilson's for a hit rate, the normal one for NDCG);
  metrics are never negative, so the lower end is clipped at 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .metrics import metrics_from_ranks

BOOTSTRAP_RESAMPLES = 10_000
TEST_NAME = "paired bootstrap over users (10,000 resamples), 95 % CI"


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user values of ``metric`` (e.g. ``"NDCG@10"``) in % from 0-based ranks (U,)."""
    k = int(metric.split("@")[1])
    return metrics_from_ranks(np.asarray(ranks, dtype=np.int64), (k,))[metric].numpy()


@dataclass(frozen=True)
class PairedResult:
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b, in metric points (%)
    ci_low: float
    ci_high: float
    relative: float  # (mean_a - mean_b) / mean_b, in %
    relative_ci_low: float
    relative_ci_high: float
    p_value: float
    users: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> PairedResult:
    """Compare per-user outcomes ``a`` and ``b`` (U,) of two models on the same users."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired outcomes must be two equal-length vectors, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    n = len(a)
    means_a = np.empty(resamples)
    means_b = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep memory at 1000 x U
        idx = rng.integers(0, n, size=(min(1000, resamples - start), n))
        means_a[start:start + len(idx)] = a[idx].mean(axis=1)
        means_b[start:start + len(idx)] = b[idx].mean(axis=1)
    diff = means_a - means_b
    with np.errstate(divide="ignore", invalid="ignore"):
        # a resample whose baseline mean is 0 has an unbounded relative gain: kept as +-inf (or
        # NaN for 0/0, then counted as no gain), so a bound can be infinite rather than too narrow
        rel = np.nan_to_num(100.0 * diff / means_b, nan=0.0, posinf=np.inf, neginf=-np.inf)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    ma, mb = a.mean(), b.mean()
    p = 2 * min((diff <= 0).mean(), (diff >= 0).mean())
    return PairedResult(
        mean_a=float(ma), mean_b=float(mb), difference=float(ma - mb),
        ci_low=float(np.quantile(diff, lo)), ci_high=float(np.quantile(diff, hi)),
        relative=float(100.0 * (ma - mb) / mb) if mb > 0 else math.nan,
        relative_ci_low=float(np.quantile(rel, lo, method="lower")),
        relative_ci_high=float(np.quantile(rel, hi, method="higher")),
        p_value=float(min(1.0, p)), users=n)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion, in the same unit as successes / n."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    kind: str  # what the interval is, for legends and captions


def interval(per_seed: list[float], metric: str, per_user_values: np.ndarray | None = None) -> Interval:
    """The error bar of a metric (in %): sd over seeds (n > 1), else a 95 % interval over the
    users of the one run (Wilson for HR, normal for NDCG), else none."""
    values = np.asarray(per_seed, dtype=np.float64)
    mean = float(values.mean())
    if len(values) > 1:
        sd = float(values.std(ddof=1))
        return Interval(mean, max(0.0, mean - sd), mean + sd, f"sd over {len(values)} seeds")
    if per_user_values is None or len(per_user_values) == 0:
        return Interval(mean, mean, mean, "1 seed, no interval")
    values = np.asarray(per_user_values, dtype=np.float64)
    hits = int(np.count_nonzero(values))
    return interval_from_summary(mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values),
                                 metric, hits=hits)


MIN_HITS_FOR_NORMAL = 10  # below this many hits the normal interval of an NDCG is not trusted


def interval_from_summary(mean: float, user_sd: float, users: int, metric: str, hits: int | None = None) -> Interval:
    """A 95 % interval over users of one run's metric (in %) from its mean, the sd of its
    per-user values and the user count: Wilson's for a hit rate; the normal one for NDCG, or,
    with fewer than 10 hits (where the normal one is too narrow, or empty at 0 hits), from 0
    to Wilson's upper bound of the hit rate (NDCG <= HR for every user)."""
    if users == 0:
        return Interval(mean, mean, mean, "no users")
    hits = round(mean / 100.0 * users) if hits is None and metric.startswith("HR") else hits
    if metric.startswith("HR"):
        low, high = wilson(hits, users)
        return Interval(mean, 100 * low, 100 * high, f"95 % Wilson interval over {users} users (1 seed)")
    if hits is not None and hits < MIN_HITS_FOR_NORMAL:
        return Interval(mean, 0.0, max(mean, 100 * wilson(hits, users)[1]),
                        f"95 % bound from {hits} hits among {users} users (1 seed)")
    half = 1.96 * user_sd / math.sqrt(users) if users > 1 else 0.0
    return Interval(mean, max(0.0, mean - half), mean + half, f"95 % normal interval over {users} users (1 seed)")
