"""The experiments behind the notebooks: sizes, run-or-reuse, tuning and cached evaluation sweeps.

Every training run is identified by its configuration hash; a run already recorded in the
results file (with its selected model on disk) is reused, never retrained, so re-rendering a
notebook is cheap and nothing computed is lost.

Sizes (what changes from the paper's settings, also printed in every caption):

* ``paper``: the paper's settings (meant for a GPU).
* ``quick``: CPU-friendly: FMRec/DiffuRec hidden 64 (reconstructor 64-256-512-N), histories of
  20 items, each user's 20 most recent training prefixes, 16 epochs validated every 4
  (patience 3), Beauty, Yelp and Steam restricted to 2,000 users. ML-100k keeps all 943 users.
* ``smoke``: seconds, for CI: tiny models, 60-200 users, 2 epochs. Numbers are meaningless.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from .config import from_dict
from .data import SequentialDataset, load_dataset
from .models import model_config_class
from .results import DEFAULT_RESULTS, find_run
from .train import TrainConfig, best_model_path, evaluate_model, fit, load_model, run_config_hash
from .utils import REPO_ROOT, device_name, resolve_device

log = logging.getLogger(__name__)

CHECKPOINTS = REPO_ROOT / "checkpoints"
RESULTS_DIR = REPO_ROOT / "results"
FIGURES_DIR = REPO_ROOT / "figures"
SIZES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Size:
    name: str
    model: dict[str, dict[str, Any]]  # per model name ("*" for all) -> config overrides
    train: dict[str, Any]
    max_users: dict[str, int | None]
    description: str


_SIZES = {
    "paper": Size("paper", {}, {}, {}, "the paper's settings"),
    "quick": Size(
        "quick",
        {"*": {"max_len": 20},
         "fmrec": {"hidden": 64, "rec_hidden": (256, 512)},
         "diffurec": {"hidden": 64}},
        {"epochs": 16, "eval_every": 4, "patience": 3, "last_k_samples": 20},
        {"beauty": 2000, "yelp": 2000, "steam": 2000},
        "quick (CPU): hidden 64, histories of 20 items, each user's 20 latest prefixes, 16 epochs "
        "validated every 4 (patience 3); Beauty, Yelp, Steam: 2,000 users"),
    "smoke": Size(
        "smoke",
        {"*": {"max_len": 8},
         "fmrec": {"hidden": 16, "heads": 2, "rec_hidden": (32, 64), "eval_steps": 5},
         "diffurec": {"hidden": 16, "heads": 2, "diffusion_steps": 5},
         "sasrec": {"hidden": 16}, "gru4rec": {"embedding": 16, "hidden": 16}},
        {"epochs": 2, "eval_every": 1, "patience": 2, "batch_size": 128, "last_k_samples": 3},
        {"ml-100k": 60, "beauty": 200, "yelp": 200, "steam": 200},
        "smoke (CI): tiny models, 60-200 users, 2 epochs: the numbers mean nothing"),
}


def resolve_size(size: str, device: str = "auto") -> str:
    """``auto``: ``paper`` with CUDA, ``quick`` without."""
    if size == "auto":
        return "paper" if resolve_device(device).type == "cuda" else "quick"
    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; known: auto, {', '.join(SIZES)}")
    return size


def describe(size: str) -> str:
    return _SIZES[resolve_size(size)].description


@lru_cache(maxsize=8)
def dataset_for(name: str, size: str) -> SequentialDataset:
    return load_dataset(name, max_users=_SIZES[resolve_size(size)].max_users.get(name))


def configs_for(model: str, size: str, **overrides) -> tuple[dict, dict]:
    """(model config, train config) dicts for a model at a size, then ``overrides`` (any
    field of either config; an unknown key fails)."""
    spec = _SIZES[resolve_size(size)]
    model_fields = {f.name for f in dataclasses.fields(model_config_class(model))}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    mc = {k: v for k, v in {**spec.model.get("*", {}), **spec.model.get(model, {})}.items() if k in model_fields}
    tc = dict(spec.train)
    for key, value in overrides.items():
        if key in model_fields:
            mc[key] = value
        elif key in train_fields:
            tc[key] = value
        else:
            raise ValueError(f"unknown setting {key!r} for {model}; known: {sorted(model_fields | train_fields)}")
    return mc, tc


@dataclass
class Run:
    """A finished training run (fresh or reused from the results file)."""

    dataset: str
    model: str
    size: str
    config_hash: str
    model_config: dict
    train_config: dict
    val: dict[str, float]
    test: dict[str, float]
    device: str
    reused: bool
    wall_time_s: float
    checkpoint: Path | None = None
    extra: dict = field(default_factory=dict)
    retrain: Any = None  # rebuilds the checkpoint of a reused run whose model file is gone

    def load_model(self, device: str = "auto"):
        if (self.checkpoint is None or not self.checkpoint.exists()) and self.retrain is not None:
            log.warning("run %s: model file %s missing (results came from elsewhere); retraining it",
                        self.config_hash, self.checkpoint)
            self.retrain()
        if self.checkpoint is None or not self.checkpoint.exists():
            raise FileNotFoundError(f"no saved model for run {self.config_hash} ({self.checkpoint})")
        return load_model(self.checkpoint, device)


def run(dataset: str, model: str = "fmrec", *, size: str = "quick", seed: int = 1997, device: str = "auto",
        results_path: str | Path = DEFAULT_RESULTS, checkpoint_dir: str | Path = CHECKPOINTS,
        progress: bool = True, **overrides) -> Run:
    """Train (or reuse) one configuration and return its validation and test metrics."""
    size = resolve_size(size, device)
    ds = dataset_for(dataset, size)
    mc, tc = configs_for(model, size, seed=seed, **overrides)
    mc_obj = from_dict(model_config_class(model), mc)
    tc_obj = from_dict(TrainConfig, tc)
    run_hash = run_config_hash(ds, model, mc_obj, tc_obj)
    ckpt = best_model_path(checkpoint_dir, model, run_hash)
    found = find_run(run_hash, results_path)
    if found is not None:
        metrics = {(r.split, r.metric): r.value for r in found.itertuples()}
        first = found.iloc[0]
        log.info("reusing %s %s run %s", model, dataset, run_hash)
        return Run(dataset, model, size, run_hash, dataclasses.asdict(mc_obj), dataclasses.asdict(tc_obj),
                   {m: v for (s, m), v in metrics.items() if s == "val"},
                   {m: v for (s, m), v in metrics.items() if s == "test"}, first["device"], True,
                   float(first["wall_time_s"]), None if model == "pop" else ckpt,
                   {"best_epoch": int(first["best_epoch"]), "epochs_run": int(first["epochs_run"])},
                   retrain=lambda: fit(ds, model, mc_obj, tc_obj, device=device, checkpoint_dir=checkpoint_dir,
                                       results_path=None, progress=progress))
    result = fit(ds, model, mc_obj, tc_obj, device=device, checkpoint_dir=checkpoint_dir,
                 results_path=results_path, progress=progress)
    return Run(dataset, model, size, run_hash, result.model_config, result.train_config, result.val, result.test,
               result.device, False, result.wall_time_s, None if model == "pop" else ckpt,
               {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run})


def tune(dataset: str, model: str, grid: dict[str, Iterable], *, select: str = "NDCG@10", **kwargs) -> tuple[Run, pd.DataFrame]:
    """Run every point of ``grid`` (a small product of settings) and keep the best on validation."""
    import itertools

    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        r = run(dataset, model, **kwargs, **point)
        runs.append((point, r))
    table = pd.DataFrame([{"dataset": dataset, "model": model, **point, f"val_{select}": r.val[select],
                           "config_hash": r.config_hash} for point, r in runs])
    best_point, best_run = max(runs, key=lambda pr: pr[1].val[select])
    table["selected"] = [p == best_point for p, _ in runs]
    return best_run, table


def cached_rows(path: str | Path, key: dict, compute) -> list[dict]:
    """Rows computed for ``key``, reused from the JSON-lines file ``path`` when present, else
    computed and appended (so an interrupted sweep keeps everything it finished)."""
    path = Path(path)
    key_json = json.dumps(key, sort_keys=True, default=str)
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else None
            if entry and entry["key"] == key_json:
                return entry["rows"]
    rows = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": key_json, "rows": rows}, default=str) + "\n")
    return rows


def evaluate_variant(r: Run, *, split: str = "test", eval_seed: int = 0, device: str = "auto",
                     cache: str | Path | None = None, **score_options) -> dict:
    """Metrics of a trained run's model with other sampler settings (cached in ``cache``)."""
    def compute():
        model = r.load_model(device)
        ds = dataset_for(r.dataset, r.size)
        t0 = time.perf_counter()
        metrics = evaluate_model(model, ds, split, seed=eval_seed, **score_options)
        seconds = time.perf_counter() - t0
        calls = score_options.get("steps", model.config.eval_steps)
        method = score_options.get("method", model.config.eval_method)
        update = score_options.get("update", model.config.eval_update)
        from .solvers import count_model_calls
        return [{"dataset": r.dataset, "config_hash": r.config_hash, "split": split, "eval_seed": eval_seed,
                 **{k: v for k, v in score_options.items()}, **metrics,
                 "n_model_calls": count_model_calls(calls, method, update),
                 "ms_per_1000_users": 1000 * seconds / len(ds.train) * 1000,
                 "device": device_name(resolve_device(device))}]
    key = {"config_hash": r.config_hash, "split": split, "eval_seed": eval_seed, **score_options}
    return cached_rows(cache, key, compute)[0] if cache else compute()[0]


