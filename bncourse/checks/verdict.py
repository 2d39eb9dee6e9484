"""check_paired_interval (notebook 07): the paired t interval behind every verdict.

No batch norm is computed here: the reference is the interval that
:func:`bncourse.verdict.estimate` puts on an effect, written out so that each catalogued
mistake is the same few lines with one bug (``tests/test_checks.py`` ties the two together).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import Case, Mistake, check_function, with_solution

__all__ = ["check_paired_interval"]


def _paired_interval_reference(a, b, confidence=0.95):
    """The mean of the paired differences d = a - b and its two-sided t interval:
    mean(d) -+ t_{(1 + confidence) / 2, n - 1} * std(d, ddof=1) / sqrt(n)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = d.size
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return d.mean(), d.mean() - half, d.mean() + half


def _interval_variant(*, diff=None, sd=None, quantile=None, scale=None):
    from scipy import stats

    def fn(a, b, confidence=0.95):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        d = a - b if diff is None else diff(a, b)
        n = d.size
        q = stats.t.ppf(0.5 + confidence / 2, n - 1) if quantile is None else quantile(
            confidence, n)
        spread = d.std(ddof=1) if sd is None else sd(a, b, d)
        half = q * spread / (np.sqrt(n) if scale is None else scale(n))
        return d.mean(), d.mean() - half, d.mean() + half
    return fn


def _unpaired_sd(a, b, d):
    # the standard error of a difference of two independent means, times sqrt(n)
    return np.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1))


def _interval_mistakes() -> tuple[Mistake, ...]:
    from scipy import stats

    return (
        Mistake("normal_quantile",
                "Your interval uses the normal quantile (1.96 for 95%) instead of Student's t "
                "with n - 1 degrees of freedom. With 5 seeds the t quantile is 2.78: your "
                "interval is a third too narrow and calls noise an effect.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.norm.ppf(0.5 + c / 2))),
        Mistake("df_n",
                "Your t quantile uses n degrees of freedom; the mean of n differences estimated "
                "with its own standard deviation has n - 1.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.t.ppf(0.5 + c / 2, n))),
        Mistake("one_sided",
                "Your quantile is t.ppf(confidence): that bounds one side at 95% and leaves "
                "5% on each side in all, a 90% two-sided interval.",
                "q = scipy.stats.t.ppf((1 + confidence) / 2, df=n - 1).",
                _interval_variant(quantile=lambda c, n: stats.t.ppf(c, n - 1))),
        Mistake("population_sd",
                "Your standard deviation divides by n (np.std's default, ddof=0): with 5 seeds "
                "it is too small by a factor sqrt(4/5).",
                "sd = np.std(d, ddof=1).",
                _interval_variant(sd=lambda a, b, d: d.std(ddof=0))),
        Mistake("sd_not_se",
                "Your half-width is q * sd: the spread of one seed's difference, not the "
                "standard error of their mean, sd / sqrt(n).",
                "half = q * np.std(d, ddof=1) / np.sqrt(n).",
                _interval_variant(scale=lambda n: 1.0)),
        Mistake("unpaired",
                "You treat a and b as independent samples (standard error sqrt(var(a)/n + "
                "var(b)/n)). Both arms ran on the same seeds, so the seed's luck cancels in "
                "d = a - b: use the paired differences.",
                "d = a - b; se = np.std(d, ddof=1) / np.sqrt(n).",
                _interval_variant(sd=_unpaired_sd)),
        Mistake("reversed",
                "Your differences are b - a: the interval has the wrong sign.",
                "d = np.asarray(a) - np.asarray(b) (a first).",
                _interval_variant(diff=lambda a, b: b - a)),
    )


def _interval_cases() -> list[Case]:
    """Per-seed accuracies of two arms on the same seeds: strongly paired (the seed's luck is
    shared, so pairing narrows the interval), 3 and 5 seeds, and a 90% interval."""
    arr = np.array
    return [
        Case("a = [0.52, 0.61, 0.47, 0.58, 0.55], b = [0.50, 0.57, 0.46, 0.55, 0.51]",
             (arr([0.52, 0.61, 0.47, 0.58, 0.55]), arr([0.50, 0.57, 0.46, 0.55, 0.51]))),
        Case("a = [0.30, 0.36, 0.41], b = [0.33, 0.37, 0.45]",
             (arr([0.30, 0.36, 0.41]), arr([0.33, 0.37, 0.45]))),
        Case("a = [0.70, 0.64, 0.69, 0.73, 0.66], b = [0.69, 0.66, 0.66, 0.70, 0.66], "
             "confidence = 0.9",
             (arr([0.70, 0.64, 0.69, 0.73, 0.66]), arr([0.69, 0.66, 0.66, 0.70, 0.66])),
             {"confidence": 0.9}),
    ]


@with_solution(_paired_interval_reference)
def check_paired_interval(fn: Callable[..., Any]) -> None:
    """Check ``fn(a, b, confidence=0.95)``: the mean of the paired differences ``d = a - b``
    (per-seed results of two arms on the same seeds) and its two-sided t interval::

        mean +- t_{(1 + confidence) / 2, n - 1} * std(d, ddof=1) / sqrt(n)

    the interval :func:`bncourse.verdict.estimate` puts on every effect. ``fn`` returns
    ``(mean, low, high)``.

    Raises:
        ExerciseError: naming the mistake (a normal quantile, n degrees of freedom, a one-sided
            quantile, ddof=0, the standard deviation instead of the standard error, unpaired
            samples, reversed differences).
    """
    check_function(
        fn, _paired_interval_reference, _interval_cases(), _interval_mistakes(),
        name="check_paired_interval", outputs=("mean", "low", "high"),
        advice="take d = a - b, its mean, its sample standard deviation (ddof=1) over sqrt(n), "
               "and Student's t quantile at (1 + confidence) / 2 with n - 1 degrees of freedom.",
    )
