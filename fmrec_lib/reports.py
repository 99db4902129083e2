"""One function per notebook: compute (or reuse) its numbers, write its tidy tables, and say
in a caption what the paper claims and what we measured, from the numbers only.

Each notebook also declares the work it needs (:func:`jobs`): the training runs, in a
priority tier, and the evaluation sweeps that need each run's model. The campaign runs those
jobs (on a GPU, right after training) and the notebook then renders from the stores alone.

Notebook defaults (:data:`DEFAULTS`) are the committed configuration: a notebook run with other
parameters writes to ``runs/`` instead of the committed ``results/`` and ``figures/``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data import DATASETS, DatasetNotFoundError, load_reference_split
from .paper import CLAIMED_AVERAGE_GAIN, PAPER_NUMBERS
from .runs import MissingRunError, Run, RunSpec, Sweep, grid_points, selected_point
from .solvers import SamplerConfig
from .stats import TEST_NAME, interval, interval_from_summary, paired_bootstrap, per_user

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger(__name__)

METRICS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)]
BEYOND = ["coverage@10", "avg_popularity@10", "long_tail@10"]
SEEDS = [1997, 1998, 1999]
COST_USERS = 1000  # users whose scoring notebook 07 times per model
MODEL_LABELS = {"pop": "popularity", "gru4rec": "GRU4Rec", "sasrec": "SASRec", "diffurec": "DiffuRec", "fmrec": "FMRec"}

# The committed configuration of every notebook (its parameters cell holds the same values,
# plus size and device; tests/test_notebooks.py checks that they agree).
DEFAULTS: dict[str, dict[str, Any]] = {
    "00_datasets": {"datasets": ["ml-100k", "beauty", "yelp", "steam"]},
    "01_main_results": {"datasets": ["ml-100k", "beauty", "yelp", "steam"],
                        "models": ["pop", "gru4rec", "sasrec", "diffurec", "fmrec"], "seeds": SEEDS,
                        "profile": "paper", "grid": {"lr": [1e-3, 3e-3]}},
    "02_trajectory": {"dataset": "ml-100k", "seed": 1997, "steps": [1, 2, 5, 10, 30, 100], "users": 64},
    "03_loss_ablation": {"dataset": "beauty", "seeds": [1997]},
    "04_sampler": {"dataset": "ml-100k", "seed": 1997, "noise_scales": [0.1, 0.3, 1.0], "eval_seeds": [0, 1, 2],
                   "steps": [1, 2, 5, 10, 30]},
    "05_sensitivity": {"dataset": "ml-100k", "seed": 1997,
                       "sweeps": {"alpha": [0.02, 0.2, 1.0], "beta": [0.0, 0.4, 1.0], "delta": [0.001, 0.1, 0.5],
                                  "time_sampler": ["mode", "uniform", "logit-normal", "cosmap"]}},
    "06_open_questions": {"dataset": "ml-100k", "seed": 1997, "noise_scales": [0.3, 1.0]},
    "07_does_the_flow_matter": {"datasets": ["ml-100k", "beauty"], "seeds": SEEDS,
                                "deltas": [0.001, 0.01, 0.1, 0.5, 1.0], "steps": [1, 2, 5, 10, 30]},
}


def is_committed_configuration(notebook: str, params: dict) -> bool:
    """Whether ``params`` (size and device aside) are the notebook's committed defaults."""
    if notebook not in DEFAULTS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(DEFAULTS)}")
    given = {k: v for k, v in params.items() if k not in ("size", "device", "output_dir")}
    return given == {k: DEFAULTS[notebook][k] for k in given} and set(given) >= set(DEFAULTS[notebook])



TIER_DEFAULT, TIER_MAIN, TIER_ABLATION = 0, 1, 2  # FMRec's default run, the main table, the rest


@dataclass(frozen=True)
class TunedSpec:
    """A later-seed run of the main table: the grid point selected on the first seed's runs."""

    dataset: str
    model: str
    grid: dict
    seed: int
    tuning_seed: int
    overrides: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.model} seed {self.seed} (lr tuned on seed {self.tuning_seed})"

    def resolve(self, ctx: "Context") -> RunSpec | None:
        point = selected_point(ctx, self.dataset, self.model, self.grid, seed=self.tuning_seed, **self.overrides)
        return None if point is None else RunSpec(self.dataset, self.model, self.seed, {**self.overrides, **point})


@dataclass
class Job:
    """One run a notebook needs, its priority tier and the sweeps that need its model."""

    spec: RunSpec | TunedSpec
    tier: int
    notebook: str
    sweeps: list[Sweep] = field(default_factory=list)
    seed_rank: int = 0  # 0 for a notebook's first seed: every first seed runs before any later one


def available(ctx: "Context", dataset: str) -> bool:
    """Whether the dataset can be loaded here (a missing file, an offline download, a download
    library the machine lacks: all mean no); the reason is logged once."""
    return ctx.dataset_error(dataset) is None


def _euler(steps: int) -> dict:
    return {"sampler": SamplerConfig(steps=steps)}


