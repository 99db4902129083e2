"""Seeds, devices and provenance."""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import torch

def _project_root() -> Path:
    """The repository when the package runs from a checkout (editable install, PYTHONPATH=.);
    otherwise (a wheel installed into site-packages) the folder the user works in, never the
    installation itself. ``FMREC_ROOT`` overrides both."""
    if os.environ.get("FMREC_ROOT"):
        return Path(os.environ["FMREC_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "fmrec_lib").is_dir():
        return checkout
    return Path.cwd().resolve()


REPO_ROOT = _project_root()


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (training draws from them)."""
    random.seed(seed)
    torch.manual_seed(seed)


def generator_kwargs(generator: torch.Generator | None) -> dict:
    """``{"generator": generator}``, or no keyword at all for the global generator.

    ``torch.rand(..., generator=None)`` is not the same call as ``torch.rand(...)`` to
    torch.compile: the explicit keyword selects the ``*.generator`` overloads, which cannot be
    traced with a symbolic size (the recompilation for an epoch's last, smaller batch)."""
    return {} if generator is None else {"generator": generator}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device (use --device cpu or auto)")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_text(label: str) -> str:
    """A recorded device label as :func:`device_name` spells it now (older rows say "1 threads")."""
    return label.replace("(1 threads)", "(1 thread)")


def configure_precision(tf32: bool) -> dict:
    """Set float32 matmul and cuDNN precision for a run, both ways, and return the state.

    Without this a TF32 run would leave TF32 on for every later run in the process (and
    cuDNN allows TF32 by default). ``tf32=False``: IEEE float32 everywhere; ``tf32=True``:
    TF32 tensor cores for CUDA matmuls and cuDNN; CPU (oneDNN) matmuls stay IEEE either way.
    """
    torch.set_float32_matmul_precision("highest")  # CUDA and oneDNN matmuls back to IEEE float32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return precision_state()


def precision_state() -> dict:
    """The process-wide float32 precision settings in force now."""
    return {"tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def runtime_info(device: torch.device, *, compiled: bool = False, compile_mode: str | None = None,
                 amp_bf16: bool = False) -> dict:
    """How a run executed (precision, compilation, determinism, versions), for its results rows."""
    return {**precision_state(), "amp_bf16": amp_bf16, "compiled": compiled,
            "compile_mode": compile_mode if compiled else None,
            "cudnn_deterministic": torch.backends.cudnn.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": device_name(device)}


def git_commit() -> str:
    """Short commit of the working tree, ``-dirty`` when it has uncommitted changes."""
    env = os.environ.get("FMREC_COMMIT")
    if env:
        return env
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
