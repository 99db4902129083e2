"""Full-ranking evaluation: HR@k and NDCG@k as exact per-user means, in %.

The rank of the target is the number of *other* items scoring at least as high as it
(ties count against the target), so a model whose scores are all equal gets no hit
instead of a perfect one. ``HR@k = 1[rank < k]``, ``NDCG@k = 1[rank < k] / log2(rank + 2)``.
Everything runs on the scores' device; the only host sync is at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from tqdm import tqdm

Profile = Literal["paper", "clean"]
PROFILES: tuple[str, ...] = ("paper", "clean")


@dataclass(frozen=True)
class EvalProtocol:
    """Which items compete in the ranking, and which cut-offs are reported.

    ``mask_padding``: the padding item 0 can never be recommended (clean profile); the
    paper profile scores it like any item, as the authors' code does.
    ``exclude_history``: items already in the user's input history are removed from the
    ranking (a target that repeats a history item then counts as a miss).
    """

    ks: tuple[int, ...] = (5, 10, 20)
    mask_padding: bool = True
    exclude_history: bool = False

    def __post_init__(self):
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {self.ks}")

    @classmethod
    def for_profile(cls, profile: Profile, **overrides) -> "EvalProtocol":
        check_profile(profile)
        return cls(mask_padding=(profile == "clean"), **overrides)

    def metric_names(self) -> list[str]:
        return [f"{m}@{k}" for m in ("HR", "NDCG") for k in self.ks]

    def __str__(self) -> str:
        masked = ["padding item 0" if self.mask_padding else None, "history items" if self.exclude_history else None]
        masked = [m for m in masked if m]
        return (f"full ranking over all items ({'masked: ' + ', '.join(masked) if masked else 'nothing masked, padding item scored'}); "
                f"k in {{{', '.join(map(str, self.ks))}}}; ties count against the target; exact mean over users, in %")

    def mask_scores(self, scores: torch.Tensor, histories: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, N+1) with excluded items set to -inf (a new tensor)."""
        scores = scores.float().clone()
        if self.mask_padding:
            scores[:, 0] = -math.inf
        if self.exclude_history:
            if histories is None:
                raise ValueError("exclude_history needs the input histories")
            # Padding 0 is in most histories; mask_padding decides about it, not this.
            hist = histories.masked_fill(histories == 0, -1)
            keep0 = scores[:, 0].clone()
            scores.scatter_(1, hist.clamp(min=0), -math.inf)
            scores[:, 0] = keep0
        return scores


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target: how many other items score >= the target (B,)."""
    if scores.dim() != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(f"scores must be (B, N) and targets (B,), got {tuple(scores.shape)} and {tuple(targets.shape)}")
    target_score = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    return (scores >= target_score).sum(dim=1) - 1


def rank_metrics(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user HR@k and NDCG@k in {0, 1} / [0, 1] for 0-based ranks (B,)."""
    out = {}
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = hit.double()
        out[f"NDCG@{k}"] = torch.where(hit, gain, torch.zeros_like(gain))
    return out


class MetricAccumulator:
    """Sums per-user metrics on the device; :meth:`result` gives exact means in %. With
    ``keep_ranks`` the per-user ranks are kept (for paired tests), with ``lists_k`` the top-k
    lists (for beyond-accuracy measures), both on the device until :meth:`ranks` / :meth:`lists`."""

    def __init__(self, protocol: EvalProtocol, device: torch.device | str = "cpu", *, keep_ranks: bool = False,
                 lists_k: int | None = None):
        self.protocol = protocol
        self.sums = {name: torch.zeros((), dtype=torch.float64, device=device) for name in protocol.metric_names()}
        self.count = 0
        self.non_finite = torch.zeros((), dtype=torch.bool, device=device)
        self.keep_ranks, self.lists_k = keep_ranks, lists_k
        self._ranks: list[torch.Tensor] = []
        self._lists: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, targets: torch.Tensor, histories: torch.Tensor | None = None) -> None:
        self.non_finite |= torch.isnan(scores).any() | torch.isposinf(scores).any()
        masked = self.protocol.mask_scores(scores, histories)
        ranks = target_ranks(masked, targets.to(masked.device))
        for name, values in rank_metrics(ranks, self.protocol.ks).items():
            self.sums[name] += values.sum()
        self.count += len(targets)
        if self.keep_ranks:
            self._ranks.append(ranks)
        if self.lists_k:
            self._lists.append(masked.topk(min(self.lists_k, masked.shape[1]), dim=1).indices)

    def _check(self) -> None:
        if self.count == 0:
            raise ValueError("no users were evaluated")
        if bool(self.non_finite):
            raise FloatingPointError("the model produced NaN or +inf scores: refusing to report metrics")

    def result(self) -> dict[str, float]:
        self._check()
        return {name: 100.0 * float(total) / self.count for name, total in self.sums.items()}

    def ranks(self) -> torch.Tensor:
        """0-based rank of each user's target (U,), on the CPU."""
        self._check()
        return torch.cat(self._ranks).cpu()

    def lists(self) -> torch.Tensor:
        """Top-k item ids per user (U, k), best first, on the CPU."""
        self._check()
        return torch.cat(self._lists).cpu()


