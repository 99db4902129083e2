"""One section per notebook: the runs it needs (its one declaration, a list of
:class:`~fmrec_lib.experiments.notebooks.Need` registered in :data:`NEEDS`), and its report, which
computes (or reuses) those runs, writes the notebook's tidy tables and says in a caption what the
paper claims and what we measured, from the numbers only. The campaign plans from the same
declarations (:func:`needs`), so a notebook's runs are written down once.

A notebook's committed configuration is its parameters cell
(:func:`fmrec_lib.experiments.notebooks.defaults`).
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..data import DATASETS, DatasetNotFoundError, load_reference_split
from ..evaluation.stats import TEST_NAME, interval, interval_from_summary, paired_bootstrap, per_user
from ..flow.solvers import SamplerConfig
from ..models import FMRecConfig
from . import runs
from .analyses import sampling_cost
from . import notebooks
from .notebooks import Need
from .paper import CLAIMED_AVERAGE_GAIN, PAPER_NUMBERS
from .runs import MissingRunError, Run, RunSpec, Sweep, TunedSpec, grid_points, model_config_of, selected_point
from .store import cached_rows, key_text, lookup
from ..utils import device_text

log = logging.getLogger(__name__)

METRICS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)]
BEYOND = ["coverage@10", "avg_popularity@10", "long_tail@10"]
COST_USERS = 1000  # users whose scoring notebook 07 times per model
MODEL_LABELS = {"pop": "popularity", "gru4rec": "GRU4Rec", "sasrec": "SASRec", "diffurec": "DiffuRec", "fmrec": "FMRec"}
FM = "fmrec"

NEEDS: dict[str, Callable[..., list[Need]]] = {}  # notebook -> its declaration


def declares(notebook: str):
    """Register a function ``(ctx, **parameters) -> list[Need]`` as ``notebook``'s declaration."""
    def register(fn):
        NEEDS[notebook] = fn
        return fn
    return register


def needs(ctx, notebook: str, **params) -> list[Need]:
    """The runs and sweeps ``notebook`` needs with ``params`` (default: its committed ones)."""
    p = {**notebooks.defaults(notebook), **params}
    return NEEDS[notebook](ctx, **p) if notebook in NEEDS else []


def not_computed(ctx, notebook: str) -> list[str]:
    """The runs ``notebook`` declares that no store holds (a tuned model's later seed counts
    until its tuning runs are recorded)."""
    out = []
    for need in needs(ctx, notebook):
        spec = need.spec.resolve(ctx) if isinstance(need.spec, TunedSpec) else need.spec
        if spec is None or runs.find(ctx, spec) is None:
            out.append(need.spec.name)
    return out


def available(ctx, dataset: str) -> bool:
    """Whether the dataset can be loaded here, from its files or its record (a missing file, an
    offline download: no); the reason is logged once."""
    return ctx.dataset_error(dataset) is None


def _euler(steps: int) -> dict:
    return {"sampler": SamplerConfig(steps=steps)}


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


# -- 00: datasets ------------------------------------------------------------------------------