def jobs(ctx: "Context", notebook: str, **params) -> list[Job]:
    """The runs and sweeps ``notebook`` needs with ``params`` (default: its committed ones)."""
    p = {**DEFAULTS[notebook], **params}
    out: list[Job] = []
    fm = "fmrec"
    if notebook == "01_main_results":
        for dataset in p["datasets"]:
            if not available(ctx, dataset):
                continue
            for model in p["models"]:
                over = {} if model == "pop" else {"profile": p["profile"]}
                first, *later = p["seeds"]
                points = [{}] if model == "pop" else grid_points(p["grid"])
                for point in points:
                    spec = RunSpec(dataset, model, first, {**over, **point})
                    default = model == fm and point.get("lr", 1e-3) == 1e-3
                    out.append(Job(spec, TIER_DEFAULT if default else TIER_MAIN, notebook))
                for rank, seed in enumerate(later, 1):
                    spec = RunSpec(dataset, model, seed, over) if model == "pop" else \
                        TunedSpec(dataset, model, p["grid"], seed, first, over)
                    out.append(Job(spec, TIER_DEFAULT if model == fm else TIER_MAIN, notebook, seed_rank=rank))
    elif notebook == "02_trajectory":
        for path in ("straight", "cosine"):
            sweeps = [Sweep("metrics", _euler(n)) for n in p["steps"]]
            sweeps.append(Sweep("trajectory", {"users": p["users"], "steps": 30}))
            if path == "straight":
                sweeps.append(Sweep("noise_sensitivity"))
            spec = RunSpec(p["dataset"], fm, p["seed"], {} if path == "straight" else {"path": path})
            out.append(Job(spec, TIER_DEFAULT if path == "straight" else TIER_ABLATION, notebook, sweeps))
    elif notebook == "03_loss_ablation":
        for rank, seed in enumerate(p["seeds"]):
            for name, over in LOSS_VARIANTS.items():
                out.append(Job(RunSpec(p["dataset"], fm, seed, over), TIER_DEFAULT if not over else TIER_ABLATION,
                               notebook, seed_rank=rank))
    elif notebook == "04_sampler":
        sweeps = [Sweep("metrics", {"eval_seed": s, **_noise(scale)}) for scale in (0.0, *p["noise_scales"])
                  for s in p["eval_seeds"]]
        sweeps += [Sweep("metrics", {"sampler": SamplerConfig(steps=n, method=method, update=update)})
                   for method, update in SOLVERS.values() for n in p["steps"]]
        out.append(Job(RunSpec(p["dataset"], fm, p["seed"]), TIER_DEFAULT, notebook, sweeps))
    elif notebook == "05_sensitivity":
        for setting, values in p["sweeps"].items():
            for value in values:
                spec = RunSpec(p["dataset"], fm, p["seed"], {setting: value})
                out.append(Job(spec, TIER_ABLATION, notebook))
    elif notebook == "06_open_questions":
        sweeps = [Sweep("lists", _noise(scale)) for scale in (0.0, *p["noise_scales"])]
        sweeps += [Sweep("metrics", _noise(scale)) for scale in p["noise_scales"]]
        sweeps.append(Sweep("metrics", {"protocol": "clean"}))
        out.append(Job(RunSpec(p["dataset"], fm, p["seed"]), TIER_DEFAULT, notebook, sweeps))
        out.append(Job(RunSpec(p["dataset"], fm, p["seed"], {"profile": "clean"}), TIER_ABLATION, notebook))
    elif notebook == "07_does_the_flow_matter":
        for dataset in p["datasets"]:
            if not available(ctx, dataset):
                continue
            for rank, seed in enumerate(p["seeds"]):
                for name, over in flow_variants(p["deltas"]).items():
                    sweeps = []
                    if rank == 0:  # the notebook reads these for the first seed only
                        sweeps.append(Sweep("noise_sensitivity"))
                        if not over:
                            sweeps += [Sweep("metrics", _euler(n)) for n in p["steps"]]
                    out.append(Job(RunSpec(dataset, fm, seed, over), TIER_DEFAULT if not over else TIER_ABLATION,
                                   notebook, sweeps, seed_rank=rank))
    elif notebook != "00_datasets":
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(DEFAULTS)}")
    return out


def _noise(scale: float) -> dict:
    return {"sampler": SamplerConfig(method="stochastic", noise_scale=scale)} if scale > 0 else {}



def _seed_values(runs: list[Run], metric: str) -> list[float]:
    return [r.test[metric] for r in runs]


def _user_values(runs: list[Run], metric: str) -> np.ndarray | None:
    """Per-user values of ``metric`` averaged over the runs (seeds), or None if any is missing."""
    ranks = [r.per_user_ranks() for r in runs]
    if any(x is None for x in ranks):
        return None
    return np.mean([per_user(x, metric) for x in ranks], axis=0)


def sweep_interval(row: dict, metric: str) -> dict:
    """``<metric>_low``, ``<metric>_high`` and ``error_bar`` of a metrics-sweep row: a 95 %
    interval over the users of that one evaluation (Wilson's for HR)."""
    users = int(row.get("users", 0))
    hit_rate = row.get(f"HR@{metric.split('@')[1]}")  # NDCG@k > 0 exactly for the users HR@k counts
    hits = round(hit_rate / 100.0 * users) if hit_rate is not None else None
    iv = interval_from_summary(row[metric], row.get(f"{metric}_user_sd", 0.0), users, metric, hits=hits)
    return {f"{metric}_low": iv.low, f"{metric}_high": iv.high, "error_bar": iv.kind}


