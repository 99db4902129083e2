"""One function per notebook: compute (or reuse) its numbers and write its tidy table.

Outputs of a size go to ``results/<size>/`` and ``figures/<size>/`` so that CI's smoke runs never
touch the committed quick or paper results; the training runs themselves are recorded in
``results/<size>/runs.csv`` and reused by configuration hash.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .data import DATASETS, DatasetNotFoundError, load_dataset, load_reference_split
from .experiments import (CHECKPOINTS, FIGURES_DIR, RESULTS_DIR, Run, cached_rows, dataset_for, describe,
                          evaluate_variant, resolve_size, run, trajectory_table, tune)
from .paper import CLAIMED_AVERAGE_GAIN, PAPER_NUMBERS
from .utils import device_name, resolve_device

log = logging.getLogger(__name__)

METRICS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)]
DEFAULT_GRID = {"lr": [1e-3, 3e-3]}  # the same tuning budget for every trainable model


@dataclass(frozen=True)
class Outputs:
    size: str

    @property
    def results(self) -> Path:
        return RESULTS_DIR / self.size

    @property
    def figures(self) -> Path:
        return FIGURES_DIR / self.size

    @property
    def runs(self) -> Path:
        return self.results / "runs.csv"

    @property
    def checkpoints(self) -> Path:
        return CHECKPOINTS / self.size

    def table(self, notebook: str) -> Path:
        return self.results / f"{notebook}.csv"

    def write(self, frame: pd.DataFrame, notebook: str) -> Path:
        self.results.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.table(notebook), index=False)
        return self.table(notebook)


def _run(dataset, model, size, device, seed, progress=True, **overrides) -> Run:
    out = Outputs(size)
    return run(dataset, model, size=size, seed=seed, device=device, results_path=out.runs,
               checkpoint_dir=out.checkpoints, progress=progress, **overrides)


def caption(claim: str, measured: str, size: str, device: str) -> str:
    return (f"**Paper:** {claim}  \n**Measured:** {measured}  \n*Size: {describe(size)}; device: "
            f"{device_name(resolve_device(device))}.*")


# -- 00 datasets ---------------------------------------------------------------------------

def dataset_report(names: list[str] | None = None, size: str = "paper") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset table (with missing datasets marked) and per-user sequence lengths."""
    rows, lengths = [], []
    for name in names or list(DATASETS):
        try:
            ds = load_dataset(name)
        except (DatasetNotFoundError, FileNotFoundError) as e:
            rows.append({"dataset": DATASETS[name].label, "status": "missing", "reason": str(e).splitlines()[0]})
            continue
        check = "no reference split"
        try:
            ref = load_reference_split(name)
            check = "equals the authors' split" if ds.same_split(ref) else "DIFFERS from the authors' split"
        except DatasetNotFoundError:
            pass
        rows.append({**ds.stats(), "status": "ok", "split_check": check})
        lengths += [{"dataset": ds.display_name, "length": len(s) + 2} for s in ds.train.values()]
    table = pd.DataFrame(rows)
    Outputs(resolve_size(size)).write(table, "00_datasets")
    return table, pd.DataFrame(lengths)


# -- 01 main results -----------------------------------------------------------------------

