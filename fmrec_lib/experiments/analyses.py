"""Evaluation sweeps of trained runs (the notebooks' probes), each a function
``f(ctx, run, **params) -> list[dict]`` registered in :data:`SWEEPS` so that the campaign can
run it right after training, on the GPU, and the notebooks read the cached rows.

* ``metrics``: full-ranking metrics with another sampler, evaluation seed or protocol;
* ``trajectory``: along the sampled flow, the distance of x_t to the target and its rank;
* ``noise_sensitivity``: how much x1_hat changes when the noise behind x_t is redrawn;
* ``lists``: beyond-accuracy measures of top-k lists and their overlap between two seeds.

:func:`sampling_cost` times scoring for several models in one process on one device; it needs
no trained weights (the cost of a forward pass does not depend on them).

``ctx`` is the experiment context (:class:`fmrec_lib.experiments.context.Context`), ``run`` a
trained run (:class:`fmrec_lib.experiments.runs.Run`).
"""
from __future__ import annotations

import time

import torch

from ..evaluation.metrics import (EvalProtocol, coverage, intra_list_diversity, list_overlap, metrics_from_ranks,
                                  target_ranks, top_k)
from ..flow.solvers import SamplerConfig
from ..models import build_model
from ..training import evaluate_model, model_device, resolve_configs
from ..utils import synchronize

def _prepared(ctx, run, split: str, users: int | None = None):
    """The run's selected model on the context's device and the split's inputs and targets
    (the first ``users`` users), on the same device."""
    model = run.load_model(ctx.device)
    inputs, targets = ctx.dataset(run.dataset).eval_inputs(split, model.config.max_len)
    if users is not None:
        inputs, targets = inputs[:users], targets[:users]
    dev = model_device(model)
    return model, inputs.to(dev), targets.to(dev), dev


def _sampler(value) -> SamplerConfig | None:
    return None if value is None else value if isinstance(value, SamplerConfig) else SamplerConfig(**value)


def _eval_batch(run) -> int:
    """The run's evaluation batch size: it decides which evaluation noise each user gets, so a
    sweep with the run's own settings reproduces the run's test metrics."""
    return int(run.train_config.get("eval_batch_size", 1024))


def metrics(ctx, run, *, split: str = "test", eval_seed: int = 0, sampler: dict | None = None,
            protocol: str | None = None) -> list[dict]:
    """Metrics of the run's model on ``split`` with another sampler (FMRec), evaluation seed or
    profile protocol, the model calls per user that sampler makes, and per metric the sd of
    the per-user values (``<metric>_user_sd``, with ``users``) for intervals."""
    model, inputs, targets, _ = _prepared(ctx, run, split)
    sampler_cfg = _sampler(sampler)
    proto = EvalProtocol.for_profile(protocol) if protocol else None
    acc = evaluate_model(model, None, split, seed=eval_seed, protocol=proto, sampler=sampler_cfg,
                         inputs=(inputs, targets), batch_size=_eval_batch(run), keep_ranks=True)
    values = acc.result()
    per_user = metrics_from_ranks(acc.ranks(), acc.protocol.ks)
    spread = {f"{k}_user_sd": float(v.std(unbiased=True)) if len(v) > 1 else 0.0 for k, v in per_user.items()}
    calls = model.n_model_calls(sampler_cfg) if sampler_cfg is not None else model.n_model_calls()
    return [{"dataset": ctx.label(run.dataset), "config_hash": run.config_hash, "split": split, "eval_seed": eval_seed,
             "sampler": None if sampler_cfg is None else sampler_cfg.label(), "protocol": protocol or "run's",
             **values, **spread, "users": len(targets), "n_model_calls": calls, "device": ctx.device_label}]


def trajectory(ctx, run, *, users: int = 64, steps: int = 30, split: str = "test",
               seed: int = 0) -> list[dict]:
    """Per user and step of the sampled flow: ``|x_t - x_1| / |x_1|`` and the target's rank under
    ``x_t @ E.T`` (the run's own sampler update)."""
    model, inputs, targets, dev = _prepared(ctx, run, split, users)
    sampler = SamplerConfig(steps=steps, update=model.config.sampler.update)
    with torch.no_grad():
        sol = model.generate(inputs, torch.Generator(device=dev).manual_seed(seed), sampler, return_trajectory=True)
        table = model.item_emb.weight
        x_1 = table[targets]
        protocol = EvalProtocol.for_profile(model.config.profile)
        rows = []
        for t, x in zip(sol.times, sol.trajectory):
            dist = (x - x_1).norm(dim=1) / x_1.norm(dim=1)
            ranks = target_ranks(protocol.mask_scores(x @ table.T), targets)
            rows += [{"t": t, "user": u, "relative_distance": float(d), "target_rank": int(k)}
                     for u, (d, k) in enumerate(zip(dist.tolist(), ranks.tolist()))]
    return rows