def run_interval(r: Run, metric: str) -> dict:
    """The same for a run's own test metric, from its per-user ranks."""
    iv = _interval_row([r], metric)
    return {f"{metric}_low": iv["low"], f"{metric}_high": iv["high"], "error_bar": iv["error_bar"]}


def _interval_row(runs: list[Run], metric: str) -> dict:
    iv = interval(_seed_values(runs, metric), metric, _user_values(runs[:1], metric) if len(runs) == 1 else None)
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "error_bar": iv.kind}



def dataset_report(ctx: "Context", datasets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset table (full datasets, with missing ones marked and the split check against
    the authors' pickle) and per-user sequence lengths. Names or file paths."""
    from .data import load_dataset

    rows, lengths = [], []
    for name in datasets:
        try:
            ds = load_dataset(name)
        except (DatasetNotFoundError, FileNotFoundError) as e:
            label = DATASETS[name].label if name in DATASETS else name
            rows.append({"dataset": label, "status": "missing", "reason": str(e).splitlines()[0]})
            continue
        check = "no reference split"
        if name in DATASETS:
            try:
                ref = load_reference_split(name)
                check = "equals the authors' split" if ds.same_split(ref) else "DIFFERS from the authors' split"
            except DatasetNotFoundError:
                pass
        rows.append({**ds.stats(), "status": "ok", "split_check": check})
        lengths += [{"dataset": ds.display_name, "length": len(s) + 2} for s in ds.train.values()]
    table = pd.DataFrame(rows)
    ctx.write(table, "00_datasets")
    return table, pd.DataFrame(lengths)


def dataset_caption(ctx: "Context", table: pd.DataFrame) -> str:
    ok = table[table["status"] == "ok"]
    checks = "; ".join(f"{r.dataset}: {r.split_check}" for r in ok.itertuples())
    missing = "; ".join(f"{r.dataset}: {r.reason}" for r in table[table["status"] != "ok"].itertuples()) or "none"
    return ctx.caption(
        "ML-100k, Beauty, Steam and Yelp, leave-one-out splits built by the authors' code.",
        f"{len(ok)} datasets available. Split checks: {checks}. Missing: {missing}. Yelp here is ICLRec's file, "
        "not FMRec's own preprocessing (labelled 'Yelp (ICLRec)'). The table shows full datasets; runs at this size "
        f"use at most {ctx.size.user_cap('*') or 'all'} users per dataset.")



@dataclass
class MainResults:
    per_seed: pd.DataFrame  # one row per dataset x model x seed, test metrics
    summary: pd.DataFrame  # mean, sd and error bar per dataset x model x metric, paper numbers
    tuning: pd.DataFrame  # validation metric of every grid point, the selected one marked
    gains: pd.DataFrame  # FMRec against the strongest baseline: gain with CI and p-value
    beyond: pd.DataFrame  # coverage, popularity, long tail per dataset x model
    missing: list[str]


def main_results(ctx: "Context", datasets: list[str], models: list[str], seeds: list[int], profile: str = "paper",
                 grid: dict | None = None) -> MainResults:
    """Per-seed test metrics of every model (tuned on validation with the same grid at the
    first seed), the summary beside the paper's numbers, FMRec's gain over the strongest
    baseline with a paired test on per-user outcomes, and beyond-accuracy measures."""
    grid = DEFAULTS["01_main_results"]["grid"] if grid is None else grid
    per_seed, tuning, missing, runs = [], [], [], {}
    for dataset in datasets:
        if not available(ctx, dataset):
            missing.append(dataset)
            continue
        for model in models:
            try:
                chosen = {}
                if model != "pop":
                    _, table = ctx.tune(dataset, model, grid, seed=seeds[0], profile=profile)
                    tuning.append(table)
                    chosen = {k: table[table["selected"]].iloc[0][k] for k in grid}
                    chosen = {k: (v.item() if hasattr(v, "item") else v) for k, v in chosen.items()}
                model_runs = [ctx.run(dataset, model, seed, **({} if model == "pop" else {"profile": profile, **chosen}))
                              for seed in seeds]
            except MissingRunError as e:  # paper size on a CPU, or reuse only: render what the stores hold
                missing.append(f"{dataset} {model} (not computed yet: {str(e).split(' and ')[0]})")
                continue
            for seed, r in zip(seeds, model_runs):
                runs.setdefault((dataset, model), []).append(r)
                per_seed.append({"dataset": dataset, "model": model, "profile": r.model_config.get("profile", profile),
                                 "seed": seed,
                                 "config_hash": r.config_hash, **chosen, **{m: r.test[m] for m in METRICS},
                                 **{m: r.test.get(m, math.nan) for m in BEYOND}, "epochs_run": r.epochs_run,
                                 "best_epoch": r.best_epoch, "device": r.device})
    per_seed = pd.DataFrame(per_seed)
    summary = _main_summary(runs)
    gains = _gains(runs, summary)
    beyond = (per_seed.groupby(["dataset", "model"], sort=False)[BEYOND].mean().reset_index()
              if not per_seed.empty else pd.DataFrame(columns=["dataset", "model", *BEYOND]))
    tuning = pd.concat(tuning, ignore_index=True) if tuning else pd.DataFrame()
    for frame, name in ((summary, "01_main_results"), (per_seed, "01_main_results_per_seed"),
                        (tuning, "01_main_results_tuning"), (gains, "01_main_results_gain"),
                        (beyond, "01_main_results_beyond_accuracy")):
        ctx.write(frame, name)
    return MainResults(per_seed, summary, tuning, gains, beyond, missing)


SUMMARY_COLUMNS = ["dataset", "model", "metric", "mean", "sd", "seeds", "low", "high", "error_bar", "paper",
                   "difference_to_paper"]


def _main_summary(runs: dict) -> pd.DataFrame:
    rows = []
    for (dataset, model), rs in runs.items():
        for metric in METRICS:
            values = _seed_values(rs, metric)
            paper = PAPER_NUMBERS.get((dataset, model, metric))
            rows.append({"dataset": dataset, "model": model, "metric": metric, "mean": float(np.mean(values)),
                         "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan, "seeds": len(values),
                         **{k: v for k, v in _interval_row(rs, metric).items() if k != "mean"},
                         "paper": paper, "difference_to_paper": None if paper is None else float(np.mean(values)) - paper})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _gains(runs: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """FMRec's gain over the strongest other trained model per dataset and metric, with a
    paired bootstrap over users of per-user outcomes averaged over seeds."""
    rows = []
    if summary.empty:
        return pd.DataFrame()
    for (dataset, metric), g in summary.groupby(["dataset", "metric"], sort=False):
        fm = g[g["model"] == "fmrec"]
        others = g[~g["model"].isin(["fmrec", "pop"])]
        if fm.empty or others.empty:
            continue
        best = others.loc[others["mean"].idxmax()]
        row = {"dataset": dataset, "metric": metric, "fmrec": fm["mean"].iloc[0], "strongest_baseline": best["model"],
               "baseline": best["mean"],
               "gain_percent": (fm["mean"].iloc[0] - best["mean"]) / best["mean"] * 100 if best["mean"] > 0 else math.nan,
               "claimed_average_gain": CLAIMED_AVERAGE_GAIN, "test": TEST_NAME}
        a, b = _user_values(runs[(dataset, "fmrec")], metric), _user_values(runs[(dataset, best["model"])], metric)
        if a is not None and b is not None:
            res = paired_bootstrap(a, b)
            row.update({"difference": res.difference, "difference_ci_low": res.ci_low,
                        "difference_ci_high": res.ci_high, "gain_ci_low": res.relative_ci_low,
                        "gain_ci_high": res.relative_ci_high, "p_value": res.p_value, "significant": res.significant,
                        "users": res.users})
        rows.append(row)
    return pd.DataFrame(rows)


def main_caption(ctx: "Context", res: MainResults) -> str:
    s = res.summary
    beauty = s[(s["dataset"] == "beauty") & (s["model"] == "fmrec") & (s["metric"] == "HR@5")]
    beauty_txt = (f"{beauty['mean'].iloc[0]:.2f} % ({beauty['error_bar'].iloc[0]})" if len(beauty) else "not run")
    g = res.gains
    if len(g):
        avg = g["gain_percent"].mean()
        tested = g[g["significant"].notna()] if "significant" in g else g.iloc[0:0]
        sig = tested[tested["significant"].astype(bool)]
        better, worse = int((sig["difference"] > 0).sum()), int((sig["difference"] < 0).sum())
        gain_txt = (f"FMRec's relative gain over the strongest baseline, averaged over {len(g)} dataset x metric "
                    f"pairs: {avg:.1f} %; significantly better in {better}, worse in {worse}, not significantly "
                    f"different in {len(tested) - better - worse}, untested (per-user ranks missing) in "
                    f"{len(g) - len(tested)} ({TEST_NAME})")
    else:
        gain_txt = "no gain computed (FMRec or a baseline missing)"
    missing = f" Missing: {'; '.join(res.missing)}." if res.missing else ""
    seeds = int(res.summary["seeds"].max()) if len(res.summary) else 0
    return ctx.caption(
        "Beauty HR@5 = 5.84 %; FMRec beats the strongest baseline by 6.53 % on average over four datasets.",
        f"Beauty FMRec HR@5 = {beauty_txt}; {gain_txt}; {seeds} seed(s), lr tuned on validation NDCG@10 of the "
        f"selected model at the first seed.{missing}")



def trajectory_report(ctx: "Context", dataset: str, seed: int, steps: list[int], users: int = 64):
    """NDCG against Euler steps for the straight and cosine paths, sampled trajectories, and
    how much the default model's prediction depends on the noisy target."""
    rows, paths = [], []
    for path in ("straight", "cosine"):
        r = ctx.run(dataset, "fmrec", seed, **({} if path == "straight" else {"path": path}))
        for n in steps:
            m = ctx.sweep(r, "metrics", **_euler(n))[0]
            rows.append({"path": path, "steps": n, **{k: m[k] for k in METRICS}, **sweep_interval(m, "NDCG@10"),
                         "config_hash": r.config_hash})
        traj = pd.DataFrame(ctx.sweep(r, "trajectory", users=users, steps=30))
        traj["variant"] = path
        paths.append(traj)
        if path == "straight":
            noise = pd.DataFrame(ctx.sweep(r, "noise_sensitivity"))
    table, trajectories = pd.DataFrame(rows), pd.concat(paths, ignore_index=True)
    ctx.write(table, "02_trajectory")
    ctx.write(trajectories, "02_trajectory_paths")
    ctx.write(noise, "02_trajectory_noise_sensitivity")
    return table, trajectories, noise


def trajectory_caption(ctx: "Context", table: pd.DataFrame, noise: pd.DataFrame, steps: list[int]) -> str:
    at30 = table[table["steps"] == 30].set_index("path")["NDCG@10"]
    spread = table.groupby("path")["NDCG@10"].agg(lambda v: v.max() - v.min())
    return ctx.caption(
        "straight trajectories beat cosine ones (fewer discretisation errors for Euler).",
        f"NDCG@10 at 30 steps: straight {at30.get('straight', math.nan):.2f} %, cosine "
        f"{at30.get('cosine', math.nan):.2f} %; spread over {steps[0]}-{steps[-1]} steps: straight "
        f"{spread.get('straight', math.nan):.2f}, cosine {spread.get('cosine', math.nan):.2f} points. Redrawing the "
        f"noise behind x_t changes the default model's x1_hat by {100 * noise['relative_change_of_x1_hat'].max():.3g} % "
        f"at most (t in {list(noise['t'])}).")



LOSS_VARIANTS = {
    "FMRec (x1 prediction)": {},
    "v-prediction": {"prediction": "velocity"},
    "w/o cross-entropy (alpha=0)": {"alpha": 0.0},
    "w/o reconstruction (beta=0)": {"beta": 0.0},
}


def loss_ablation(ctx: "Context", dataset: str, seeds: list[int]) -> pd.DataFrame:
    """Test metrics of each loss variant: one row per variant and metric with its error bar
    (sd over seeds, or a 95 % interval over users for one seed), and the per-seed values."""
    rows, per_seed = [], []
    for name, overrides in LOSS_VARIANTS.items():
        rs = [ctx.run(dataset, "fmrec", seed, **overrides) for seed in seeds]
        per_seed += [{"variant": name, "seed": r.spec.seed, **{m: r.test[m] for m in METRICS},
                      "config_hash": r.config_hash} for r in rs]
        for metric in METRICS:
            rows.append({"variant": name, "metric": metric, **_interval_row(rs, metric), "seeds": len(rs),
                         "hits": _hits(rs, metric), "users": _users(rs)})
    table = pd.DataFrame(rows)
    ctx.write(table, "03_loss_ablation")
    ctx.write(pd.DataFrame(per_seed), "03_loss_ablation_per_seed")
    return table


def _hits(runs: list[Run], metric: str) -> float:
    """Mean number of users with a hit (HR@k) over the runs: small counts are noise."""
    if not metric.startswith("HR"):
        return math.nan
    return float(np.mean([r.test[metric] / 100 * _users([r]) for r in runs]))


def _users(runs: list[Run]) -> int:
    return len(runs[0].ctx.dataset(runs[0].dataset).train)


def loss_caption(ctx: "Context", table: pd.DataFrame, dataset: str) -> str:
    hr5 = table[table["metric"] == "HR@5"].set_index("variant")
    parts = [f"{name} {row['mean']:.2f} % [{row['low']:.2f}, {row['high']:.2f}] ({row['hits']:.0f} hits)"
             for name, row in hr5.iterrows()]
    return ctx.caption(
        "Beauty HR@5 = 5.84 % with x1 prediction and 0.57 % with v-prediction (collapse).",
        f"{dataset} HR@5 out of {int(hr5['users'].iloc[0])} users: " + "; ".join(parts)
        + f". Error bars: {hr5['error_bar'].iloc[0]}; differences inside overlapping intervals are not effects.")



SOLVERS = {"Euler, paper update": ("euler", "paper"), "Euler, textbook update": ("euler", "textbook"),
           "Heun, textbook update": ("heun", "textbook")}


def sampler_report(ctx: "Context", dataset: str, seed: int, noise_scales: list[float], eval_seeds: list[int],
                   steps: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(determinism table: metrics per noise scale and evaluation seed, solver table: metrics
    per sampler and step count) for the default FMRec run."""
    r = ctx.run(dataset, "fmrec", seed)
    det = []
    for scale in (0.0, *noise_scales):
        for s in eval_seeds:
            m = ctx.sweep(r, "metrics", eval_seed=s, **_noise(scale))[0]
            det.append({"noise_scale": scale, "eval_seed": s, **{k: m[k] for k in METRICS}})
    solvers = []
    for label, (method, update) in SOLVERS.items():
        for n in steps:
            m = ctx.sweep(r, "metrics", sampler=SamplerConfig(steps=n, method=method, update=update))[0]
            solvers.append({"sampler": label, "steps": n, "n_model_calls": m["n_model_calls"],
                            **{k: m[k] for k in METRICS}, **sweep_interval(m, "NDCG@10")})
    det, solvers = pd.DataFrame(det), pd.DataFrame(solvers)
    ctx.write(det, "04_sampler_determinism")
    ctx.write(solvers, "04_sampler_solvers")
    return det, solvers


def sampler_caption(ctx: "Context", det: pd.DataFrame, solvers: pd.DataFrame) -> str:
    d = det.groupby("noise_scale")["NDCG@10"]
    at30 = solvers[solvers["steps"] == solvers["steps"].max()].set_index("sampler")["NDCG@10"]
    identical = solvers["NDCG@10"].nunique() == 1
    return ctx.caption(
        "the deterministic sampler avoids the irrelevant suggestions that noise injection causes.",
        f"NDCG@10 deterministic {d.mean().iloc[0]:.2f} % (sd {d.std().iloc[0]:.3f} over evaluation seeds, from x_0 "
        f"and lambda) versus {d.mean().iloc[-1]:.2f} % at noise scale {det['noise_scale'].max()}; at "
        f"{solvers['steps'].max()} steps: " + ", ".join(f"{k} {v:.2f} %" for k, v in at30.items())
        + ("; every sampler and step count gives the same NDCG@10" if identical else "") + ".")



def sensitivity(ctx: "Context", dataset: str, seed: int, sweeps: dict) -> pd.DataFrame:
    """One run per value of each swept setting, the others at the paper's defaults (the shared
    default run is trained once and reused)."""
    rows = []
    for setting, values in sweeps.items():
        for value in values:
            r = ctx.run(dataset, "fmrec", seed, **{setting: value})
            rows.append({"setting": setting, "value": str(value), **_interval_row([r], "NDCG@10"),
                         **{m: r.test[m] for m in METRICS}, "val_NDCG@10": r.val["NDCG@10"],
                         "config_hash": r.config_hash})
    table = pd.DataFrame(rows)
    ctx.write(table, "05_sensitivity")
    return table


def paper_defaults(settings) -> dict:
    """The paper's value of each swept FMRec setting (from ``FMRecConfig``, the one source)."""
    from .models import FMRecConfig

    defaults = FMRecConfig()
    return {s: getattr(defaults, s) for s in settings}


def sensitivity_caption(ctx: "Context", table: pd.DataFrame) -> str:
    by = {s: g.set_index("value")["NDCG@10"] for s, g in table.groupby("setting", sort=False)}
    fmt = lambda s: ", ".join(f"{k}: {v:.2f}" for k, v in by[s].items())  # noqa: E731
    return ctx.caption(
        "too small an alpha collapses the embeddings; delta > 0.1 harms generation.",
        "NDCG@10 (%) by " + "; ".join(f"{s} {{{fmt(s)}}}" for s in by) + ".")



def diversity_report(ctx: "Context", dataset: str, seed: int, noise_scales: list[float], k: int = 10) -> pd.DataFrame:
    """Beyond accuracy, deterministic against stochastic sampling: catalogue coverage@k,
    intra-list diversity, and the overlap of each user's list between two evaluation seeds."""
    r = ctx.run(dataset, "fmrec", seed)
    rows = []
    for scale in (0.0, *noise_scales):
        stats = ctx.sweep(r, "lists", **_noise(scale))[0]
        if scale == 0:
            accuracy, band = r.test, run_interval(r, f"HR@{k}")
        else:
            accuracy = ctx.sweep(r, "metrics", **_noise(scale))[0]
            band = sweep_interval(accuracy, f"HR@{k}")
        rows.append({**stats, "noise_scale": scale, f"NDCG@{k}": accuracy[f"NDCG@{k}"], f"HR@{k}": accuracy[f"HR@{k}"],
                     **band})
    table = pd.DataFrame(rows)
    ctx.write(table, "06_open_questions_diversity")
    return table


def diversity_figure_frame(diversity: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Notebook 06's figure data, one row per noise scale and measure: HR@k with its interval
    over users; coverage and overlap are properties of all users' lists, not estimates."""
    rows = []
    for r in diversity.to_dict("records"):
        rows.append({"noise_scale": r["noise_scale"], "measure": f"HR@{k}", "mean": r[f"HR@{k}"],
                     "low": r[f"HR@{k}_low"], "high": r[f"HR@{k}_high"], "error_bar": r["error_bar"]})
        for measure in (f"coverage@{k}", f"overlap@{k}_between_seeds"):
            rows.append({"noise_scale": r["noise_scale"], "measure": measure, "mean": r[measure], "low": r[measure],
                         "high": r[measure], "error_bar": "coverage and overlap: all users' lists, no sampling error"})
    return pd.DataFrame(rows)


def profile_report(ctx: "Context", dataset: str, seed: int) -> pd.DataFrame:
    """What the authors' quirks change: FMRec trained and evaluated in each profile, and the
    paper-profile model evaluated under the clean protocol (padding item excluded)."""
    rows = []
    for profile in ("paper", "clean"):
        r = ctx.run(dataset, "fmrec", seed, **({} if profile == "paper" else {"profile": profile}))
        rows.append({"trained": profile, "evaluated": profile, **{m: r.test[m] for m in METRICS}})
        if profile == "paper":
            m = ctx.sweep(r, "metrics", protocol="clean")[0]
            rows.append({"trained": "paper", "evaluated": "clean", **{k: m[k] for k in METRICS}})
    table = pd.DataFrame(rows)
    ctx.write(table, "06_open_questions_profiles")
    return table


def open_questions_caption(ctx: "Context", diversity: pd.DataFrame, profiles: pd.DataFrame) -> str:
    det, noisy = diversity.iloc[0], diversity.iloc[-1]
    p = profiles.set_index(["trained", "evaluated"])["NDCG@10"]
    return ctx.caption(
        "not measured: the paper reports accuracy only, and its code has a query-row mask and scores the padding item.",
        f"deterministic: coverage@10 {det['coverage@10']:.1f} %, ILD {det['ILD@10']:.3f}, list overlap between "
        f"evaluation seeds {det['overlap@10_between_seeds']:.1f} %, NDCG@10 {det['NDCG@10']:.2f} %; noise scale "
        f"{noisy['noise_scale']}: coverage {noisy['coverage@10']:.1f} %, ILD {noisy['ILD@10']:.3f}, overlap "
        f"{noisy['overlap@10_between_seeds']:.1f} %, NDCG@10 {noisy['NDCG@10']:.2f} %. NDCG@10 paper profile "
        f"{p[('paper', 'paper')]:.2f} %, same model under the clean protocol {p[('paper', 'clean')]:.2f} %, "
        f"clean profile {p[('clean', 'clean')]:.2f} %.")



def flow_variants(deltas: list[float]) -> dict[str, dict]:
    """The variants of notebook 07: the default, no flow input, no flow-matching term, and
    the delta grid (the default's delta is the paper's 1e-3)."""
    variants = {"default": {}, "no flow input": {"flow_input": False, "sampler": SamplerConfig(steps=1)},
                "no flow-matching term": {"fm_weight": 0.0}}
    variants.update({f"delta={d:g}": {"delta": d} for d in deltas if d != 1e-3})
    return variants


@dataclass
class FlowResults:
    variants: pd.DataFrame  # one row per dataset x variant x metric: mean, sd, paired test vs the default
    sensitivity: pd.DataFrame  # change of x1_hat when the noise is redrawn, per dataset x variant x t
    cost: pd.DataFrame  # quality against model calls and latency per model / sampler
    per_seed: pd.DataFrame


def flow_matters(ctx: "Context", datasets: list[str], seeds: list[int], deltas: list[float], steps: list[int],
                 cost_users: int = COST_USERS) -> FlowResults:
    """Is FMRec's flow doing anything? Variants trained with the same budget and seeds, the
    measured use of x_t, and the cost of sampling against its quality."""

    variants, sens, cost, per_seed = [], [], [], []
    for dataset in datasets:
        if not available(ctx, dataset):
            continue
        runs = {name: [ctx.run(dataset, "fmrec", seed, **over) for seed in seeds]
                for name, over in flow_variants(deltas).items()}
        for name, rs in runs.items():
            per_seed += [{"dataset": dataset, "variant": name, "seed": r.spec.seed, **{m: r.test[m] for m in METRICS}}
                         for r in rs]
            for metric in ("HR@10", "NDCG@10"):
                row = {"dataset": dataset, "variant": name, "metric": metric, **_interval_row(rs, metric),
                       "sd_over_seeds": float(np.std(_seed_values(rs, metric), ddof=1)) if len(rs) > 1 else math.nan}
                a, b = _user_values(rs, metric), _user_values(runs["default"], metric)
                if name != "default" and a is not None and b is not None:
                    res = paired_bootstrap(a, b)
                    row.update({"difference": res.difference, "ci_low": res.ci_low, "ci_high": res.ci_high,
                                "p_value": res.p_value, "significant": res.significant})
                variants.append(row)
            for r in rs[:1]:
                for srow in ctx.sweep(r, "noise_sensitivity"):
                    sens.append({"dataset": dataset, "variant": name, **srow})
        default = runs["default"][0]
        for n in steps:
            m = ctx.sweep(default, "metrics", **_euler(n))[0]
            cost.append({"dataset": dataset, "label": f"FMRec, {n} Euler step{'s' if n > 1 else ''}", "model": "fmrec",
                         "n_model_calls": m["n_model_calls"], "NDCG@10": m["NDCG@10"], **sweep_interval(m, "NDCG@10")})
        for model in ("diffurec", "sasrec", "gru4rec"):
            found = _main_table_run(ctx, dataset, model, seeds[0])
            if found is not None:
                cost.append({"dataset": dataset, "label": MODEL_LABELS[model], "model": model,
                             "n_model_calls": _calls(found), "NDCG@10": found.test["NDCG@10"],
                             **run_interval(found, "NDCG@10")})
    cost = pd.DataFrame(cost)
    if not cost.empty:

        entries = cost_entries(steps)
        latency = []
        for dataset in cost["dataset"].unique():
            latency += [{**r, "dataset": dataset} for r in latency_table(ctx, dataset, entries, cost_users)]
        latency = pd.DataFrame(latency)[["dataset", "label", "ms_per_1000_users", "device"]]
        cost = cost.merge(latency, on=["dataset", "label"], how="left")
    variants, sens, per_seed = pd.DataFrame(variants), pd.DataFrame(sens), pd.DataFrame(per_seed)
    for frame, name in ((variants, "07_does_the_flow_matter"), (sens, "07_does_the_flow_matter_noise_sensitivity"),
                        (cost, "07_does_the_flow_matter_cost"), (per_seed, "07_does_the_flow_matter_per_seed")):
        ctx.write(frame, name)
    return FlowResults(variants, sens, cost, per_seed)


def cost_entries(steps: list[int]) -> list[tuple]:
    """What notebook 07 times: FMRec with each step count, DiffuRec, SASRec, GRU4Rec."""
    entries = [(f"FMRec, {n} Euler step{'s' if n > 1 else ''}", "fmrec", {}, SamplerConfig(steps=n)) for n in steps]
    return entries + [(MODEL_LABELS[m], m, {}, None) for m in ("diffurec", "sasrec", "gru4rec")]


def sampling_cost_key(ctx: "Context", dataset: str, entries: list[tuple], users: int,
                      device_type: str | None = None) -> dict:
    """The cache key of a latency table measured on a kind of device (``cuda``, ``cpu``)."""
    return {"size": ctx.size.name, "dataset": dataset, "users": users, "entries": [e[0] for e in entries],
            "device_type": device_type or ctx.device.type}


def latency_table(ctx: "Context", dataset: str, entries: list[tuple], users: int) -> list[dict]:
    """The latency rows of notebook 07: a GPU measurement when a store has one (so a CPU
    rendering of paper-size results shows the GPU's), else this device's, measured now."""
    from .analyses import sampling_cost
    from .runs import cached_rows, key_text, lookup

    for device_type in dict.fromkeys(("cuda", ctx.device.type)):
        key = key_text(sampling_cost_key(ctx, dataset, entries, users, device_type))
        for store in ctx.stores:
            rows = lookup(store.cache("sampling_cost"), key)
            if rows is not None:
                return rows
    return cached_rows([s.cache("sampling_cost") for s in ctx.stores],
                       sampling_cost_key(ctx, dataset, entries, users),
                       lambda: sampling_cost(ctx, dataset, entries, users=users))


def _main_table_run(ctx: "Context", dataset: str, model: str, seed: int) -> Run | None:
    """The main table's tuned run of ``model`` (if notebook 01 has produced it), else None."""
    from .runs import find

    grid = DEFAULTS["01_main_results"]["grid"]
    profile = DEFAULTS["01_main_results"]["profile"]
    point = selected_point(ctx, dataset, model, grid, seed=seed, profile=profile)
    return None if point is None else find(ctx, RunSpec(dataset, model, seed, {"profile": profile, **point}))


def _calls(run: Run) -> int:
    from .runs import model_config_of

    cfg = model_config_of(run)
    return getattr(cfg, "diffusion_steps", None) or (cfg.sampler.n_model_calls if hasattr(cfg, "sampler") else 1)


def flow_conclusion(ctx: "Context", res: FlowResults) -> str:
    """The notebook's conclusion, generated from the numbers: which variants are within noise
    of the default, where the network starts to use x_t, and the free speed-up."""
    lines = []
    v = res.variants[res.variants["metric"] == "NDCG@10"] if not res.variants.empty else res.variants
    for dataset, g in v.groupby("dataset", sort=False):
        base = g[g["variant"] == "default"].iloc[0]
        same, differ = [], []
        for row in g[g["variant"] != "default"].itertuples():
            if not hasattr(row, "significant") or (isinstance(row.significant, float) and math.isnan(row.significant)):
                continue
            (differ if row.significant else same).append(
                f"{row.variant} ({row.mean:.2f} %, difference {row.difference:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}])")
        lines.append(f"- **{dataset}**: default NDCG@10 {base['mean']:.2f} % ({base['error_bar']}). Not significantly "
                     f"different from the default: {', '.join(same) or 'none'}. Significantly different: "
                     f"{', '.join(differ) or 'none'} ({TEST_NAME}).")
    s = res.sensitivity
    if not s.empty:
        for dataset, g in s.groupby("dataset", sort=False):
            peak = g.groupby("variant")["relative_change_of_x1_hat"].max()
            used = peak[peak > 0.01]
            lines.append(f"- **{dataset}**, use of x_t (largest relative change of x1_hat when the noise behind x_t is "
                         f"redrawn): default {100 * peak.get('default', math.nan):.3g} %; variants above 1 %: "
                         + (", ".join(f"{k} {100 * x:.0f} %" for k, x in used.items()) or "none") + ".")
    c = res.cost
    if not c.empty and "ms_per_1000_users" in c:
        fm = c[c["model"] == "fmrec"].sort_values("n_model_calls")
        for dataset, g in fm.groupby("dataset", sort=False):
            one, full = g.iloc[0], g.iloc[-1]
            if math.isclose(one["NDCG@10"], full["NDCG@10"], rel_tol=0.01, abs_tol=1e-9):  # within 1 %
                lines.append(f"- **{dataset}**: {int(one['n_model_calls'])} model call gives NDCG@10 {one['NDCG@10']:.2f} % "
                             f"against {full['NDCG@10']:.2f} % with {int(full['n_model_calls'])}: a "
                             f"{full['n_model_calls'] / one['n_model_calls']:.0f}x cheaper sampler at no cost in quality"
                             + (f" ({full['ms_per_1000_users'] / one['ms_per_1000_users']:.1f}x measured on "
                                f"{one['device']})" if one['ms_per_1000_users'] > 0 else "") + ".")
            else:
                lines.append(f"- **{dataset}**: fewer steps change NDCG@10 ({one['NDCG@10']:.2f} % with "
                             f"{int(one['n_model_calls'])} call, {full['NDCG@10']:.2f} % with {int(full['n_model_calls'])}).")
    return "\n".join(lines) + f"\n\n*{ctx.stamp()}*"