def main_results(datasets: list[str], models: list[str], *, size: str, seeds: list[int], device: str = "auto",
                 profile: str = "paper", grid: dict | None = None, progress: bool = True):
    """Per-seed test metrics of every model (tuned on validation with the same grid), the
    mean/std summary beside the paper's numbers, the tuning log and FMRec's relative gain."""
    size = resolve_size(size, device)
    grid = DEFAULT_GRID if grid is None else grid
    per_seed, tuning, missing = [], [], []
    for dataset in datasets:
        try:
            dataset_for(dataset, size)
        except (DatasetNotFoundError, FileNotFoundError) as e:
            missing += [{"dataset": dataset, "model": m, "status": f"missing: {str(e).splitlines()[0]}"} for m in models]
            continue
        for model in models:
            if model == "pop":
                chosen = {}
            else:
                best, table = tune(dataset, model, grid, size=size, seed=seeds[0], device=device,
                                   results_path=Outputs(size).runs, checkpoint_dir=Outputs(size).checkpoints,
                                   progress=progress, profile=profile)
                tuning.append(table)
                chosen = {k: best.train_config.get(k, best.model_config.get(k)) for k in grid}
            for seed in seeds:
                overrides = {} if model == "pop" else {"profile": profile}
                r = _run(dataset, model, size, device, seed, progress, **overrides, **chosen)
                per_seed.append({"dataset": dataset, "model": model, "profile": profile, "seed": seed,
                                 "config_hash": r.config_hash, **chosen, **{m: r.test[m] for m in METRICS},
                                 "device": r.device})
    per_seed = pd.DataFrame(per_seed)
    summary = _summarise(per_seed, missing)
    gains = relative_gains(summary)
    out = Outputs(size)
    out.write(summary, "01_main_results")
    out.write(per_seed, "01_main_results_per_seed")
    if tuning:
        out.write(pd.concat(tuning, ignore_index=True), "01_main_results_tuning")
    out.write(gains, "01_main_results_gain")
    return per_seed, summary, gains


def _summarise(per_seed: pd.DataFrame, missing: list[dict]) -> pd.DataFrame:
    rows = []
    if not per_seed.empty:
        for (dataset, model), g in per_seed.groupby(["dataset", "model"], sort=False):
            for metric in METRICS:
                paper = PAPER_NUMBERS.get((dataset, model, metric))
                mean = g[metric].mean()
                rows.append({"dataset": dataset, "model": model, "metric": metric, "mean": mean,
                             "std": g[metric].std(ddof=1) if len(g) > 1 else math.nan, "seeds": len(g),
                             "paper": paper, "difference": None if paper is None else mean - paper, "status": "ok"})
    rows += [{**m, "metric": None, "mean": None} for m in missing]
    return pd.DataFrame(rows)


def relative_gains(summary: pd.DataFrame) -> pd.DataFrame:
    """FMRec's relative gain (%) over the strongest other trained model per dataset and metric."""
    ok = summary[summary["status"] == "ok"]
    rows = []
    for (dataset, metric), g in ok.groupby(["dataset", "metric"]):
        fm = g[g["model"] == "fmrec"]["mean"]
        others = g[~g["model"].isin(["fmrec"])]
        if fm.empty or others.empty:
            continue
        best = others.loc[others["mean"].idxmax()]
        gain = (fm.iloc[0] - best["mean"]) / best["mean"] * 100 if best["mean"] > 0 else math.nan
        rows.append({"dataset": dataset, "metric": metric, "fmrec": fm.iloc[0], "strongest_baseline": best["model"],
                     "baseline": best["mean"], "gain_percent": gain, "claimed_average_gain": CLAIMED_AVERAGE_GAIN})
    return pd.DataFrame(rows)


# -- 02 trajectory -------------------------------------------------------------------------

def trajectory_report(dataset: str, *, size: str, seed: int, device: str = "auto", steps: list[int] = (1, 2, 5, 10, 30, 100),
                      users: int = 64, progress: bool = True):
    size = resolve_size(size, device)
    out = Outputs(size)
    rows, paths = [], []
    for path in ("straight", "cosine"):
        r = _run(dataset, "fmrec", size, device, seed, progress, path=path)
        for n in steps:
            m = evaluate_variant(r, steps=n, device=device, cache=out.results / "02_trajectory_cache.jsonl")
            rows.append({"path": path, "steps": n, **{k: m[k] for k in METRICS}, "config_hash": r.config_hash})
        key = {"config_hash": r.config_hash, "users": users, "steps": 30, "trajectory": True}
        traj = pd.DataFrame(cached_rows(out.results / "02_trajectory_cache.jsonl", key,
                                        lambda: trajectory_table(r, users=users, steps=30, device=device).to_dict("records")))
        traj["variant"] = path
        paths.append(traj)
    table = pd.DataFrame(rows)
    out.write(table, "02_trajectory")
    trajectories = pd.concat(paths, ignore_index=True)
    out.write(trajectories, "02_trajectory_paths")
    return table, trajectories


