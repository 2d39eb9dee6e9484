"""check_renorm_rd (notebook 05): batch renormalization's correction r and d (Ioffe 2017).

:mod:`bncourse.functional` has no batch renormalization, and r and d normalize no batch: they
are a clipped ratio and difference of statistics the exercise passes in. So the reference,
:func:`_renorm_reference`, is the paper's three lines, kept here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import Case, Mistake, check_function, with_solution

__all__ = ["check_renorm_rd"]


def _renorm_reference(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
    # Not bncourse.functional: it has no batch renormalization, and no batch is normalized here.
    batch_std, running_std = np.sqrt(batch_var + eps), np.sqrt(running_var + eps)
    r = np.clip(batch_std / running_std, 1.0 / r_max, r_max)
    d = np.clip((batch_mean - running_mean) / running_std, -d_max, d_max)
    return r, d


def _renorm_variant(r_fn, d_fn):
    """The reference with r and/or d computed by the given (buggy) formulas."""
    def variant(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
        r, d = _renorm_reference(batch_mean, batch_var, running_mean, running_var, r_max, d_max,
                                 eps)
        args = (batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps)
        return (r if r_fn is None else r_fn(*args)), (d if d_fn is None else d_fn(*args))
    return variant


def _sd(var, eps):
    return np.sqrt(var + eps)


_RENORM_MISTAKES = (
    Mistake("no_clip",
            "r and d are not clipped: without the limits, renormalization in training uses the "
            "running statistics outright, and a single odd batch (or the first steps, when the "
            "running statistics are still 0 and 1) can scale activations by any factor.",
            "Clip r to [1/r_max, r_max] and d to [-d_max, d_max] (np.clip).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e: _sd(v, e) / _sd(rv, e),
                            lambda m, v, rm, rv, rx, dx, e: (m - rm) / _sd(rv, e))),
    Mistake("r_inverted",
            "r is upside down: you divide the running standard deviation by the batch's. r "
            "must turn the batch-normalized value into the running-normalized one, "
            "(x - mu_B)/sigma_B * r = (x - mu_B)/sigma, so r = sigma_B / sigma.",
            "r = np.sqrt(batch_var + eps) / np.sqrt(running_var + eps), then clip.",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip(_sd(rv, e) / _sd(v, e), 1 / rx, rx), None)),
    Mistake("r_from_variances",
            "r is a ratio of variances, not of standard deviations (a square root is missing).",
            "Take the square roots: r = sqrt(batch_var + eps) / sqrt(running_var + eps).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip((v + e) / (rv + e), 1 / rx, rx), None)),
    Mistake("r_lower_limit",
            "r is only clipped from above: its lower limit is 1/r_max, not 0 (or none), so a "
            "batch with a much smaller spread than the running one slips through.",
            "Clip on both sides: np.clip(r, 1 / r_max, r_max).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.minimum(_sd(v, e) / _sd(rv, e), rx), None)),
    Mistake("d_batch_std",
            "d is divided by the batch standard deviation; it is measured in units of the "
            "running one: d = (mu_B - mu) / sigma.",
            "Divide by np.sqrt(running_var + eps).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.clip((m - rm) / _sd(v, e), -dx, dx))),
    Mistake("d_sign",
            "d has the wrong sign: it is (batch mean - running mean) / sigma, so that "
            "x_hat * r + d equals (x - running_mean) / sigma.",
            "d = (batch_mean - running_mean) / np.sqrt(running_var + eps).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.clip((rm - m) / _sd(rv, e), -dx, dx))),
    Mistake("d_one_sided",
            "d is only clipped from above: negative shifts must be limited too, to -d_max.",
            "Clip on both sides: np.clip(d, -d_max, d_max).",
            _renorm_variant(None, lambda m, v, rm, rv, rx, dx, e:
                            np.minimum((m - rm) / _sd(rv, e), dx))),
    Mistake("no_eps",
            "eps is missing from the standard deviations: BN divides by sqrt(var + eps), and so "
            "must r and d, or a channel with a tiny variance gets a different r and d.",
            "Use np.sqrt(batch_var + eps) and np.sqrt(running_var + eps).",
            _renorm_variant(lambda m, v, rm, rv, rx, dx, e:
                            np.clip(np.sqrt(v) / np.sqrt(rv), 1 / rx, rx),
                            lambda m, v, rm, rv, rx, dx, e:
                            np.clip((m - rm) / np.sqrt(rv), -dx, dx))),
)

_RENORM_TINY = "the channel with a tiny variance (~1e-4), where eps matters"


def _renorm_cases() -> list[Case]:
    # channels: r below 1/r_max, r inside, r above r_max, d below -d_max, d inside, tiny variance
    running_mean = np.array([0.5, -1.0, 2.0, 1.0, 0.0, 0.3])
    running_var = np.array([4.0, 1.0, 0.25, 1.0, 2.0, 2e-4])
    batch_mean = np.array([0.6, -0.2, 2.5, -9.0, 9.0, 0.301])
    batch_var = np.array([0.01, 1.7, 9.0, 1.2, 0.5, 1e-4])
    cases = []
    for r_max, d_max, eps in [(3.0, 5.0, 1e-5), (1.5, 0.5, 1e-3), (1.0, 0.0, 1e-5)]:
        cases.append(Case(
            f"r_max={r_max:g}, d_max={d_max:g}, eps={eps:g}",
            (batch_mean, batch_var, running_mean, running_var, r_max, d_max),
            kwargs={"eps": eps}, channel_notes={5: _RENORM_TINY}))
    return cases


@with_solution(_renorm_reference)
def check_renorm_rd(fn: Callable[..., Any]) -> None:
    """Check ``fn(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5)
    -> (r, d)``, batch renormalization's correction (Ioffe 2017), on (C,) float64 arrays.

    ``batch_var`` is the biased batch variance, ``running_var`` the running one;
    ``r = clip(sqrt(batch_var + eps) / sqrt(running_var + eps), 1/r_max, r_max)`` and
    ``d = clip((batch_mean - running_mean) / sqrt(running_var + eps), -d_max, d_max)``.
    Three cases: the paper's limits (3, 5), tight ones (1.5, 0.5), and (1, 0), where r = 1 and
    d = 0 (plain BN). On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis in plain words when ``fn`` is wrong.
    """
    check_function(
        fn, _renorm_reference, _renorm_cases(), _RENORM_MISTAKES,
        name="check_renorm_rd", outputs=("r", "d"),
        advice="compute sigma_B = sqrt(batch_var + eps) and sigma = sqrt(running_var + eps) "
               "first; r = sigma_B / sigma, d = (batch_mean - running_mean) / sigma; then clip "
               "both, on both sides.",
    )
