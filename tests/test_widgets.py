"""The teaching knobs' simulations behave as the theory says; the widgets build."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bncourse.widgets import (
    explore_batch_noise,
    explore_momentum,
    normalized_output_samples,
    plot_batch_noise,
    plot_momentum_lag,
    running_mean_trace,
)

LAG_RTOL = 0.1  # settled lag vs drift * (1 - m) / m, averaged over the last half of the trace


def test_batch_noise_shrinks_like_one_over_sqrt_batch_size():
    small, large = (normalized_output_samples(b, draws=4000).std() for b in (8, 128))
    assert small / large == pytest.approx(np.sqrt(128 / 8), rel=0.25)


def test_batch_noise_centres_near_the_population_value():
    samples = normalized_output_samples(256, x=1.0, draws=4000)
    assert abs(np.median(samples) - 1.0) < 0.05


@pytest.mark.parametrize("momentum", [0.05, 0.2, 0.5])
def test_running_mean_lags_by_drift_times_one_minus_m_over_m(momentum):
    lags = [np.mean((t - r)[200:]) for t, r in
            (running_mean_trace(momentum, steps=400, seed=s, batch_size=10**6)
             for s in range(3))]
    assert np.mean(lags) == pytest.approx(0.02 * (1 - momentum) / momentum, rel=LAG_RTOL)


@pytest.mark.parametrize(("fn", "arg", "phrase"), [
    (normalized_output_samples, 1, "batch_size >= 2"),
    (running_mean_trace, 0.0, "momentum in (0, 1]"),
])
def test_bad_knob_values_raise(fn, arg, phrase):
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace("]", r"\]")):
        fn(arg)


def test_static_figures_draw_one_curve_per_setting():
    fig, (a, b) = plt.subplots(1, 2)
    assert len(plot_batch_noise(a, [4, 16]).patches) == 2
    assert len(plot_momentum_lag(b, [0.1, 0.5]).lines) == 3  # two momenta and the truth
    plt.close(fig)


def test_widgets_build_with_their_knob():
    pytest.importorskip("ipywidgets")
    assert explore_batch_noise().children[0].description == "batch size"
    assert explore_momentum().children[0].description == "momentum"
    plt.close("all")