def sensitivity_to_noise(dataset: str, *, size: str, seed: int, device: str = "auto", deltas=(0.001,),
                         progress: bool = True) -> pd.DataFrame:
    """:func:`experiments.noise_sensitivity` of the trained FMRec for each delta (cached)."""
    from .experiments import noise_sensitivity

    size = resolve_size(size, device)
    out = Outputs(size)
    frames = []
    for delta in deltas:
        r = _run(dataset, "fmrec", size, device, seed, progress, delta=delta)
        frames.append(pd.DataFrame(cached_rows(out.results / "02_trajectory_cache.jsonl",
                                               {"config_hash": r.config_hash, "noise_sensitivity": True},
                                               lambda: noise_sensitivity(r, device=device).to_dict("records"))))
    table = pd.concat(frames, ignore_index=True)
    out.write(table, "02_trajectory_noise_sensitivity")
    return table


# -- 03 loss ablation ----------------------------------------------------------------------

LOSS_VARIANTS = {
    "FMRec (x1 prediction)": {},
    "v-prediction": {"prediction": "velocity"},
    "w/o cross-entropy (alpha=0)": {"alpha": 0.0},
    "w/o reconstruction (beta=0)": {"beta": 0.0},
}


def loss_ablation(dataset: str, *, size: str, seeds: list[int], device: str = "auto", progress: bool = True):
    size = resolve_size(size, device)
    rows = []
    for name, overrides in LOSS_VARIANTS.items():
        for seed in seeds:
            r = _run(dataset, "fmrec", size, device, seed, progress, **overrides)
            rows.append({"variant": name, "seed": seed, **{m: r.test[m] for m in METRICS}, "config_hash": r.config_hash})
    table = pd.DataFrame(rows)
    Outputs(size).write(table, "03_loss_ablation")
    return table


# -- 04 sampler ----------------------------------------------------------------------------

def sampler_report(dataset: str, *, size: str, seed: int, device: str = "auto", noise_scales=(0.1, 0.3, 1.0),
                   eval_seeds=(0, 1, 2), steps=(1, 2, 5, 10, 30), progress: bool = True):
    """(determinism table, update/solver table) for the default FMRec run."""
    size = resolve_size(size, device)
    out = Outputs(size)
    r = _run(dataset, "fmrec", size, device, seed, progress)
    cache = out.results / "04_sampler_cache.jsonl"
    det = []
    for scale in (0.0, *noise_scales):
        for s in eval_seeds:
            opts = {"method": "stochastic", "noise_scale": scale} if scale > 0 else {"method": "euler"}
            m = evaluate_variant(r, eval_seed=s, device=device, cache=cache, **opts)
            det.append({"noise_scale": scale, "eval_seed": s, **{k: m[k] for k in METRICS}})
    solvers = []
    for label, opts in {"Euler, paper update": {"method": "euler", "update": "paper"},
                        "Euler, textbook update": {"method": "euler", "update": "textbook"},
                        "Heun, textbook update": {"method": "heun", "update": "textbook"}}.items():
        for n in steps:
            m = evaluate_variant(r, steps=n, device=device, cache=cache, **opts)
            solvers.append({"sampler": label, "steps": n, "n_model_calls": m["n_model_calls"],
                            "ms_per_1000_users": m["ms_per_1000_users"], "device": m["device"],
                            **{k: m[k] for k in METRICS}})
    det, solvers = pd.DataFrame(det), pd.DataFrame(solvers)
    out.write(det, "04_sampler_determinism")
    out.write(solvers, "04_sampler_solvers")
    return det, solvers