def trajectory_table(r: Run, *, users: int = 64, steps: int = 30, split: str = "test", seed: int = 0,
                     device: str = "auto", update: str | None = None) -> pd.DataFrame:
    """Along the sampled flow: distance of x_t to the target embedding and rank of the target
    under ``x_t @ E.T``, per user and step."""
    from .metrics import EvalProtocol, target_ranks

    model = r.load_model(device)
    ds = dataset_for(r.dataset, r.size)
    inputs, targets = ds.eval_inputs(split, model.config.max_len)
    dev = next(model.parameters()).device
    inputs, targets = inputs[:users].to(dev), targets[:users].to(dev)
    sol = model.generate(inputs, torch.Generator(device=dev).manual_seed(seed), steps=steps, update=update,
                         return_trajectory=True)
    table = model.item_emb.weight
    x_1 = table[targets]
    protocol = EvalProtocol.for_profile(model.config.profile)
    rows = []
    for t, x in zip(sol.times, sol.trajectory):
        dist = (x - x_1).norm(dim=1) / x_1.norm(dim=1)
        ranks = target_ranks(protocol.mask_scores(x @ table.T), targets)
        rows += [{"t": t, "user": u, "relative_distance": float(d), "target_rank": int(k)}
                 for u, (d, k) in enumerate(zip(dist.tolist(), ranks.tolist()))]
    return pd.DataFrame(rows)


