"""Profile FMRec training steps on a device: where does a step's time go (CPU dispatch vs GPU
kernels)? Prints the top operators by self CPU time and by self device time.

    PYTHONPATH=. FMREC_DATA_DIR=data python tools/profile_step.py --dataset ml-100k --device cuda
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from fmrec_lib.data import load_dataset
from fmrec_lib.models import build_model, model_config_class
from fmrec_lib.utils import resolve_device

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", default="ml-100k")
parser.add_argument("--model", default="fmrec")
parser.add_argument("--device", default="cuda")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--rows", type=int, default=25)
args = parser.parse_args()

device = resolve_device(args.device)
ds = load_dataset(args.dataset)
cfg = model_config_class(args.model)()
net = build_model(args.model, ds, cfg).to(device).train()
inputs, targets = ds.training_samples(cfg.max_len)
inputs, targets = inputs[:512 * (args.steps + 3)].to(device), targets[:512 * (args.steps + 3)].to(device)
opt = torch.optim.Adam(net.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))


def step(i: int) -> None:
    sl = slice(512 * i, 512 * (i + 1))
    loss = net.loss(inputs[sl], targets[sl])["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


for i in range(3):
    step(i)
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
with profile(activities=activities) as prof:
    for i in range(args.steps):
        step(3 + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
events = prof.key_averages()
print(f"{args.model} on {args.dataset}, {args.steps} steps, {len(events)} distinct operators")
print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
if device.type == "cuda":
    print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows))
    n_kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"device kernels per step: {n_kernels / args.steps:.0f}")
