"""Speed benchmark: training throughput and sampling latency (a report, not a test)."""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from ..config import from_dict
from ..data import SequentialDataset
from ..models import build_model, model_config_class
from ..training import train
from ..utils import configure_precision, device_name, resolve_device, runtime_info, seed_everything, synchronize


def benchmark(dataset: SequentialDataset, *, model: str = "fmrec", model_config: dict | None = None,
              device: str = "auto", batch_size: int = 512, train_steps: int = 20, warmup: int = 3,
              sample_users: int | None = None, eval_batch_size: int = 1024, fused_adam: bool = False,
              amp_bf16: bool = False, compile: bool = False, compile_mode: str = "default", tf32: bool = False,
              seed: int = 1997) -> dict:
    """Time ``train_steps`` optimiser steps at ``batch_size`` and one full generation pass
    (the configured sampler, 30 Euler steps by default) over ``sample_users`` users (all by default).

    Before the timed steps: ``warmup`` full steps (with ``compile``, the first one compiles),
    then two steps with the epoch's last, smaller batch (``len(samples) % batch_size``, or half a
    batch), as every epoch of ``fit`` has, eager under ``compile`` as in ``fit``: the first is
    ``partial_step_s``, the second ``partial_steady_s``. ``s_per_epoch`` is the epoch's full
    batches at the timed steps' pace plus one steady last batch."""
    device = resolve_device(device)
    configure_precision(tf32)
    seed_everything(seed)
    mc = from_dict(model_config_class(model), model_config or {})
    net = build_model(model, dataset, mc).to(device)
    inputs, targets = dataset.training_samples(mc.max_len)
    inputs, targets = inputs.to(device), targets.to(device)
    fused = {"fused": True} if fused_adam and device.type == "cuda" else {}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, **fused)
    loss = net.loss
    loss_fn = train.compile_loss(loss, compile_mode) if compile else loss
    n = len(targets)
    perm = torch.randperm(n, device=device)
    partial = n % batch_size or max(1, batch_size // 2)

    def step(i: int, size: int = batch_size) -> None:  # the last, smaller batch eager, as in fit
        start = (i * batch_size) % max(1, n - size)
        idx = perm[start:start + size]
        if compile and compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_bf16):
            value = (loss_fn if size == batch_size or n < batch_size else loss)(inputs[idx], targets[idx])["loss"]
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    def timed(fn) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - t0

    net.train()
    warmup_s = timed(lambda: [step(i) for i in range(warmup)])
    partial_s = timed(lambda: step(warmup, partial))
    partial_steady_s = timed(lambda: step(warmup + 1, partial))
    train_s = timed(lambda: [step(warmup + 2 + i) for i in range(train_steps)])
    samples_per_s = train_steps * batch_size / train_s
    s_per_epoch = n // batch_size * train_s / train_steps + (partial_steady_s if n % batch_size else 0.0)

    hist, _ = dataset.eval_inputs("test", mc.max_len)
    hist = hist[:sample_users] if sample_users else hist
    n_users = len(hist)
    net.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        net.score(hist[:eval_batch_size].to(device), generator)  # warm-up
        sample_s = timed(lambda: [net.score(hist[start:start + eval_batch_size].to(device), generator).topk(20, dim=1)
                                  for start in range(0, len(hist), eval_batch_size)])
    return {
        "dataset": dataset.name, "model": model, "profile": mc.profile, "device": device_name(device),
        "torch": torch.__version__, "batch_size": batch_size, "train_steps": train_steps,
        "flags": {"fused_adam": fused_adam, "amp_bf16": amp_bf16, "compile": compile, "compile_mode": compile_mode,
                  "tf32": tf32, "attention": getattr(mc, "attention", None), "rec_loss": getattr(mc, "rec_loss", None)},
        "train_samples_per_epoch": n, "samples_per_s": round(samples_per_s, 1),
        "ms_per_step": round(1000 * train_s / train_steps, 2), "s_per_epoch": round(s_per_epoch, 3),
        "warmup_steps": warmup, "warmup_s": round(warmup_s, 3),
        "partial_batch_size": partial, "partial_step_s": round(partial_s, 3),
        "partial_steady_s": round(partial_steady_s, 3), "partial_eager": compile and n >= batch_size,
        "sample_users": n_users, "model_calls_per_user": net.n_model_calls(),
        "sampling_s": round(sample_s, 3), "users_per_s": round(n_users / sample_s, 1),
        "runtime": runtime_info(device, compiled=compile, compile_mode=compile_mode, amp_bf16=amp_bf16),
        "model_config": asdict(mc),
    }
