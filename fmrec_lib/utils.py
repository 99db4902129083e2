"""Seeds, devices and provenance."""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (training draws from them)."""
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device (use --device cpu or auto)")
    return device


def configure_precision(tf32: bool) -> dict:
    """Set float32 matmul precision for this run, both ways: a TF32 run never leaves TF32 on
    for the next run in the same process. Returns the settings now in force."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return precision_state()


def precision_state() -> dict:
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def runtime_info(device: torch.device, **flags) -> dict:
    """How a run was computed (recorded with every result): device, torch, precision,
    determinism settings and the speed flags given."""
    return {"device": device_name(device), "torch": torch.__version__, **precision_state(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic, **flags}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


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
