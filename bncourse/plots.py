"""The course's figures in one style: every experiment shows the mean over seeds and its spread.

Colours come from Okabe and Ito's palette, which stays distinguishable with the common forms of
colour blindness (:data:`PALETTE`, matplotlib's ``C0``, ``C1``, ... after :func:`use_style`);
verdict plots also tell *for* from *against* by the marker, not by colour alone. In a notebook,
:func:`use_style` makes every displayed figure carry an alt text (:func:`describe`) in its
output's metadata, which the course's website uses for the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

__all__ = [
    "STYLE", "PALETTE", "VERDICT_STYLE", "use_style", "describe", "mean_spread",
    "plot_mean_spread", "plot_curves", "plot_lr_sweep", "plot_verdict", "plot_claims",
]

#: Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion,
#: reddish purple, sky blue, yellow, black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
#: Text labels of a drawing (a plot without axis labels or legend) named in its alt text.
MAX_ALT_LABELS = 12
#: How a setting's class is drawn in verdict plots: (colour, marker).
VERDICT_STYLE = {"for": (PALETTE[0], "o"), "against": (PALETTE[3], "X"),
                 "equivalent": ("0.45", "s"), "null": ("0.45", "D")}

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
    "axes.prop_cycle": cycler(color=PALETTE),
}


def use_style() -> None:
    """Applies the course style to matplotlib (small figures keep notebooks light) and, inside
    IPython, stores an alt text with every figure shown (see :func:`describe`)."""
    plt.rcParams.update(STYLE)
    _register_alt_text()


def _text(t) -> str:
    return " ".join(t.get_text().replace("$", "").split())


def describe(fig) -> str:
    """A one-paragraph alt text for ``fig``, from what it states: its title, and per panel the
    title, the axis labels and the legend entries.

    Examples::

        >>> fig, ax = plt.subplots()
        >>> _ = ax.plot([0, 1], [1, 0], label="BN")
        >>> _ = ax.set(title="loss", xlabel="epoch", ylabel="loss"); _ = ax.legend()
        >>> describe(fig)
        'Figure: loss (x: epoch; y: loss; curves: BN).'
        >>> plt.close(fig)
    """
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and _text(suptitle):
        parts.append(_text(suptitle))
    for ax in fig.axes:
        if not ax.get_visible() or not (ax.has_data() or ax.texts or _text(ax.title)):
            continue
        facts = [f"{axis}: {label}" for axis, label in (("x", _text(ax.xaxis.label)),
                                                         ("y", _text(ax.yaxis.label))) if label]
        legend = ax.get_legend()
        if legend is not None:
            names = [_text(t) for t in legend.get_texts() if _text(t)]
            if names:
                facts.append("curves: " + ", ".join(names))
        if not facts:               # a drawing rather than a plot: say what it labels
            labels = [_text(t) for t in ax.texts if _text(t)]
            if labels:
                facts.append("labels: " + ", ".join(labels[:MAX_ALT_LABELS]))
        title = _text(ax.title) or "panel"
        parts.append(f"{title} ({'; '.join(facts)})" if facts else title)
    return ("Figure: " + "; ".join(parts) + ".") if parts else "Figure."


def _png_with_alt(fig):
    from IPython.core.pylabtools import print_figure

    data = print_figure(fig, "png", bbox_inches="tight")
    return (data, {"alt": describe(fig)}) if data is not None else None


def _register_alt_text() -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    if "inline" in str(plt.rcParams["backend"]):
        # importing the inline backend registers its own PNG formatter (matplotlib loads it
        # lazily, at the first figure): load it now, so that ours replaces it
        import matplotlib_inline.backend_inline  # noqa: F401
    shell.display_formatter.formatters["image/png"].for_type(Figure, _png_with_alt)


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
    for i, name in enumerate(names):
        e = verdict.effects[name]
        color, marker = VERDICT_STYLE[verdict.settings[name]]
        ax.errorbar(e.mean, i, xerr=[[e.mean - e.ci_low], [e.ci_high - e.mean]], fmt=marker,
                    capsize=3, color=color)
    if verdict.margin is not None:
        ax.axvspan(-verdict.margin, verdict.margin, color="0.85", zorder=0, label="margin")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title or f"verdict: {verdict.outcome}", fontsize=10)


def plot_claims(ax, verdicts: dict):
    """All claims in one forest plot: every setting's effect and 95% interval in units of its
    claim's margin (the grey band is +-1 margin), signed so that right = what the claim predicts;
    colours and markers as :func:`plot_verdict` (:data:`VERDICT_STYLE`).

    Args:
        ax: a matplotlib Axes.
        verdicts: claim label -> :class:`bncourse.verdict.Verdict`.
    """
    labels, row = [], 0
    for claim, v in verdicts.items():
        sign = -1.0 if v.expect == "less" else 1.0
        for name, e in v.effects.items():
            lo, hi = sorted((sign * e.ci_low / v.margin, sign * e.ci_high / v.margin))
            mid = sign * e.mean / v.margin
            color, marker = VERDICT_STYLE[v.settings[name]]
            ax.errorbar(mid, row, xerr=[[mid - lo], [hi - mid]], fmt=marker, ms=3, capsize=2,
                        color=color)
            labels.append(f"{claim}: {name}")
            row += 1
    ax.axvspan(-1, 1, color="0.85", zorder=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("effect / margin (right: as the claim predicts; symmetric log scale)")
