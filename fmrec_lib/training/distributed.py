"""Data parallelism for one large run: ``torchrun --nproc-per-node N -m fmrec_lib train ...``.

torchrun starts N processes with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set;
:func:`launched` joins them in a process group (gloo on CPU, NCCL on CUDA, rank r on GPU
``LOCAL_RANK``). :func:`fmrec_lib.train.fit` sees the group (:func:`current`) and then

* wraps the loss in ``DistributedDataParallel`` (gradients averaged over ranks);
* draws the same permutation on every rank (the same shuffle generator) and gives rank r the
  r-th contiguous share of every global batch of ``TrainConfig.batch_size`` samples, so the
  global batch stays the paper's 512. When a batch of m samples does not split evenly (the
  epoch's last batch, or a batch size not divisible by N) rank r's loss is weighted by
  ``N * n_r / m`` (:func:`batch_share`), so the averaged gradient is that of the mean over the
  m samples, as in one process, for losses that are means over samples (CE, the flow-matching
  MSE); a rank left without a sample computes its loss on one sample with weight 0;
* draws its training noise (FMRec's x_0, t, lambda, dropout) from its own stream: rank 0
  keeps the one-process seed, rank r > 0 is reseeded from (seed, r) (:func:`seed_rank`);
* sums the epoch's loss terms over ranks once per epoch (logging and the NaN check);
* evaluates each rank's contiguous share of the users and combines the metric sums, the
  per-user ranks and the top-k lists in user order (:func:`combine_accumulator`);
* writes checkpoints, results and per-user files on rank 0 only, the others waiting at a
  barrier; every rank resumes from rank 0's running checkpoint, which holds every rank's RNG
  state.

Without a process group (one process, the default) none of this runs.
"""
from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..models.base import LossModule

# rank r > 0 draws its training noise from seed * SEED_STRIDE + r (never another run's seed)
SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def environment() -> DistEnv | None:
    """The torchrun environment of this process, or None outside torchrun (or with one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    return DistEnv(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def current() -> DistEnv | None:
    """The initialised process group seen from this process, or None (one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    rank = dist.get_rank()
    return DistEnv(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def rank_device(device: str, env: DistEnv) -> torch.device:
    """The device of a rank: ``cuda``/``auto`` with CUDA -> GPU ``LOCAL_RANK``; ``cpu`` -> CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
        return torch.device("cuda", env.local_rank)
    return dev


@contextmanager
def launched(device: str = "auto") -> Iterator[tuple[DistEnv | None, str]]:
    """Join torchrun's process group for the block: yields (env, this rank's device). Outside
    torchrun yields (None, ``device``) and does nothing; inside a group that is already
    initialised it joins that one (and leaves it open)."""
    env = environment()
    if env is None:
        yield None, device
        return
    dev = rank_device(device, env)
    if dist.is_initialized():
        yield current(), str(dev)
        return
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size)
    try:
        yield env, str(dev)
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if current() is not None:
        dist.barrier()


def seed_rank(seed: int, env: DistEnv) -> None:
    """Give rank r > 0 its own stream for training noise (rank 0 keeps the one-process one)."""
    if env.rank > 0:
        torch.manual_seed(seed * SEED_STRIDE + env.rank)


def shard_sizes(n: int, world: int) -> list[int]:
    """Sizes of ``torch.tensor_split(range(n), world)``: contiguous shares, the first
    ``n % world`` one larger."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's contiguous share of the rows of ``tensor``."""
    return torch.tensor_split(tensor, env.world_size)[env.rank]


def batch_share(idx: torch.Tensor, env: DistEnv) -> tuple[torch.Tensor, float]:
    """This rank's rows of a global batch ``idx`` (m,) and its share n_r / m of the batch.

    The loss to back-propagate is the rank's mean loss times ``world * share`` (DDP averages
    gradients over ranks, so the result is the gradient of the mean over the m samples); a rank
    without a sample gets one sample and share 0, so that DDP's all-reduce still happens."""
    m = len(idx)
    mine = shard(idx, env)
    if len(mine) == 0:
        return idx[:1], 0.0
    return mine, len(mine) / m


def wrap_loss(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` over a module whose forward is ``net.loss``.

    ``static_graph``: the parameters a loss reads never change during a run (an ablation with
    alpha or beta = 0 leaves some unused); no buffer sync at every step: no model here changes a
    buffer while training (``forward_sync_buffers`` in recent torch, ``broadcast_buffers`` before)."""
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(LossModule(net), device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True, **{no_sync: False})


def combine_loss_terms(packed: torch.Tensor) -> torch.Tensor:
    """An epoch's (2, T) loss buffer of every rank combined, in one collective: row 0 (the
    weighted sums of the terms) summed over ranks, row 1 (per term, the batches after which the
    running sum was still finite) the minimum over ranks, which is the first bad batch."""
    gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, packed.contiguous())
    stacked = torch.stack(gathered)  # (W, 2, T)
    return torch.stack([stacked[:, 0].sum(dim=0), stacked[:, 1].min(dim=0).values])


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Rows of every rank (rank r holds ``sizes[r]``), concatenated in rank order."""
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[:len(local)] = local
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:s] for g, s in zip(gathered, sizes)])


def combine_accumulator(acc, n_users: int, env: DistEnv):
    """Turn a rank's :class:`~fmrec_lib.metrics.MetricAccumulator` over its share of ``n_users``
    users into the accumulator of all users: metric sums, user count and the non-finite flag
    all-reduced; per-user ranks and top-k lists gathered in user order (on every rank)."""
    names = list(acc.sums)
    device = acc.non_finite.device
    packed = torch.stack([acc.sums[n] for n in names]
                         + [torch.tensor(float(acc.count), dtype=torch.float64, device=device),
                            acc.non_finite.to(torch.float64)])
    dist.all_reduce(packed)
    acc.sums = {n: packed[i] for i, n in enumerate(names)}
    acc.count = int(packed[-2].item())
    acc.non_finite = packed[-1] > 0
    sizes = shard_sizes(n_users, env.world_size)
    if acc.keep_ranks:
        local = torch.cat(acc._ranks) if acc._ranks else torch.zeros(0, dtype=torch.int64, device=device)
        acc._ranks = [_gather_rows(local, sizes)]
    if acc.lists_k:
        local = torch.cat(acc._lists) if acc._lists else torch.zeros(0, acc.lists_k, dtype=torch.int64, device=device)
        acc._lists = [_gather_rows(local, sizes)]
    return acc
