"""Figures for the notebooks; each returns a matplotlib Figure and :func:`save` writes PNG + PDF.

Rules every figure follows: error bars wherever a number is uncertain (the sd over seeds, or
a 95 % interval over users for one seed, named in the legend), axis labels with units, one
parameter per axis, no line hidden behind another (coinciding lines are drawn with distinct
markers and said to coincide), y ranges that do not blow a constant up into a trend, and the
size and the training devices stamped on the figure itself (:func:`stamp`, done by ``Context.save_figure``).
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
import numpy as np
import pandas as pd
import seaborn as sns

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
MIN_SPAN = 0.5  # a y axis spans at least this many metric points (%), so a constant looks constant


def log_x_axis(ax) -> None:
    """A log x-axis labelled at 1, 2 and 5 times the powers of ten, as plain numbers, and no
    labels on the minor ticks (matplotlib labels those when the data span less than a decade
    or two, and they then overlap)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())

def save(fig, name: str, folder: str | Path) -> list[Path]:
    """Write ``<folder>/<name>.png`` and ``.pdf`` (no timestamps in the PDF metadata), each
    through a temporary file: a failure leaves the previous figure whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, options in (("png", {"dpi": 130, "metadata": {"Software": None}}),
                         ("pdf", {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}})):
        path, tmp = folder / f"{name}.{fmt}", folder / f".{name}.{fmt}.tmp"
        fig.savefig(tmp, format=fmt, bbox_inches="tight", **options)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def stamp(fig, text: str) -> None:
    """Write ``text`` (size, budget, training devices) in the figure's bottom-left corner."""
    fig.text(0.0, -0.02, text, fontsize=7, color="0.35", ha="left", va="top", transform=fig.transFigure)


def _span(ax, values: np.ndarray) -> None:
    lo, hi = np.nanmin(values), np.nanmax(values)
    if np.isfinite(lo) and hi - lo < MIN_SPAN:
        mid = (lo + hi) / 2
        ax.set_ylim(max(0.0, mid - MIN_SPAN), mid + MIN_SPAN)


def describe_error_bars(kinds) -> str:
    """One short phrase for the error bars of a figure (the kinds named in its ``error_bar`` column)."""
    kinds = sorted({str(k) for k in kinds})
    over_users = [k for k in kinds if k.startswith("95 %")]
    others = [k for k in kinds if not k.startswith("95 %")]
    phrases = others[:]
    if over_users:
        phrases.append("95 % intervals over users, one seed (Wilson for HR, normal for NDCG, or from the hit count "
                       "when fewer than 10 hits)")
    return textwrap.fill("; ".join(phrases), width=110)


def length_distributions(lengths: pd.DataFrame):
    """lengths: columns dataset, length (one row per user)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.histplot(lengths, x="length", hue="dataset", log_scale=(True, False), element="step", stat="density",
                 common_norm=False, ax=ax)
    ax.set_xlabel("sequence length (items per user, log scale)")
    ax.set_ylabel("density (share of users per log-length unit)")
    ax.set_title("Sequence lengths per dataset")
    return fig


def interval_bars(frame: pd.DataFrame, x: str, *, hue: str | None = None, col: str | None = None, ylabel: str,
                  title: str, rotate: int = 20):
    """Bars of ``mean`` with error bars from ``low`` to ``high`` (one panel per ``col`` value);
    the legend or the title names what the error bars are (column ``error_bar``)."""
    panels = list(dict.fromkeys(frame[col])) if col else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 3.2 * len(panels) + 1.5), 3.6), squeeze=False)
    hues = list(dict.fromkeys(frame[hue])) if hue else [None]
    width = 0.8 / len(hues)
    palette = sns.color_palette(n_colors=max(len(hues), 1))
    for ax, panel in zip(axes[0], panels):
        sub = frame if panel is None else frame[frame[col] == panel]
        xs = list(dict.fromkeys(sub[x]))
        for j, h in enumerate(hues):
            part = sub if h is None else sub[sub[hue] == h]
            part = part.set_index(x).reindex(xs)
            pos = np.arange(len(xs)) - 0.4 + width * (j + 0.5)
            err = np.vstack([part["mean"] - part["low"], part["high"] - part["mean"]])
            ax.bar(pos, part["mean"], width, yerr=err, capsize=3, color=palette[j], label=None if h is None else str(h),
                   error_kw={"elinewidth": 1})
        ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs], rotation=rotate, ha="right" if rotate else "center")
        ax.set_title("" if panel is None else str(panel))
        ax.set_ylabel(ylabel)
        ax.set_xlabel(x.replace("_", " "))
    kinds = describe_error_bars(frame["error_bar"]) if "error_bar" in frame else ""
    if hue:
        axes[0][-1].legend(title=hue.replace("_", " "), fontsize=8)
    fig.suptitle(title + (f"\nerror bars: {kinds}" if kinds else ""), y=1.02, fontsize=10)
    fig.tight_layout()
    return fig


def lines(frame: pd.DataFrame, x: str, y: str, *, hue: str, title: str, xlabel: str, ylabel: str,
          logx: bool = False, low: str | None = None, high: str | None = None):
    """One line per ``hue`` value; lines with identical values get distinct markers and
    line styles and are named as coinciding in the legend, so none is hidden."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    groups = list(dict.fromkeys(frame[hue]))
    series = {g: frame[frame[hue] == g].sort_values(x) for g in groups}
    signature = {g: tuple(np.round(s[y].to_numpy(), 6)) + tuple(s[x]) for g, s in series.items()}
    palette = sns.color_palette(n_colors=len(groups))
    for i, g in enumerate(groups):
        s = series[g]
        twins = [h for h in groups if h != g and signature[h] == signature[g]]
        label = str(g) + (f" (identical to {', '.join(map(str, twins))})" if twins else "")
        ax.plot(s[x], s[y], marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                color=palette[i], markersize=max(3, 8 - 1.5 * i), label=label, alpha=0.9)
        if low and high:
            ax.fill_between(s[x], s[low], s[high], color=palette[i], alpha=0.15)
    if logx:
        log_x_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    shown = [frame[c].to_numpy(dtype=float) for c in (y, low, high) if c]
    _span(ax, np.concatenate(shown))
    ax.legend(fontsize=8)
    kinds = describe_error_bars(frame["error_bar"]) if (low and "error_bar" in frame) else ""
    ax.set_title(title + (f"\nbands: {kinds}" if kinds else ""), fontsize=9)
    fig.tight_layout()
    return fig


