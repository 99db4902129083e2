"""Figures for the notebooks; each returns a matplotlib Figure and :func:`save` writes PNG + PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .utils import REPO_ROOT

FIGURES = REPO_ROOT / "figures"


def save(fig, name: str, folder: str | Path = FIGURES) -> list[Path]:
    """Write ``<folder>/<name>.png`` and ``.pdf`` (no timestamps in the PDF metadata)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return paths


def length_distributions(lengths: pd.DataFrame):
    """lengths: columns dataset, length (one row per user)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.histplot(lengths, x="length", hue="dataset", log_scale=(True, False), element="step", stat="density",
                 common_norm=False, ax=ax)
    ax.set_xlabel("sequence length (items per user, log scale)")
    ax.set_title("Sequence lengths per dataset")
    return fig


def metric_lines(frame: pd.DataFrame, x: str, y: str, hue: str, *, title: str, logx: bool = False, col: str | None = None):
    """Lines of a metric against a setting (steps, a weight...), one line per ``hue`` value."""
    # style follows hue so that lines which coincide (identical metrics) stay distinguishable
    grid = sns.relplot(frame, x=x, y=y, hue=hue, style=hue, col=col, kind="line", markers=True, dashes=True,
                       height=3.4, aspect=1.25, facet_kws={"sharey": False}, errorbar="sd")
    if logx:
        grid.set(xscale="log")
    grid.figure.suptitle(title, y=1.04)
    return grid.figure


def metric_bars(frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, col: str | None = None, title: str):
    """Bars with the spread over seeds as error bars (one panel per ``col`` value)."""
    grid = sns.catplot(frame, x=x, y=y, hue=hue, col=col, kind="bar", errorbar="sd", height=3.6, aspect=1.4,
                       sharey=False)
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=25)
    grid.figure.suptitle(title, y=1.04)
    return grid.figure


def trajectories(table: pd.DataFrame, *, title: str):
    """table: columns t, user, relative_distance, target_rank, and ``variant``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    sns.lineplot(table, x="t", y="relative_distance", hue="variant", errorbar=("pi", 50), ax=axes[0])
    axes[0].set_ylabel("|x_t - x_1| / |x_1|")
    sns.lineplot(table, x="t", y="target_rank", hue="variant", estimator="median", errorbar=("pi", 50), ax=axes[1])
    axes[1].set_yscale("symlog")
    axes[1].set_ylabel("rank of the target (median, IQR)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