def noise_sensitivity(ctx, run, *, users: int = 256, times=(0.001, 0.25, 0.5, 0.75, 0.97),
                      split: str = "test", seed: int = 0) -> list[dict]:
    """How much the prediction depends on the noisy target: the relative change of x1_hat
    when the noise x_0 behind x_t = path(x_0, x_1, t) is redrawn (lambda's draw held fixed).
    Near 0 means the network ignores x_t and the flow reduces to a function of the history."""
    model, inputs, targets, dev = _prepared(ctx, run, split, users)
    g = torch.Generator(device=dev).manual_seed(seed)
    rows = []
    with torch.no_grad():
        h, pad = model.encode_history(inputs)
        x_1 = model.item_emb(targets)
        for t in times:
            t_vec = torch.full((len(targets),), float(t), device=dev)
            preds = []
            for _ in range(2):
                x_t, _ = model.path.sample(torch.randn(x_1.shape, device=dev, generator=g), x_1, t_vec)
                preds.append(model.predict_x1(x_t, t_vec, h, pad, torch.Generator(device=dev).manual_seed(seed)))
            change = (preds[0] - preds[1]).norm(dim=1) / preds[0].norm(dim=1)
            rows.append({"t": float(t), "relative_change_of_x1_hat": float(change.mean()),
                         "delta": model.config.delta, "path": model.config.path,
                         "flow_input": model.config.flow_input})
    return rows


def recommendation_lists(model, inputs: torch.Tensor, *, k: int, eval_seed: int, sampler: SamplerConfig | None,
                         batch_size: int) -> torch.Tensor:
    """Top-k item ids (U, k) for every history under the model's profile protocol."""
    dev = model_device(model)
    generator = torch.Generator(device=dev).manual_seed(eval_seed)
    protocol = EvalProtocol.for_profile(model.config.profile)
    lists = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            hist = inputs[start:start + batch_size]
            scores = model.score(hist, generator, sampler) if sampler is not None else model.score(hist, generator)
            lists.append(top_k(scores, k, protocol, hist).cpu())
    return torch.cat(lists)


def lists(ctx, run, *, k: int = 10, split: str = "test", sampler: dict | None = None,
          eval_seeds=(0, 1)) -> list[dict]:
    """Coverage@k and intra-list diversity of the top-k lists, and their overlap between two
    evaluation seeds (how deterministic the "deterministic" sampler is)."""
    model, inputs, _, _ = _prepared(ctx, run, split)
    sampler_cfg = _sampler(sampler)
    a, b = (recommendation_lists(model, inputs, k=k, eval_seed=s, sampler=sampler_cfg, batch_size=_eval_batch(run))
            for s in eval_seeds)
    return [{"config_hash": run.config_hash, "sampler": None if sampler_cfg is None else sampler_cfg.label(),
             "noise_scale": sampler_cfg.noise_scale if sampler_cfg else 0.0,
             f"coverage@{k}": coverage(a, model.num_items),
             f"ILD@{k}": intra_list_diversity(a, model.item_emb.weight.detach().cpu()),
             f"overlap@{k}_between_seeds": list_overlap(a, b)}]


SWEEPS = {"metrics": metrics, "trajectory": trajectory, "noise_sensitivity": noise_sensitivity, "lists": lists}
# Bumped when a sweep's rows gain something, so older cached rows are not taken for the new ones
# (2: metrics rows carry the per-user sd of every metric and the user count, for intervals).
SWEEP_VERSIONS = {"metrics": 2}


def sampling_cost(ctx, dataset: str, entries: list[tuple[str, str, dict, SamplerConfig | None]], *,
                  users: int = 1000, repeats: int = 3) -> list[dict]:
    """Latency of scoring ``users`` test users (generation + scores for every item) for each
    ``(label, model, overrides, sampler)``, models built at the context's size with random
    weights (cost does not depend on them), all in this process on the context's device, the
    best of ``repeats`` timings after a warm-up."""
    ds = ctx.dataset(dataset)
    rows = []
    for label, model_name, overrides, sampler in entries:
        mc, _ = resolve_configs(model_name, *ctx.configs(model_name, 0, **overrides))
        torch.manual_seed(0)
        model = build_model(model_name, ds, mc).to(ctx.device).eval()
        inputs, _ = ds.eval_inputs("test", mc.max_len)
        inputs = inputs[:users].to(ctx.device)
        generator = torch.Generator(device=ctx.device).manual_seed(0)
        score = (lambda h: model.score(h, generator, sampler)) if sampler is not None else (lambda h: model.score(h, generator))
        with torch.no_grad():
            score(inputs[:64]).topk(10, dim=1)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                synchronize(ctx.device)
                t0 = time.perf_counter()
                score(inputs).topk(10, dim=1)
                synchronize(ctx.device)
                best = min(best, time.perf_counter() - t0)
        calls = model.n_model_calls(sampler) if sampler is not None else model.n_model_calls()
        rows.append({"label": label, "model": model_name, "n_model_calls": calls,
                     "ms_per_1000_users": 1000 * best * 1000 / len(inputs), "users": len(inputs),
                     "device": ctx.device_label})
    return rows
