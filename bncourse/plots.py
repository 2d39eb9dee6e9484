"""The course's figures in one style: every experiment shows the mean over seeds and its spread."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "STYLE", "use_style", "mean_spread", "plot_mean_spread", "plot_curves", "plot_lr_sweep",
    "plot_verdict", "plot_claims",
]

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


def plot_curves(ax, result, arms, key: str = "val_acc_curve", labels=None, per: str = "steps"):
    """Per-epoch curves of a stored result, mean over seeds with a one-sd band, per arm.

    Args:
        ax: a matplotlib Axes.
        result: a :class:`bncourse.experiments.Result`.
        arms: arm names to draw.
        key: the per-epoch curve (``"val_acc_curve"``, ``"train_acc_curve"``,
            ``"train_loss_curve"``).
        labels: legend labels (default: the arm names); the tuned learning rate is appended.
        per: x axis in optimizer ``"steps"`` or ``"epochs"``.
    """
    labels = labels or arms
    for arm, label in zip(arms, labels, strict=True):
        runs = result.curves(arm, key)                                      # (seeds, epochs)
        epochs = np.arange(1, runs.shape[1] + 1)
        x = epochs * result.runs(arm)[0]["steps_per_epoch"] if per == "steps" else epochs
        plot_mean_spread(ax, x, runs, label=f"{label}, lr {result.chosen_lr(arm):g}")
    ax.set_xlabel("optimizer steps" if per == "steps" else "epochs")
    ax.legend(fontsize=8)


def plot_lr_sweep(ax, result, arms, labels=None, key: str = "val_acc"):
    """Final accuracy against the learning rate (log axis) of a sweep, mean and one-sd band."""
    labels = labels or arms
    for arm, label in zip(arms, labels, strict=True):
        grid = result.arm(arm)["lr_grid"]
        acc = np.array([result.values(arm, key, lr=lr) for lr in grid]).T  # (seeds, lrs)
        plot_mean_spread(ax, grid, acc, label=label, marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (SGD, momentum 0.9, cosine decay)")
    ax.legend(fontsize=8)


def plot_verdict(ax, verdict, title: str | None = None):
    """Forest plot of a :class:`bncourse.verdict.Verdict`: each setting's effect with its 95%
    interval; the band is the equivalence margin, the vertical line no effect."""
    names = list(verdict.effects)
    colors = {"for": "C2", "against": "C3", "equivalent": "C7", "null": "C7"}
    for i, name in enumerate(names):
        e = verdict.effects[name]
        ax.errorbar(e.mean, i, xerr=[[e.mean - e.ci_low], [e.ci_high - e.mean]], fmt="o",
                    capsize=3, color=colors[verdict.settings[name]])
    if verdict.margin is not None:
        ax.axvspan(-verdict.margin, verdict.margin, color="0.85", zorder=0, label="margin")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title or f"verdict: {verdict.outcome}", fontsize=10)


def plot_claims(ax, verdicts: dict):
    """All claims in one forest plot: every setting's effect and 95% interval in units of its
    claim's margin (the grey band is +-1 margin), signed so that right = what the claim predicts;
    colours as :func:`plot_verdict`.

    Args:
        ax: a matplotlib Axes.
        verdicts: claim label -> :class:`bncourse.verdict.Verdict`.
    """
    colors = {"for": "C2", "against": "C3", "equivalent": "C7", "null": "C7"}
    labels, row = [], 0
    for claim, v in verdicts.items():
        sign = -1.0 if v.expect == "less" else 1.0
        for name, e in v.effects.items():
            lo, hi = sorted((sign * e.ci_low / v.margin, sign * e.ci_high / v.margin))
            mid = sign * e.mean / v.margin
            ax.errorbar(mid, row, xerr=[[mid - lo], [hi - mid]], fmt="o", ms=3, capsize=2,
                        color=colors[v.settings[name]])
            labels.append(f"{claim}: {name}")
            row += 1
    ax.axvspan(-1, 1, color="0.85", zorder=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("effect / margin (right: as the claim predicts; symmetric log scale)")
