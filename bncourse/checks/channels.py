"""check_channel_stats (notebook 02): the per-channel statistics BN takes of a conv input.

The reference is :func:`bncourse.functional.batchnorm_forward` (the course's numpy BN): its cache
holds the batch mean and the biased batch variance it normalizes with, one per channel. The
catalogue's variants reduce over the wrong axes or with the wrong estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs, _label
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import batchnorm_forward

__all__ = ["check_channel_stats"]


def _channel_stats_reference(x):
    # The mean and biased variance batchnorm_forward normalizes with, each (1, C, 1...) -> (C,).
    _, cache = batchnorm_forward(x, None, None, training=True)
    return cache["mu"].reshape(-1), cache["var"].reshape(-1)


def _over(axes, ddof=0):
    """Mean and variance over ``axes(x)`` (a tuple, or None for every axis)."""
    def stats(x):
        ax = axes(x)
        return x.mean(axis=ax), x.var(axis=ax, ddof=ddof)
    return stats


def _reshaped_channels(x):
    # x.reshape(-1, C) regroups memory order: for (N, C, L) each "column" mixes channels
    flat = x.reshape(-1, x.shape[1])
    return flat.mean(axis=0), flat.var(axis=0)


_AXES = "every axis but the channel axis 1: axis=(0, 2) for (N, C, L), axis=0 for (N, C)"

_CHANNEL_STATS_MISTAKES = (
    Mistake("axis0_only",
            "The statistics are taken over axis 0 (the batch) only: for an (N, C, L) input that "
            "gives one value per channel *and position*, shape (C, L). A conv layer's BN shares "
            "one mean and variance across all positions of a channel.",
            "Reduce over " + _AXES + ".",
            _over(lambda x: 0)),
    Mistake("per_example",
            "The statistics are taken per example (over the channel and length axes), shape "
            "(N,): that is layer norm's grouping, not batch norm's.",
            "Reduce over " + _AXES + ".",
            _over(lambda x: tuple(range(1, x.ndim)))),
    Mistake("per_position",
            "The statistics are taken over the batch and channel axes (0, 1), one per position: "
            "the channel axis is 1 and must be kept.",
            "Reduce over " + _AXES + ".",
            _over(lambda x: (0, 1))),
    Mistake("global",
            "One mean and one variance for the whole array: every channel must get its own.",
            "Reduce over " + _AXES + ", so that each result has shape (C,).",
            _over(lambda x: None)),
    Mistake("reshape_channels",
            "`x.reshape(-1, C)` does not gather each channel's values: reshape keeps memory "
            "order, so for (N, C, L) each column mixes channels and positions.",
            "Reduce over the axes directly (axis=(0, 2)), or move the channel axis last first: "
            "`x.transpose(0, 2, 1).reshape(-1, C)`.",
            _reshaped_channels),
    Mistake("unbiased",
            "The variance is the unbiased one (divided by m - 1). BN normalizes with the biased "
            "batch variance (divided by m, the number of values per channel); the unbiased one "
            "is only what PyTorch stores in running_var.",
            "Use np.var with its default ddof=0 (or mean of squared deviations).",
            _over(lambda x: (0, *range(2, x.ndim)), ddof=1)),
    Mistake("std_not_var",
            "The second result is the standard deviation, not the variance.",
            "Return the variance (np.var), without the square root.",
            lambda x: (_channel_stats_reference(x)[0], np.sqrt(_channel_stats_reference(x)[1]))),
    Mistake("outputs_swapped",
            "The two results are returned in the wrong order.",
            "return mean, var.",
            lambda x: _channel_stats_reference(x)[::-1]),
)


def _channel_stats_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 10)
    cases = []
    # (N, C) as after a linear layer, then (N, C, L) as after a conv, with L != C and N != C
    for shape in [(12, 5), (6, 4, 9), (3, 6, 7)]:
        x, _, _ = _bn_inputs(rng, shape)
        # a trend along the positions: statistics taken per position then differ from the
        # channel's, and a channel's values are not interchangeable with another's
        if len(shape) == 3:
            x = x + np.linspace(-2.0, 2.0, shape[2])
        cases.append(Case(_label(shape), (x,), channel_notes={shape[1] // 2: _TINY}))
    return cases


@with_solution(_channel_stats_reference)
def check_channel_stats(fn: Callable[..., Any]) -> None:
    """Check ``fn(x) -> (mean, var)``: BN's per-channel batch statistics.

    ``x`` is an (N, C) or (N, C, L) float64 array, channels on axis 1. ``mean`` and ``var`` are
    (C,) arrays: for each channel c, the mean and the *biased* variance of its ``m`` values,
    ``m = N`` for (N, C) and ``m = N * L`` for (N, C, L)::

        mean[c] = x[:, c].mean()
        var[c]  = ((x[:, c] - mean[c]) ** 2).mean()

    Three cases: one (N, C) and two (N, C, L) inputs with per-channel offsets and scales, a
    trend along L and one channel of tiny variance. On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _channel_stats_reference, _channel_stats_cases(), _CHANNEL_STATS_MISTAKES,
        name="check_channel_stats", outputs=("mean", "var"),
        advice="reduce over " + _AXES + "; the variance is the mean squared deviation from "
               "the channel's mean (divided by m, not m - 1).",
    )
