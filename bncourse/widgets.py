"""Knobs for live teaching: turn one and watch BN's noise or lag change.

Each exploration is a pure simulation function (tested), a static figure that shows several knob
settings at once (so a notebook reads, and validates, without a live kernel), and an
``explore_*`` function that wraps the figure in an ipywidgets slider for a live session.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from bncourse.functional import batchnorm_forward, update_running_average

__all__ = [
    "normalized_output_samples",
    "running_mean_trace",
    "plot_batch_noise",
    "plot_momentum_lag",
    "explore_batch_noise",
    "explore_momentum",
]


def normalized_output_samples(batch_size: int, *, x: float = 1.0, draws: int = 2000,
                              eps: float = 1e-5, seed: int = 0) -> np.ndarray:
    """BN outputs of one fixed example ``x`` in ``draws`` batches of fresh N(0, 1) batch mates.

    Returns:
        (draws,) array of ``(x - mean_B) / sqrt(var_B + eps)``, where the batch holds ``x`` and
        ``batch_size - 1`` mates and ``var_B`` is the biased batch variance. Its spread is the
        noise BN adds to that example; it shrinks roughly like ``1 / sqrt(batch_size)``.
    """
    if batch_size < 2:
        raise ValueError(f"expected batch_size >= 2 (got {batch_size})")
    rng = np.random.default_rng(seed)
    mates = rng.standard_normal((batch_size - 1, draws))
    batch = np.concatenate([np.full((1, draws), x), mates], axis=0)       # (B, draws)
    out, _ = batchnorm_forward(batch, None, None, training=True, eps=eps)  # each draw a channel
    return out[0]


def running_mean_trace(momentum: float, *, steps: int = 200, drift: float = 0.02,
                       batch_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A running mean chasing a drifting activation mean, with PyTorch's update rule.

    The true mean rises by ``drift`` per step (as a layer's inputs do while earlier layers
    train); each step's batch mean is the true mean plus sampling noise of a batch of
    ``batch_size`` N(0, 1) values. With momentum ``m`` the running mean lags the truth by about
    ``drift * (1 - m) / m`` once settled, and its noise grows with ``m``.

    Returns:
        ``(true_mean, running_mean)``, each (steps,).
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"expected momentum in (0, 1] (got {momentum})")
    rng = np.random.default_rng(seed)
    true_mean = drift * np.arange(1, steps + 1)
    batch_mean = true_mean + rng.standard_normal(steps) / np.sqrt(batch_size)
    running = np.empty(steps)
    value = np.zeros(1)
    for t in range(steps):
        running[t] = update_running_average(value, batch_mean[t], momentum)[0]
    return true_mean, running


def plot_batch_noise(ax, batch_sizes: Sequence[int] = (4, 16, 64), x: float = 1.0):
    """Histograms of one example's BN output for several batch sizes, on one axis."""
    bins = np.linspace(-1.5, 4.0, 60)
    for b in batch_sizes:
        samples = normalized_output_samples(b, x=x)
        ax.hist(samples, bins=bins, histtype="step", density=True,
                label=f"batch {b}: std {samples.std():.2f}")
    ax.axvline(x, color="k", linestyle=":", linewidth=1, label="population-normalized value")
    ax.set_xlabel("BN output of the same example")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax


def plot_momentum_lag(ax, momenta: Sequence[float] = (0.01, 0.1, 0.5)):
    """Running means for several momenta chasing the same drifting mean, on one axis."""
    true_mean = None
    for m in momenta:
        true_mean, running = running_mean_trace(m)
        ax.plot(running, label=f"momentum {m}", linewidth=1)
    ax.plot(true_mean, "k:", label="true mean")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean of one channel")
    ax.legend(fontsize=8)
    return ax


def _interactive(plot, **sliders):
    import ipywidgets  # only needed for live sessions

    def draw(**kwargs):
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        plot(ax, **kwargs)
        plt.show()

    return ipywidgets.interactive(draw, **sliders)


def explore_batch_noise():
    """A slider over the batch size, redrawing the spread of one example's BN output."""
    import ipywidgets

    slider = ipywidgets.SelectionSlider(options=[2, 4, 8, 16, 32, 64, 128, 256], value=16,
                                        description="batch size")
    return _interactive(lambda ax, batch_size: plot_batch_noise(ax, [batch_size]),
                        batch_size=slider)


def explore_momentum():
    """A slider over the momentum, redrawing the running mean's lag behind a drifting mean."""
    import ipywidgets

    slider = ipywidgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.25,
                                       description="momentum")
    return _interactive(lambda ax, momentum: plot_momentum_lag(ax, [momentum]),
                        momentum=slider)