def dataset_report(ctx, datasets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset table (whole datasets, with the split check against the authors' pickle) and
    per-user sequence lengths. Names or file paths. A named dataset whose files are missing here
    is shown from its record (written when the table was computed with the files)."""
    rows, lengths = [], []
    for name in datasets:
        ds = ctx.dataset(name, capped=False)
        facts = getattr(ds, "facts", None)  # a dataset known by its record only
        if facts is None:
            check = "no reference split"
            if name in DATASETS:
                try:
                    ref = load_reference_split(name)
                    check = "equals the authors' split" if ds.same_split(ref) else "DIFFERS from the authors' split"
                except DatasetNotFoundError:
                    pass
            counts = pd.Series([len(s) + 2 for s in ds.train.values()]).value_counts().sort_index()
            facts = {"stats": ds.stats(), "split_check": check, "lengths": {int(k): int(v) for k, v in counts.items()}}
            if name in DATASETS:
                ctx.record_dataset(name, **facts)
        elif "stats" not in facts:
            raise DatasetNotFoundError(f"dataset {name!r}: its files are not here and its record has no statistics "
                                       f"({ds.reason})")
        rows.append({**facts["stats"], "split_check": facts["split_check"]})
        lengths += [{"dataset": facts["stats"]["dataset"], "length": int(k)}
                    for k, v in facts["lengths"].items() for _ in range(v)]
    table = pd.DataFrame(rows)
    ctx.write(table, "00_datasets", "counts; avg_length in items; sparsity a fraction (whole datasets)", capped=False)
    return table, pd.DataFrame(lengths)


def dataset_caption(ctx, table: pd.DataFrame) -> str:
    checks = "; ".join(f"{r.dataset}: {r.split_check}" for r in table.itertuples())
    return ctx.caption(
        "ML-100k, Beauty, Steam and Yelp, leave-one-out splits built by the authors' code.",
        f"{len(table)} datasets. Split checks: {checks}. Steam is not in this suite: its public file has no pinned "
        "checksum (load_dataset('steam', allow_unverified=True) reads it). Yelp here is ICLRec's file, not FMRec's "
        "own preprocessing (labelled 'Yelp (ICLRec)'). The table shows whole datasets; runs at this size use at most "
        f"{ctx.size.user_cap('*') or 'all'} users per dataset.")


# -- 01: main results --------------------------------------------------------------------------

@declares("01_main_results")
def main_results_needs(ctx, datasets: list[str], models: list[str], seeds: list[int], profile: str,
                       grid: dict) -> list[Need]:
    """Per dataset and model: every grid point at the first seed (popularity: no grid), then
    the later seeds at the point selected on validation (known once the first seed's runs are)."""
    out = []
    first, *later = seeds
    for dataset, model in itertools.product(datasets, models):
        over = {} if model == "pop" else {"profile": profile}
        points = [{}] if model == "pop" else grid_points(grid)
        out += [Need(RunSpec(dataset, model, first, {**over, **point}), (dataset, model, "grid", i))
                for i, point in enumerate(points)]
        out += [Need(RunSpec(dataset, model, seed, over) if model == "pop" else
                     TunedSpec(dataset, model, grid, seed, first, over), (dataset, model, "seed", seed))
                for seed in later]
    return out


@dataclass
class MainResults:
    per_seed: pd.DataFrame  # one row per dataset x model x seed, test metrics
    summary: pd.DataFrame  # mean, sd and error bar per dataset x model x metric, paper numbers
    tuning: pd.DataFrame  # validation metric of every grid point, the selected one marked
    gains: pd.DataFrame  # FMRec against the strongest baseline: gain with CI and p-value
    beyond: pd.DataFrame  # coverage, popularity, long tail per dataset x model
    missing: list[str]


def main_results(ctx, datasets: list[str], models: list[str], seeds: list[int], profile: str = "paper",
                 grid: dict | None = None) -> MainResults:
    """Per-seed test metrics of every model (tuned on validation with the same grid at the
    first seed), the summary beside the paper's numbers, FMRec's gain over the strongest
    baseline with a paired test on per-user outcomes, and beyond-accuracy measures. At paper
    size, runs not computed yet are listed (``missing``) and the rest is shown."""
    grid = notebooks.defaults("01_main_results")["grid"] if grid is None else grid
    per_seed, tuning, missing, found = [], [], [], {}
    for (dataset, model), group in itertools.groupby(main_results_needs(ctx, datasets, models, seeds, profile, grid),
                                                     key=lambda n: n.role[:2]):
        group, chosen, model_runs, label = list(group), {}, None, ctx.label(dataset)
        grid_needs = [n for n in group if n.role[2] == "grid"]
        if model == "pop":
            model_runs = _or_missing(ctx, missing, f"{label} {model}",
                                     lambda: [runs.run(ctx, n.spec) for n in grid_needs])
        else:
            points = [{k: n.spec.overrides[k] for k in grid} for n in grid_needs]
            tuned = _or_missing(ctx, missing, f"{label} {model}",
                                lambda: runs.tune(ctx, [n.spec for n in grid_needs], points))
            if tuned is not None:
                tuning.append(tuned[1])
                chosen, model_runs = points[int(np.argmax(tuned[1]["selected"]))], [tuned[0]]
        if model_runs is None:
            continue
        for n in (n for n in group if n.role[2] == "seed"):
            spec = n.spec.resolve(ctx) if isinstance(n.spec, TunedSpec) else n.spec
            model_runs.append(_or_missing(ctx, missing, f"{label} {model} seed {spec.seed}",
                                          lambda: runs.run(ctx, spec)))
        for r in filter(None, model_runs):
            found.setdefault((label, model), []).append(r)
            per_seed.append({"dataset": label, "model": model, "profile": r.model_config.get("profile", profile),
                             "seed": r.spec.seed, "config_hash": r.config_hash, **chosen,
                             **{m: r.test[m] for m in METRICS}, **{m: r.test.get(m, math.nan) for m in BEYOND},
                             "epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "device": r.device})
    per_seed = pd.DataFrame(per_seed)
    summary = _main_summary(found, with_paper=ctx.size.name == "paper")
    gains = _gains(found, summary)
    beyond = (per_seed.groupby(["dataset", "model"], sort=False)[BEYOND].mean().reset_index()
              if not per_seed.empty else pd.DataFrame(columns=["dataset", "model", *BEYOND]))
    tuning = pd.concat(tuning, ignore_index=True) if tuning else pd.DataFrame()
    for frame, name, unit in ((summary, "01_main_results", "%"),
                              (per_seed, "01_main_results_per_seed", "% (avg_popularity@10: training interactions)"),
                              (tuning, "01_main_results_tuning", "%"), (gains, "01_main_results_gain", "%"),
                              (beyond, "01_main_results_beyond_accuracy", "% (avg_popularity@10: training interactions)")):
        ctx.write(frame, name, unit)
    return MainResults(per_seed, summary, tuning, gains, beyond, missing)


def _or_missing(ctx, missing: list[str], label: str, compute):
    """``compute()``; at paper size, whose runs come in tiers from GPU sessions, a run not
    computed yet is named in ``missing`` instead (None is returned)."""
    try:
        return compute()
    except MissingRunError as e:
        if ctx.size.name != "paper":
            raise
        missing.append(f"{label} (not computed yet: {str(e).split(' and ')[0]})")
        return None


SUMMARY_COLUMNS = ["dataset", "model", "metric", "mean", "sd", "seeds", "low", "high", "error_bar"]


def _main_summary(runs: dict, with_paper: bool) -> pd.DataFrame:
    """Mean, sd and error bar per dataset, model and metric; at paper size beside the paper's
    number where it gave one (a smaller size is not a test of the paper)."""
    rows = []
    for (dataset, model), rs in runs.items():
        for metric in METRICS:
            values = _seed_values(rs, metric)
            paper = PAPER_NUMBERS.get((dataset, model, metric)) if with_paper else None
            rows.append({"dataset": dataset, "model": model, "metric": metric, "mean": float(np.mean(values)),
                         "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan, "seeds": len(values),
                         **{k: v for k, v in _interval_row(rs, metric).items() if k != "mean"},
                         **({"paper": paper, "difference_to_paper": float(np.mean(values)) - paper} if paper else {})})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS + (["paper", "difference_to_paper"] if with_paper else []))


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


def main_caption(ctx, res: MainResults) -> str:
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


# -- 02: trajectories and steps -------------------------------------------------------------

@declares("02_trajectory")
def trajectory_needs(ctx, dataset: str, seed: int, steps: list[int], users: int) -> list[Need]:
    """FMRec on the straight and the cosine path; of each model: metrics per Euler step count and
    sampled trajectories, and of the default one how much x1_hat depends on x_t."""
    out = []
    for path in ("straight", "cosine"):
        sweeps = {("steps", n): Sweep("metrics", _euler(n)) for n in steps}
        sweeps[("trajectory",)] = Sweep("trajectory", {"users": users, "steps": 30})
        if path == "straight":
            sweeps[("noise",)] = Sweep("noise_sensitivity")
        out.append(Need(RunSpec(dataset, FM, seed, {} if path == "straight" else {"path": path}), (path,), sweeps))
    return out


def trajectory_report(ctx, dataset: str, seed: int, steps: list[int], users: int = 64):
    """NDCG against Euler steps for the straight and cosine paths, sampled trajectories, and
    how much the default model's prediction depends on the noisy target."""
    rows, paths, noise = [], [], None
    for need in trajectory_needs(ctx, dataset, seed, steps, users):
        (path,) = need.role
        r = runs.run(ctx, need.spec)
        for role, sw in need.sweeps.items():
            found = ctx.sweep(r, sw)
            if role[0] == "steps":
                m = found[0]
                rows.append({"path": path, "steps": role[1], **{k: m[k] for k in METRICS},
                             **sweep_interval(m, "NDCG@10"), "config_hash": r.config_hash})
            elif role[0] == "trajectory":
                traj = pd.DataFrame(found)
                traj["variant"] = path
                paths.append(traj)
            else:
                noise = pd.DataFrame(found)
    table, trajectories = pd.DataFrame(rows), pd.concat(paths, ignore_index=True)
    ctx.write(table, "02_trajectory", "%", dataset=dataset)
    ctx.write(trajectories, "02_trajectory_paths", "relative distance a fraction; target rank 0-based", dataset=dataset)
    ctx.write(noise, "02_trajectory_noise_sensitivity", "relative change a fraction", dataset=dataset)
    return table, trajectories, noise


def trajectory_caption(ctx, table: pd.DataFrame, noise: pd.DataFrame, steps: list[int]) -> str:
    at30 = table[table["steps"] == 30].set_index("path")["NDCG@10"]
    spread = table.groupby("path")["NDCG@10"].agg(lambda v: v.max() - v.min())
    return ctx.caption(
        "straight trajectories beat cosine ones (fewer discretisation errors for Euler).",
        f"NDCG@10 at 30 steps: straight {at30.get('straight', math.nan):.2f} %, cosine "
        f"{at30.get('cosine', math.nan):.2f} %; spread over {steps[0]}-{steps[-1]} steps: straight "
        f"{spread.get('straight', math.nan):.2f}, cosine {spread.get('cosine', math.nan):.2f} points. Redrawing the "
        f"noise behind x_t changes the default model's x1_hat by {100 * noise['relative_change_of_x1_hat'].max():.3g} % "
        f"at most (t in {list(noise['t'])}).")


# -- 03: loss ablation ------------------------------------------------------------------------

LOSS_VARIANTS = {
    "FMRec (x1 prediction)": {},
    "v-prediction": {"prediction": "velocity"},
    "w/o cross-entropy (alpha=0)": {"alpha": 0.0},
    "w/o reconstruction (beta=0)": {"beta": 0.0},
}


@declares("03_loss_ablation")
def loss_ablation_needs(ctx, dataset: str, seeds: list[int]) -> list[Need]:
    return [Need(RunSpec(dataset, FM, seed, over), (name, seed)) for name, over in LOSS_VARIANTS.items()
            for seed in seeds]


def loss_ablation(ctx, dataset: str, seeds: list[int]) -> pd.DataFrame:
    """Test metrics of each loss variant: one row per variant and metric with its error bar
    (sd over seeds, or a 95 % interval over users for one seed), and the per-seed values."""
    rows, per_seed = [], []
    for name, group in itertools.groupby(loss_ablation_needs(ctx, dataset, seeds), key=lambda n: n.role[0]):
        rs = [runs.run(ctx, n.spec) for n in group]
        per_seed += [{"variant": name, "seed": r.spec.seed, **{m: r.test[m] for m in METRICS},
                      "config_hash": r.config_hash} for r in rs]
        for metric in METRICS:
            rows.append({"variant": name, "metric": metric, **_interval_row(rs, metric), "seeds": len(rs),
                         "hits": _hits(rs, metric), "users": _users(rs)})
    table = pd.DataFrame(rows)
    ctx.write(table, "03_loss_ablation", "% (hits, users: counts)", dataset=dataset)
    ctx.write(pd.DataFrame(per_seed), "03_loss_ablation_per_seed", "%", dataset=dataset)
    return table


def _hits(runs: list[Run], metric: str) -> float:
    """Mean number of users with a hit (HR@k) over the runs: small counts are noise."""
    if not metric.startswith("HR"):
        return math.nan
    return float(np.mean([r.test[metric] / 100 * _users([r]) for r in runs]))


def _users(runs: list[Run]) -> int:
    return runs[0].ctx.dataset(runs[0].dataset).num_users


def loss_caption(ctx, table: pd.DataFrame, dataset: str) -> str:
    hr5 = table[table["metric"] == "HR@5"].set_index("variant")
    parts = [f"{name} {row['mean']:.2f} % [{row['low']:.2f}, {row['high']:.2f}] ({row['hits']:.0f} hits)"
             for name, row in hr5.iterrows()]
    return ctx.caption(  # the paper reports this ablation on Beauty only
        "Beauty HR@5 = 5.84 % with x1 prediction and 0.57 % with v-prediction (collapse)." if dataset == "beauty"
        else None,
        f"{ctx.label(dataset)} HR@5 out of {int(hr5['users'].iloc[0])} users: " + "; ".join(parts)
        + f". Error bars: {hr5['error_bar'].iloc[0]}; differences inside overlapping intervals are not effects.")


# -- 04: sampler ------------------------------------------------------------------------------

SOLVERS = {"Euler, paper update": ("euler", "paper"), "Euler, textbook update": ("euler", "textbook"),
           "Heun, textbook update": ("heun", "textbook")}


@declares("04_sampler")
def sampler_needs(ctx, dataset: str, seed: int, noise_scales: list[float], eval_seeds: list[int],
                  steps: list[int]) -> list[Need]:
    """The default FMRec run; its metrics per injected noise scale and evaluation seed, and per
    solver and step count."""
    sweeps = {("determinism", scale, s): Sweep("metrics", {"eval_seed": s, **_noise(scale)})
              for scale in (0.0, *noise_scales) for s in eval_seeds}
    sweeps.update({("solver", label, n): Sweep("metrics", {"sampler": SamplerConfig(steps=n, method=m, update=u)})
                   for label, (m, u) in SOLVERS.items() for n in steps})
    return [Need(RunSpec(dataset, FM, seed), ("default",), sweeps)]


def sampler_report(ctx, dataset: str, seed: int, noise_scales: list[float], eval_seeds: list[int],
                   steps: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(determinism table: metrics per noise scale and evaluation seed, solver table: metrics
    per sampler and step count) for the default FMRec run."""
    (need,) = sampler_needs(ctx, dataset, seed, noise_scales, eval_seeds, steps)
    r = runs.run(ctx, need.spec)
    det, solvers = [], []
    for (kind, a, b), sw in need.sweeps.items():
        m = ctx.sweep(r, sw)[0]
        if kind == "determinism":
            det.append({"noise_scale": a, "eval_seed": b, **{k: m[k] for k in METRICS}})
        else:
            solvers.append({"sampler": a, "steps": b, "n_model_calls": m["n_model_calls"],
                            **{k: m[k] for k in METRICS}, **sweep_interval(m, "NDCG@10")})
    det, solvers = pd.DataFrame(det), pd.DataFrame(solvers)
    ctx.write(det, "04_sampler_determinism", "%", dataset=dataset)
    ctx.write(solvers, "04_sampler_solvers", "%", dataset=dataset)
    return det, solvers


def sampler_caption(ctx, det: pd.DataFrame, solvers: pd.DataFrame) -> str:
    d = det.groupby("noise_scale")["NDCG@10"]
    at30 = solvers[solvers["steps"] == solvers["steps"].max()].set_index("sampler")["NDCG@10"]
    identical = solvers["NDCG@10"].nunique() == 1
    return ctx.caption(
        "the deterministic sampler avoids the irrelevant suggestions that noise injection causes.",
        f"NDCG@10 deterministic {d.mean().iloc[0]:.2f} % (sd {d.std().iloc[0]:.3f} over evaluation seeds, from x_0 "
        f"and lambda) versus {d.mean().iloc[-1]:.2f} % at noise scale {det['noise_scale'].max()}; at "
        f"{solvers['steps'].max()} steps: " + ", ".join(f"{k} {v:.2f} %" for k, v in at30.items())
        + ("; every sampler and step count gives the same NDCG@10" if identical else "") + ".")


# -- 05: sensitivity --------------------------------------------------------------------------

@declares("05_sensitivity")
def sensitivity_needs(ctx, dataset: str, seed: int, sweeps: dict) -> list[Need]:
    """One run per value of each swept setting, the others at the paper's defaults (the shared
    default run is one run)."""
    return [Need(RunSpec(dataset, FM, seed, {setting: value}), (setting, value))
            for setting, values in sweeps.items() for value in values]


def sensitivity(ctx, dataset: str, seed: int, sweeps: dict) -> pd.DataFrame:
    rows = []
    for need in sensitivity_needs(ctx, dataset, seed, sweeps):
        setting, value = need.role
        r = runs.run(ctx, need.spec)
        rows.append({"setting": setting, "value": str(value), **_interval_row([r], "NDCG@10"),
                     **{m: r.test[m] for m in METRICS}, "val_NDCG@10": r.val["NDCG@10"],
                     "config_hash": r.config_hash})
    table = pd.DataFrame(rows)
    ctx.write(table, "05_sensitivity", "%", dataset=dataset)
    return table


def paper_defaults(settings) -> dict:
    """The paper's value of each swept FMRec setting (from ``FMRecConfig``, the one source)."""
    defaults = FMRecConfig()
    return {s: getattr(defaults, s) for s in settings}


def sensitivity_caption(ctx, table: pd.DataFrame) -> str:
    by = {s: g.set_index("value")["NDCG@10"] for s, g in table.groupby("setting", sort=False)}
    fmt = lambda s: ", ".join(f"{k}: {v:.2f}" for k, v in by[s].items())  # noqa: E731
    return ctx.caption(
        "too small an alpha collapses the embeddings; delta > 0.1 harms generation.",
        "NDCG@10 (%) by " + "; ".join(f"{s} {{{fmt(s)}}}" for s in by) + ".")


# -- 06: open questions -----------------------------------------------------------------------

@declares("06_open_questions")
def open_questions_needs(ctx, dataset: str, seed: int, noise_scales: list[float]) -> list[Need]:
    """The default run (its top-10 lists and metrics per injected noise scale, and its metrics
    under the clean protocol) and the clean profile's run."""
    sweeps = {("lists", scale): Sweep("lists", _noise(scale)) for scale in (0.0, *noise_scales)}
    sweeps.update({("metrics", scale): Sweep("metrics", _noise(scale)) for scale in noise_scales})
    sweeps[("clean protocol",)] = Sweep("metrics", {"protocol": "clean"})
    return [Need(RunSpec(dataset, FM, seed), ("paper",), sweeps),
            Need(RunSpec(dataset, FM, seed, {"profile": "clean"}), ("clean",))]


def diversity_report(ctx, dataset: str, seed: int, noise_scales: list[float], k: int = 10) -> pd.DataFrame:
    """Beyond accuracy, deterministic against stochastic sampling: catalogue coverage@k,
    intra-list diversity, and the overlap of each user's list between two evaluation seeds."""
    need = open_questions_needs(ctx, dataset, seed, noise_scales)[0]
    r = runs.run(ctx, need.spec)
    rows = []
    for scale in (0.0, *noise_scales):
        stats = ctx.sweep(r, need.sweeps[("lists", scale)])[0]
        if scale == 0:
            accuracy, band = r.test, run_interval(r, f"HR@{k}")
        else:
            accuracy = ctx.sweep(r, need.sweeps[("metrics", scale)])[0]
            band = sweep_interval(accuracy, f"HR@{k}")
        rows.append({**stats, "noise_scale": scale, f"NDCG@{k}": accuracy[f"NDCG@{k}"], f"HR@{k}": accuracy[f"HR@{k}"],
                     **band})
    table = pd.DataFrame(rows)
    ctx.write(table, "06_open_questions_diversity", "% (ILD@10: mean pairwise cosine distance, 0-1)",
              dataset=dataset)
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


def profile_report(ctx, dataset: str, seed: int, noise_scales: list[float]) -> pd.DataFrame:
    """What the authors' quirks change: FMRec trained and evaluated in each profile, and the
    paper-profile model evaluated under the clean protocol (padding item excluded)."""
    rows = []
    for need in open_questions_needs(ctx, dataset, seed, noise_scales):
        (profile,) = need.role
        r = runs.run(ctx, need.spec)
        rows.append({"trained": profile, "evaluated": profile, **{m: r.test[m] for m in METRICS}})
        if profile == "paper":
            m = ctx.sweep(r, need.sweeps[("clean protocol",)])[0]
            rows.append({"trained": "paper", "evaluated": "clean", **{k: m[k] for k in METRICS}})
    table = pd.DataFrame(rows)
    ctx.write(table, "06_open_questions_profiles", "%", dataset=dataset)
    return table


def open_questions_caption(ctx, diversity: pd.DataFrame, profiles: pd.DataFrame) -> str:
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


# -- 07: does the flow matter ------------------------------------------------------------------

def flow_variants(deltas: list[float]) -> dict[str, dict]:
    """The variants of notebook 07: the default, no flow input, no flow-matching term, and
    the delta grid (the default's delta is the paper's 1e-3)."""
    variants = {"default": {}, "no flow input": {"flow_input": False, "sampler": SamplerConfig(steps=1)},
                "no flow-matching term": {"fm_weight": 0.0}}
    variants.update({f"delta={d:g}": {"delta": d} for d in deltas if d != 1e-3})
    return variants


@declares("07_does_the_flow_matter")
def flow_needs(ctx, datasets: list[str], seeds: list[int], deltas: list[float], steps: list[int]) -> list[Need]:
    """Every variant at every seed; of the first seed's runs, how much x1_hat depends on x_t, and
    of the first seed's default run, metrics per Euler step count."""
    out = []
    for dataset in datasets:
        for rank, seed in enumerate(seeds):
            for name, over in flow_variants(deltas).items():
                sweeps = {}
                if rank == 0:  # the notebook reads these for the first seed only
                    sweeps[("noise",)] = Sweep("noise_sensitivity")
                    if not over:
                        sweeps.update({("steps", n): Sweep("metrics", _euler(n)) for n in steps})
                out.append(Need(RunSpec(dataset, FM, seed, over), (dataset, name, seed), sweeps))
    return out


@dataclass
class FlowResults:
    variants: pd.DataFrame  # one row per dataset x variant x metric: mean, sd, paired test vs the default
    sensitivity: pd.DataFrame  # change of x1_hat when the noise is redrawn, per dataset x variant x t
    cost: pd.DataFrame  # quality against model calls and latency per model / sampler
    per_seed: pd.DataFrame


def flow_matters(ctx, datasets: list[str], seeds: list[int], deltas: list[float], steps: list[int],
                 cost_users: int = COST_USERS) -> FlowResults:
    """Is FMRec's flow doing anything? Variants trained with the same budget and seeds, the
    measured use of x_t, and the cost of sampling against its quality."""
    variants, sens, cost, per_seed = [], [], [], []
    for dataset, group in itertools.groupby(flow_needs(ctx, datasets, seeds, deltas, steps), key=lambda n: n.role[0]):
        label, costs = ctx.label(dataset), []
        by_variant: dict[str, list[tuple[Need, Run]]] = {}
        for n in group:
            by_variant.setdefault(n.role[1], []).append((n, runs.run(ctx, n.spec)))
        default_runs = [r for _, r in by_variant["default"]]
        for name, pairs in by_variant.items():
            rs = [r for _, r in pairs]
            per_seed += [{"dataset": label, "variant": name, "seed": r.spec.seed, **{m: r.test[m] for m in METRICS}}
                         for r in rs]
            for metric in ("HR@10", "NDCG@10"):
                row = {"dataset": label, "variant": name, "metric": metric, **_interval_row(rs, metric),
                       "sd_over_seeds": float(np.std(_seed_values(rs, metric), ddof=1)) if len(rs) > 1 else math.nan}
                a, b = _user_values(rs, metric), _user_values(default_runs, metric)
                if name != "default" and a is not None and b is not None:
                    res = paired_bootstrap(a, b)
                    row.update({"difference": res.difference, "ci_low": res.ci_low, "ci_high": res.ci_high,
                                "p_value": res.p_value, "significant": res.significant})
                variants.append(row)
            need, r = pairs[0]
            for srow in ctx.sweep(r, need.sweeps[("noise",)]):
                sens.append({"dataset": label, "variant": name, **srow})
        need, default = by_variant["default"][0]
        for (_, n), sw in ((role, sw) for role, sw in need.sweeps.items() if role[0] == "steps"):
            m = ctx.sweep(default, sw)[0]
            costs.append({"dataset": label, "label": f"FMRec, {n} Euler step{'s' if n > 1 else ''}", "model": "fmrec",
                          "n_model_calls": m["n_model_calls"], "NDCG@10": m["NDCG@10"], **sweep_interval(m, "NDCG@10")})
        for model in ("diffurec", "sasrec", "gru4rec"):
            found = _main_table_run(ctx, dataset, model, seeds[0])
            if found is not None:
                costs.append({"dataset": label, "label": MODEL_LABELS[model], "model": model,
                              "n_model_calls": _calls(found), "NDCG@10": found.test["NDCG@10"],
                              **run_interval(found, "NDCG@10")})
        latency = {r["label"]: r for r in latency_table(ctx, dataset, cost_entries(steps), cost_users)}
        cost += [{**row, "ms_per_1000_users": latency[row["label"]]["ms_per_1000_users"],
                  "device": device_text(latency[row["label"]]["device"])} for row in costs]
    cost = pd.DataFrame(cost)
    variants, sens, per_seed = pd.DataFrame(variants), pd.DataFrame(sens), pd.DataFrame(per_seed)
    for frame, name, unit in ((variants, "07_does_the_flow_matter", "%"),
                              (sens, "07_does_the_flow_matter_noise_sensitivity", "relative change a fraction"),
                              (cost, "07_does_the_flow_matter_cost", "% (latency: ms per 1,000 users)"),
                              (per_seed, "07_does_the_flow_matter_per_seed", "%")):
        ctx.write(frame, name, unit)
    return FlowResults(variants, sens, cost, per_seed)


def cost_entries(steps: list[int]) -> list[tuple]:
    """What notebook 07 times: FMRec with each step count, DiffuRec, SASRec, GRU4Rec."""
    entries = [(f"FMRec, {n} Euler step{'s' if n > 1 else ''}", "fmrec", {}, SamplerConfig(steps=n)) for n in steps]
    return entries + [(MODEL_LABELS[m], m, {}, None) for m in ("diffurec", "sasrec", "gru4rec")]


def sampling_cost_key(ctx, dataset: str, entries: list[tuple], users: int,
                      device_type: str | None = None) -> dict:
    """The cache key of a latency table measured on a kind of device (``cuda``, ``cpu``)."""
    return {"size": ctx.size.name, "dataset": dataset, "users": users, "entries": [e[0] for e in entries],
            "device_type": device_type or ctx.device.type}


def latency_table(ctx, dataset: str, entries: list[tuple], users: int) -> list[dict]:
    """The latency rows of notebook 07: a GPU measurement when a store has one (so a CPU
    rendering of paper-size results shows the GPU's), else this device's, measured now."""
    for device_type in dict.fromkeys(("cuda", ctx.device.type)):
        key = key_text(sampling_cost_key(ctx, dataset, entries, users, device_type))
        for store in ctx.stores:
            rows = lookup(store.cache("sampling_cost"), key)
            if rows is not None:
                return rows
    return cached_rows([s.cache("sampling_cost") for s in ctx.stores],
                       sampling_cost_key(ctx, dataset, entries, users),
                       lambda: sampling_cost(ctx, dataset, entries, users=users))


def _main_table_run(ctx, dataset: str, model: str, seed: int) -> Run | None:
    """The main table's tuned run of ``model`` (if notebook 01 has produced it), else None."""
    main = notebooks.defaults("01_main_results")
    point = selected_point(ctx, dataset, model, main["grid"], seed=seed, profile=main["profile"])
    return None if point is None else runs.run(ctx, RunSpec(dataset, model, seed, {"profile": main["profile"], **point}))


def _calls(run: Run) -> int:
    cfg = model_config_of(run)
    return getattr(cfg, "diffusion_steps", None) or (cfg.sampler.n_model_calls if hasattr(cfg, "sampler") else 1)


def flow_conclusion(ctx, res: FlowResults) -> str:
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
