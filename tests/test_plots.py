"""bncourse.plots: the spread statistics and the figure helpers, on small known inputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bncourse.experiments.results import Result  # noqa: E402
from bncourse.plots import (  # noqa: E402
    mean_spread,
    plot_claims,
    plot_curves,
    plot_lr_sweep,
    plot_mean_spread,
    plot_verdict,
)
from bncourse.verdict import decide  # noqa: E402

TOL = 1e-12


def test_mean_spread_ignores_the_padding_of_runs_that_stopped_early():
    mean, std = mean_spread([[1.0, 2.0, 3.0], [3.0, 4.0]])
    np.testing.assert_allclose(mean, [2.0, 3.0, 3.0], atol=TOL)
    np.testing.assert_allclose(std, [1.0, 1.0, 0.0], atol=TOL)


def test_mean_spread_rejects_no_runs():
    with pytest.raises(ValueError, match="at least one run"):
        mean_spread([])


def test_plot_mean_spread_draws_the_mean_and_a_band_and_counts_seeds_in_the_label():
    fig, ax = plt.subplots()
    line = plot_mean_spread(ax, [1, 2], [[1.0, 2.0], [3.0, 4.0]], label="arm")
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0], atol=TOL)
    assert line.get_label() == "arm (2 seeds)" and len(ax.collections) == 1
    plt.close(fig)


def _result():
    runs = [{"seed": s, "val_acc_curve": [0.2 + s / 10, 0.5], "steps_per_epoch": 10,
             "val_acc": 0.5} for s in range(2)]
    sweep = [{"lr": lr, "seed": s, "val_acc": acc} for lr, acc in ((0.1, 0.4), (1.0, 0.6))
             for s in range(2)]
    return Result({"name": "toy", "arms": {
        "a": {"runs": runs, "chosen_lr": 0.1},
        "s": {"lr_grid": [0.1, 1.0], "sweep": sweep}}})


def test_plot_curves_puts_steps_on_the_x_axis_and_the_tuned_rate_in_the_label():
    fig, ax = plt.subplots()
    plot_curves(ax, _result(), ["a"], labels=["arm"])
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [10, 20], atol=TOL)
    assert line.get_label() == "arm, lr 0.1 (2 seeds)"
    plt.close(fig)


def test_plot_lr_sweep_draws_one_point_per_rate_on_a_log_axis():
    fig, ax = plt.subplots()
    plot_lr_sweep(ax, _result(), ["s"])
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [0.4, 0.6], atol=TOL)
    assert ax.get_xscale() == "log"
    plt.close(fig)


def test_plot_verdict_and_plot_claims_draw_every_setting():
    verdict = decide({"x": [0.1, 0.12, 0.11], "y": [-0.1, -0.12, -0.11]}, margin=0.01)
    fig, (ax1, ax2) = plt.subplots(2)
    plot_verdict(ax1, verdict)
    plot_claims(ax2, {"claim": verdict})
    assert len(ax1.get_yticks()) == 2 and len(ax2.get_yticks()) == 2
    assert ax1.get_title() == f"verdict: {verdict.outcome}"
    plt.close(fig)