def recommendation_lists(r: Run, *, k: int = 10, split: str = "test", eval_seed: int = 0, device: str = "auto",
                         batch_size: int = 1024, **score_options) -> torch.Tensor:
    """Top-k item ids (U, k) for every user of ``split`` under the run's profile."""
    from .metrics import EvalProtocol, top_k

    model = r.load_model(device)
    ds = dataset_for(r.dataset, r.size)
    inputs, _ = ds.eval_inputs(split, model.config.max_len)
    dev = next(model.parameters()).device
    generator = torch.Generator(device=dev).manual_seed(eval_seed)
    protocol = EvalProtocol.for_profile(model.config.profile)
    lists = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            hist = inputs[start:start + batch_size].to(dev)
            lists.append(top_k(model.score(hist, generator, **score_options), k, protocol, hist).cpu())
    return torch.cat(lists)


def noise_sensitivity(r: Run, *, users: int = 256, times=(0.001, 0.25, 0.5, 0.75, 0.97), split: str = "test",
                      seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """How much the prediction depends on the noisy target: the relative change of x1_hat
    when the noise x_0 behind x_t = path(x_0, x_1, t) is redrawn (lambda's draw held fixed).
    Near 0 means the network ignores x_t and the flow reduces to a function of the history."""
    model = r.load_model(device)
    ds = dataset_for(r.dataset, r.size)
    inputs, targets = ds.eval_inputs(split, model.config.max_len)
    dev = next(model.parameters()).device
    inputs, targets = inputs[:users].to(dev), targets[:users].to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    rows = []
    with torch.no_grad():
        h, pad = model.encode_history(inputs)
        x_1 = model.item_emb(targets)
        for t in times:
            t_vec = torch.full((len(targets),), t, device=dev)
            preds = []
            for _ in range(2):
                x_t, _ = model.path.sample(torch.randn(x_1.shape, device=dev, generator=g), x_1, t_vec)
                preds.append(model.predict_x1(x_t, t_vec, h, pad, torch.Generator(device=dev).manual_seed(seed)))
            change = (preds[0] - preds[1]).norm(dim=1) / preds[0].norm(dim=1)
            rows.append({"t": t, "relative_change_of_x1_hat": float(change.mean()), "delta": model.config.delta,
                         "path": model.config.path})
    return pd.DataFrame(rows)