def noise_effect(det: pd.DataFrame, metric: str = "NDCG@10"):
    """A metric against the injected noise scale: mean over evaluation seeds with its sd."""
    g = det.groupby("noise_scale")[metric].agg(["mean", "std", "count"]).reset_index()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.errorbar(g["noise_scale"], g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3)
    ax.set_xlabel("noise scale injected per Euler step (0 = deterministic)")
    ax.set_ylabel(f"test {metric} (%)")
    _span(ax, g["mean"].to_numpy())
    ax.set_title(f"{metric} against injected noise\nerror bars: sd over {int(g['count'].max())} evaluation seeds",
                 fontsize=10)
    fig.tight_layout()
    return fig


def settings_panels(table: pd.DataFrame, *, metric: str = "NDCG@10", defaults: dict | None = None, title: str):
    """One panel per swept setting (one parameter per x axis), the metric with its error bar;
    the paper's default value of each setting is marked."""
    settings = list(dict.fromkeys(table["setting"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(3.1 * len(settings), 3.4), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        sub = table[table["setting"] == setting]
        pos = np.arange(len(sub))
        err = np.vstack([sub["mean"] - sub["low"], sub["high"] - sub["mean"]])
        colors = ["C3" if defaults and str(defaults.get(setting)) == v else "C0" for v in sub["value"]]
        ax.bar(pos, sub["mean"], yerr=err, capsize=3, color=colors)
        ax.set_xticks(pos, sub["value"], rotation=20)
        ax.set_xlabel(setting)
        ax.set_title(setting)
    axes[0][0].set_ylabel(f"test {metric} (%)")
    fig.suptitle(f"{title}\nred: the paper's default; error bars: {describe_error_bars(table['error_bar'])}", y=1.04,
                 fontsize=10)
    fig.tight_layout()
    return fig


def trajectories(table: pd.DataFrame, *, title: str):
    """table: columns t, user, relative_distance, target_rank, and ``variant``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(table, x="t", y="relative_distance", hue="variant", style="variant", markers=True,
                 errorbar=("pi", 50), ax=axes[0])
    axes[0].set_ylabel("|x_t - x_1| / |x_1| (median user, IQR band)")
    axes[0].set_xlabel("t (0 = noise, 1 = data)")
    sns.lineplot(table, x="t", y="target_rank", hue="variant", style="variant", markers=True, estimator="median",
                 errorbar=("pi", 50), ax=axes[1])
    axes[1].set_yscale("symlog")
    axes[1].set_ylabel("rank of the target (median, IQR band)")
    axes[1].set_xlabel("t (0 = noise, 1 = data)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def cost_quality(cost: pd.DataFrame, *, title: str):
    """Quality (NDCG@10) against measured latency per 1,000 users (log x), one panel per
    dataset, each point labelled with its model and model calls per user."""
    datasets = list(dict.fromkeys(cost["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.4 * len(datasets), 3.9), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sub = cost[cost["dataset"] == dataset]
        fm = sub[sub["model"] == "fmrec"].sort_values("ms_per_1000_users")
        def yerr(frame):
            if "NDCG@10_low" not in frame:
                return None
            return np.vstack([frame["NDCG@10"] - frame["NDCG@10_low"], frame["NDCG@10_high"] - frame["NDCG@10"]])

        ax.errorbar(fm["ms_per_1000_users"], fm["NDCG@10"], yerr=yerr(fm), fmt="-o", color="C3", capsize=3,
                    label="FMRec (1..n Euler steps)")
        others = sub[sub["model"] != "fmrec"]
        for i, (index, row) in enumerate(others.iterrows()):
            ax.errorbar(row["ms_per_1000_users"], row["NDCG@10"], yerr=yerr(others.loc[[index]]),
                        fmt=MARKERS[(i + 1) % len(MARKERS)], color=f"C{i}", markersize=8, capsize=3, label=row["label"])
        for _, row in sub.iterrows():
            calls = int(row["n_model_calls"])
            ax.annotate(f"{calls} call{'s' if calls > 1 else ''}", (row["ms_per_1000_users"], row["NDCG@10"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        log_x_axis(ax)
        ax.set_xlabel(f"latency (ms per 1,000 users, log scale; {sub['device'].iloc[0]})")
        ax.set_ylabel("test NDCG@10 (%)")
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    kinds = describe_error_bars(cost["error_bar"]) if "error_bar" in cost else ""
    fig.suptitle(title + (f"\nerror bars: {kinds}" if kinds else ""), fontsize=10)
    fig.tight_layout()
    return fig
