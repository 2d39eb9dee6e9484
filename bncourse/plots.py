"""The course's figures in one style: every experiment shows the mean over seeds and its spread."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["STYLE", "use_style", "mean_spread", "plot_mean_spread"]

STYLE = {
    "figure.figsize": (6.0, 3.6),
    "figure.dpi": 80,
    "savefig.dpi": 80,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}


def use_style() -> None:
    """Applies the course style to matplotlib (small figures keep notebooks light)."""
    plt.rcParams.update(STYLE)


def mean_spread(runs: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over seeds of runs shaped (seeds, points).

    Runs that stopped early (e.g. diverged) are padded with NaN and ignored point by point.
    """
    if len(runs) == 0:
        raise ValueError("expected at least one run (got 0)")
    length = max(len(r) for r in runs)
    table = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        table[i, : len(r)] = np.asarray(r, dtype=np.float64)
    counts = np.sum(~np.isnan(table), axis=0)
    safe = np.where(counts > 0, counts, 1)
    mean = np.where(counts > 0, np.nansum(table, axis=0) / safe, np.nan)
    dev = np.where(counts > 0, np.nan_to_num(table - mean), 0.0)
    std = np.where(counts > 0, np.sqrt(np.sum(dev**2, axis=0) / safe), np.nan)
    return mean, std


def plot_mean_spread(ax, x, runs, label: str | None = None, color=None, **line_kwargs):
    """Plots the mean over seeds as a line and mean +/- one standard deviation as a band.

    Args:
        ax: a matplotlib Axes.
        x: (points,) x values, or ``None`` for 1, 2, ...
        runs: (seeds, points) values.
        label: legend label; the seed count is appended.
    """
    mean, std = mean_spread(runs)
    x = np.arange(1, len(mean) + 1) if x is None else np.asarray(x)[: len(mean)]
    full_label = None if label is None else f"{label} ({len(runs)} seeds)"
    (line,) = ax.plot(x, mean, label=full_label, color=color, **line_kwargs)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return line