def evaluate(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    protocol: EvalProtocol,
    *,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = False,
    keep_ranks: bool = False,
    lists_k: int | None = None,
) -> dict[str, float] | MetricAccumulator:
    """Rank all items for every user and return ``{"HR@5": ..., "NDCG@20": ...}`` in %
    (or, with ``keep_ranks``/``lists_k``, the accumulator holding metrics,
    ranks and lists).

    ``score_fn(histories)`` maps a (b, L) batch of left-padded histories on ``device`` to
    (b, N + 1) scores. ``inputs`` may already live on ``device`` (then nothing is copied).
    """
    acc = MetricAccumulator(protocol, device, keep_ranks=keep_ranks, lists_k=lists_k)
    starts = range(0, len(inputs), batch_size)
    if progress:
        starts = tqdm(starts, desc="ranking", unit="batch", leave=False)
    for start in starts:
        hist = inputs[start:start + batch_size].to(device, non_blocking=True)
        acc.update(score_fn(hist), targets[start:start + batch_size].to(device), hist)
    return acc if keep_ranks or lists_k else acc.result()


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, torch.Tensor]:
    """Per-user HR@k and NDCG@k in % from stored 0-based ranks (U,): what a paired test compares."""
    return {name: 100.0 * values for name, values in rank_metrics(torch.as_tensor(ranks), ks).items()}


def beyond_accuracy(lists: torch.Tensor, item_counts: torch.Tensor, *, head_share: float = 0.2) -> dict[str, float]:
    """Beyond-accuracy measures of top-k lists (U, k) against training popularity (N + 1,):

    * ``coverage@k``: % of the catalogue (items 1..N) in at least one list;
    * ``avg_popularity@k``: mean training count of the recommended items;
    * ``long_tail@k``: % of recommended slots filled by long-tail items, the tail being every
      item outside the ``head_share`` (20 %) most popular items (ties broken by item id).
    """
    k = lists.shape[1]
    num_items = len(item_counts) - 1
    counts = item_counts.to(lists.device)
    order = torch.argsort(-counts[1:].double() * (num_items + 1) + torch.arange(1, num_items + 1, device=lists.device))
    head = torch.zeros(num_items + 1, dtype=torch.bool, device=lists.device)
    head[order[:max(1, round(head_share * num_items))] + 1] = True
    head[0] = True  # the padding item (paper profile) is not a long-tail recommendation
    return {f"coverage@{k}": coverage(lists, num_items),
            f"avg_popularity@{k}": float(counts[lists].double().mean()),
            f"long_tail@{k}": 100.0 * float((~head[lists]).double().mean())}


def top_k(scores: torch.Tensor, k: int, protocol: EvalProtocol, histories: torch.Tensor | None = None) -> torch.Tensor:
    """The k recommended item ids per row (B, k), best first, on the scores' device."""
    return protocol.mask_scores(scores, histories).topk(min(k, scores.shape[1]), dim=1).indices


def coverage(lists: torch.Tensor, num_items: int) -> float:
    """Share of the catalogue (items 1..N) that appears in at least one top-k list (B, k), in %."""
    seen = torch.zeros(num_items + 1, dtype=torch.bool, device=lists.device)
    seen[lists.flatten()] = True
    seen[0] = False
    return 100.0 * float(seen.sum()) / num_items


def intra_list_diversity(lists: torch.Tensor, item_vectors: torch.Tensor) -> float:
    """Mean pairwise cosine distance between the items of each list (B, k), averaged over lists."""
    v = torch.nn.functional.normalize(item_vectors[lists].float(), dim=-1)  # (B, k, d)
    sim = v @ v.transpose(1, 2)  # (B, k, k)
    k = lists.shape[1]
    if k < 2:
        raise ValueError("intra-list diversity needs lists of 2 or more items")
    off_diagonal = (sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)) / (k * (k - 1))
    return float((1 - off_diagonal).mean())


def list_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Jaccard similarity of two sets of top-k lists (B, k) for the same users, in %."""
    inter = (a[:, :, None] == b[:, None, :]).any(dim=2).sum(dim=1).double()
    union = 2 * a.shape[1] - inter
    return 100.0 * float((inter / union).mean())