# -- 05 sensitivity ------------------------------------------------------------------------

SWEEPS = {
    "alpha": [0.02, 0.2, 1.0],
    "beta": [0.0, 0.4, 1.0],
    "delta": [0.001, 0.1, 0.5],
    "time_sampler": ["mode", "uniform", "logit-normal", "cosmap"],
}


def sensitivity(dataset: str, *, size: str, seed: int, device: str = "auto", sweeps: dict | None = None,
                progress: bool = True):
    """One run per value of each swept setting, the others at the paper's defaults (the shared
    default run is trained once and reused)."""
    size = resolve_size(size, device)
    rows = []
    for setting, values in (sweeps or SWEEPS).items():
        for value in values:
            r = _run(dataset, "fmrec", size, device, seed, progress, **{setting: value})
            rows.append({"setting": setting, "value": str(value), **{m: r.test[m] for m in METRICS},
                         "val_NDCG@10": r.val["NDCG@10"], "config_hash": r.config_hash})
    table = pd.DataFrame(rows)
    Outputs(size).write(table, "05_sensitivity")
    return table


# -- 06 open questions ---------------------------------------------------------------------

def diversity_report(dataset: str, *, size: str, seed: int, device: str = "auto", noise_scales=(0.3, 1.0),
                     k: int = 10, progress: bool = True) -> pd.DataFrame:
    """Beyond accuracy, deterministic against stochastic sampling: catalogue coverage@k,
    intra-list diversity, and the overlap of each user's list between two evaluation seeds."""
    from .experiments import recommendation_lists
    from .metrics import coverage, intra_list_diversity, list_overlap

    size = resolve_size(size, device)
    out = Outputs(size)
    r = _run(dataset, "fmrec", size, device, seed, progress)
    rows = []
    for scale in (0.0, *noise_scales):
        opts = {"method": "stochastic", "noise_scale": scale} if scale > 0 else {"method": "euler"}

        def compute():
            model = r.load_model(device)
            a = recommendation_lists(r, k=k, eval_seed=0, device=device, **opts)
            b = recommendation_lists(r, k=k, eval_seed=1, device=device, **opts)
            return [{"noise_scale": scale, f"coverage@{k}": coverage(a, model.num_items),
                     f"ILD@{k}": intra_list_diversity(a, model.item_emb.weight.detach().cpu()),
                     f"overlap@{k}_between_seeds": list_overlap(a, b)}]

        stats = cached_rows(out.results / "06_open_questions_cache.jsonl",
                            {"config_hash": r.config_hash, "k": k, "lists": True, **opts}, compute)[0]
        accuracy = evaluate_variant(r, device=device, cache=out.results / "06_open_questions_cache.jsonl", **opts)
        rows.append({**stats, f"NDCG@{k}": accuracy[f"NDCG@{k}"], f"HR@{k}": accuracy[f"HR@{k}"]})
    table = pd.DataFrame(rows)
    out.write(table, "06_open_questions_diversity")
    return table


def profile_report(dataset: str, *, size: str, seed: int, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """What the authors' quirks change: FMRec trained and evaluated in each profile, and the
    paper-profile model evaluated under the clean protocol (padding item excluded)."""
    from .metrics import EvalProtocol

    size = resolve_size(size, device)
    out = Outputs(size)
    rows = []
    for profile in ("paper", "clean"):
        r = _run(dataset, "fmrec", size, device, seed, progress, profile=profile)
        rows.append({"trained": profile, "evaluated": profile, **{m: r.test[m] for m in METRICS}})
        if profile == "paper":
            m = evaluate_variant(r, device=device, cache=out.results / "06_open_questions_cache.jsonl",
                                 protocol=EvalProtocol.for_profile("clean"))
            rows.append({"trained": "paper", "evaluated": "clean", **{k: m[k] for k in METRICS}})
    table = pd.DataFrame(rows)
    out.write(table, "06_open_questions_profiles")
    return table
