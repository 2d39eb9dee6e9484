"""check_precise_statistics (notebook 05): population statistics pooled from per-batch ones.

Precise BN sees a BN layer's input one batch at a time, and what a batch gives is its per-channel
mean and biased variance. The exercise pools K such batches of B values into the mean and the
unbiased variance of all K * B values, as if they had been one batch. The reference rebuilds
batches with those statistics and lets :func:`bncourse.functional.batchnorm_forward` compute the
statistics of their union (:func:`bncourse.checks._pooling.union_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._pooling import union_statistics
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution

__all__ = ["check_precise_statistics"]


def _precise_reference(batch_means, batch_vars, batch_size):
    """Mean and unbiased variance (C,) of the K * B values of K batches of ``batch_size``, from
    their means and biased variances (K, C)."""
    counts = np.full(len(batch_means), int(batch_size))
    mean, _, unbiased_var = union_statistics(counts, batch_means, batch_vars)
    return mean, unbiased_var


def _variant(var_fn):
    """The pooled mean with a (buggy) variance ``var_fn(means, vars, b)``."""
    def fn(batch_means, batch_vars, batch_size):
        return batch_means.mean(axis=0), var_fn(batch_means, batch_vars, batch_size)
    return fn


def _within(v):
    return v.mean(axis=0)                       # spread inside the batches


def _between(m, ddof=0):
    return m.var(axis=0, ddof=ddof)             # spread of the batch means


def _total(m, v, b):
    return _within(v) + _between(m)             # biased variance of all K * B values


_PRECISE_MISTAKES = (
    Mistake("within_only",
            "You average the batch variances and stop there. Each batch variance measures the "
            "spread around *its own* batch mean; the spread of the batch means around the "
            "overall mean is missing (law of total variance). It matters most when batches "
            "differ, e.g. one class per batch.",
            "Add the variance of the batch means to the mean of the batch variances, then "
            "correct the total for bias.",
            _variant(lambda m, v, b: _within(v))),
    Mistake("within_only_unbiased",
            "You average the *unbiased* batch variances (B / (B - 1) times each). That is what "
            "`bncourse.nn.precise_bn` and torch's `update_bn` accumulate, and for i.i.d. batches "
            "it estimates the population variance without bias; but it is not the variance of "
            "the pooled values, which this exercise asks for: it leaves out the spread of the "
            "batch means, and with non-i.i.d. batches (one class per batch) it is far too small.",
            "Pool instead: mean of the biased batch variances plus the variance of the batch "
            "means, then the bias correction of K * B values.",
            _variant(lambda m, v, b: _within(v) * b / (b - 1))),
    Mistake("biased",
            "You return the biased variance of the pooled values (divided by K * B). The running "
            "statistics store the unbiased one, as BN's running_var does.",
            "Multiply the pooled biased variance by K * B / (K * B - 1).",
            _variant(lambda m, v, b: _total(m, v, b))),
    Mistake("batch_correction",
            "The bias correction uses one batch's size, B / (B - 1). The pooled variance is "
            "computed from all K * B values, so its correction is K * B / (K * B - 1).",
            "Multiply the pooled biased variance by K * B / (K * B - 1).",
            _variant(lambda m, v, b: _total(m, v, b) * b / (b - 1))),
    Mistake("both_parts_unbiased",
            "You make each part unbiased on its own (the batch variances times B / (B - 1), the "
            "variance of the means with K - 1) and add them. The law of total variance holds "
            "for the biased parts; the correction comes once, at the end, for K * B values.",
            "Add the mean of the biased batch variances and the biased variance of the means, "
            "then multiply by K * B / (K * B - 1).",
            _variant(lambda m, v, b: _within(v) * b / (b - 1) + _between(m, ddof=1))),
)


def _precise_cases() -> list[Case]:
    """Per-batch statistics of K batches, C = 3 channels (K != C, so a reduction over the wrong
    axis shows as a wrong shape): i.i.d.-like batches, batches whose means differ a lot (one
    class each), and batches of 2."""
    rng = np.random.default_rng(SEED + 5)
    cases = []
    for k, b, spread, label in [(6, 8, 0.3, "i.i.d.-like batches"),
                                (5, 16, 3.0, "batch means far apart, as with one class per batch"),
                                (8, 2, 1.0, "batches of 2")]:
        means = rng.uniform(-2, 2, 3) + spread * rng.normal(size=(k, 3))
        variances = rng.uniform(0.2, 3.0, 3) * rng.uniform(0.5, 1.5, size=(k, 3))
        cases.append(Case(f"\"K={k} batches of batch_size={b}, {label}\"", (means, variances, b)))
    return cases


@with_solution(_precise_reference)
def check_precise_statistics(fn: Callable[..., Any]) -> None:
    """Check ``fn(batch_means, batch_vars, batch_size) -> (mean, var)``: from the per-channel
    means and biased variances (K, C) of K batches of ``batch_size`` = B values each, the mean
    and the unbiased variance (C,) of all K * B values together (law of total variance)::

        mean = batch_means.mean(0)
        var  = (batch_vars.mean(0) + batch_means.var(0)) * K B / (K B - 1)

    Three float64 cases: i.i.d.-like batches, batches with far-apart means, batches of 2.
    On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (the spread of the batch means left out, a biased
            result, the bias correction of one batch, each part corrected on its own).
    """
    check_function(
        fn, _precise_reference, _precise_cases(), _PRECISE_MISTAKES,
        name="check_precise_statistics", outputs=("mean", "var"),
        advice="test it on real numbers: draw K batches of B values, pass their means and "
               "np.var's, and compare with np.var of all K * B values, ddof=1.",
    )
