"""Speed benchmark: training throughput and sampling latency (a report, not a test)."""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from .config import from_dict
from .data import SequentialDataset
from .models import build_model, model_config_class
from .utils import device_name, resolve_device, seed_everything


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(dataset: SequentialDataset, *, model: str = "fmrec", model_config: dict | None = None,
              device: str = "auto", batch_size: int = 512, train_steps: int = 20, warmup: int = 3,
              sample_users: int | None = None, eval_batch_size: int = 1024, fused_adam: bool = False,
              amp_bf16: bool = False, compile: bool = False, tf32: bool = False, seed: int = 1997) -> dict:
    """Time ``train_steps`` optimiser steps at ``batch_size`` and one full generation pass
    (the configured sampler, 30 Euler steps by default) over ``sample_users`` users (all by default)."""
    device = resolve_device(device)
    if tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    seed_everything(seed)
    mc = from_dict(model_config_class(model), model_config or {})
    net = build_model(model, dataset, mc).to(device)
    inputs, targets = dataset.training_samples(mc.max_len)
    inputs, targets = inputs.to(device), targets.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, **({"fused": True} if fused_adam and device.type == "cuda" else {}))
    loss_fn = torch.compile(net.loss) if compile else net.loss
    perm = torch.randperm(len(targets), device=device)

    def step(i: int) -> None:
        idx = perm[(i * batch_size) % max(1, len(targets) - batch_size):][:batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_bf16):
            loss = loss_fn(inputs[idx], targets[idx])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    net.train()
    for i in range(warmup):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(train_steps):
        step(i)
    _sync(device)
    train_s = time.perf_counter() - t0
    samples_per_s = train_steps * batch_size / train_s

    hist, _ = dataset.eval_inputs("test", mc.max_len)
    hist = hist[:sample_users] if sample_users else hist
    net.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        net.score(hist[:eval_batch_size].to(device), generator)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for start in range(0, len(hist), eval_batch_size):
            net.score(hist[start:start + eval_batch_size].to(device), generator).topk(20, dim=1)
        _sync(device)
    sample_s = time.perf_counter() - t0
    return {
        "dataset": dataset.name, "model": model, "profile": mc.profile, "device": device_name(device),
        "torch": torch.__version__, "batch_size": batch_size, "train_steps": train_steps,
        "flags": {"fused_adam": fused_adam, "amp_bf16": amp_bf16, "compile": compile, "tf32": tf32,
                  "attention": getattr(mc, "attention", None)},
        "train_samples_per_epoch": len(targets), "samples_per_s": round(samples_per_s, 1),
        "s_per_epoch": round(len(targets) / samples_per_s, 3),
        "sample_users": len(hist), "model_calls_per_user": net.n_model_calls(),
        "sampling_s": round(sample_s, 3), "users_per_s": round(len(hist) / sample_s, 1),
        "model_config": asdict(mc),
    }
