"""One checkpoint format for every run: plain dicts of tensors and numbers, written atomically,
loaded with ``torch.load(..., weights_only=True)`` (no code is unpickled).

Two files per run, named by model and configuration hash:

* ``<model>-<hash>.pt``, the *running* checkpoint, written at every validation and when a
  deadline stops the run, so an interrupted run resumes exactly: model, optimizer, scheduler,
  epoch, selection state, RNG states, history, and the selected weights only when they differ
  from the current ones. It is deleted once the finished run is recorded.
* ``<model>-<hash>.best.pt``, the *selected* model that is tested and kept, without the parts
  only training reads (FMRec's reconstructor), with its configs and item count.

Sizes at paper settings: docs/performance.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = 2


class CheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated, of another kind or of another configuration."""


def running_path(folder: str | Path, model: str, run_hash: str) -> Path:
    return Path(folder) / f"{model}-{run_hash}.pt"


def selected_path(folder: str | Path, model: str, run_hash: str) -> Path:
    """Where ``fit`` leaves the selected model of a finished run."""
    return Path(folder) / f"{model}-{run_hash}.best.pt"


def save(obj: dict, path: str | Path) -> Path:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **obj}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | Path, *, kind: str | None = None) -> dict:
    """A checkpoint dict; a damaged or foreign file raises :class:`CheckpointError` naming it
    and saying how to go on."""
    path = Path(path)
    advice = ("move it aside (or delete it) to start this run over, or pass resume=False "
              "(command line: --no-resume)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes; an interrupted copy?): {advice}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, a pickle naming code
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else e}): {advice}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not an fmrec_lib checkpoint: {advice}")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt.get('format', 1)}, this code reads {FORMAT}: {advice}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path} is a {ckpt.get('kind', 'older')!r} checkpoint, expected {kind!r}: {advice}")
    return ckpt


def saved_epoch(path: str | Path) -> int | None:
    """The epoch a running or stack checkpoint was written after, read without loading its
    tensors (memory-mapped); None if there is no such file or it cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["epoch"])
    except Exception:  # missing, damaged or foreign: the run will say so when it starts
        return None


def without_training_only(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A state dict without the parameters only training reads (detached CPU copies)."""
    return {k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith(prefixes)}
