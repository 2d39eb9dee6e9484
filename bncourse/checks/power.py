"""check_seeds_needed (notebook 07): how many seeds a decisive experiment needs.

The verdict rule states, for an inconclusive claim, the smallest effect its design could have
detected: :attr:`bncourse.verdict.Estimate.mde`, the true effect that a two-sided t test at
``ALPHA`` finds with probability ``POWER``. Planning runs it backwards: given a pilot's spread of
the paired differences and the smallest effect worth finding, the fewest seeds whose ``mde``
reaches it. The reference asks the package for the ``mde`` of every candidate number of seeds
(:func:`_mde`), so it is the verdict rule's own number; the catalogue's variants compute it in
closed form with one bug each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from bncourse.checks.engine import Case, Mistake, check_function, with_solution
from bncourse.verdict import ALPHA, POWER, estimate

__all__ = ["check_seeds_needed"]

#: The search stops here: a design needing more seeds than this is not a plan.
MAX_SEEDS = 1000


def _mde(sd: float, n: int) -> float:
    """The verdict rule's minimum detectable effect for ``n`` paired differences of sample
    standard deviation ``sd``: the ``mde`` of :func:`bncourse.verdict.estimate` on ``n`` samples
    with exactly that spread (the mean does not enter it)."""
    spread = np.arange(n, dtype=np.float64)
    spread = (spread - spread.mean()) / spread.std(ddof=1)
    return estimate(sd * spread).mde


def _pilot_sd(pilot_a, pilot_b) -> float:
    """Sample standard deviation of the paired differences ``a - b`` (from the package's
    standard error: ``se * sqrt(n)``)."""
    e = estimate(pilot_a, pilot_b)
    return e.se * np.sqrt(e.n)


def _seeds_reference(pilot_a, pilot_b, effect):
    """The fewest seeds (at least 2) whose minimum detectable effect is at most ``effect``.

    Args:
        pilot_a, pilot_b: 1-D arrays, per-seed results of two arms of a pilot run on the same
            seeds.
        effect: the smallest effect worth detecting, > 0, in the results' units.

    Returns:
        The smallest ``n >= 2`` with ``(t_{1 - ALPHA/2, n-1} + t_{POWER, n-1}) * sd / sqrt(n) <=
        effect``, ``sd`` the sample standard deviation (ddof=1) of ``pilot_a - pilot_b``: the
        verdict rule's ``Estimate.mde`` at ``n`` seeds.
    """
    sd = _pilot_sd(pilot_a, pilot_b)
    for n in range(2, MAX_SEEDS + 1):
        if _mde(sd, n) <= effect:
            return n
    raise ValueError(f"expected an effect detectable with at most {MAX_SEEDS} seeds (got "
                     f"{effect:g} for a pilot standard deviation of {sd:g})")


def _seeds_variant(*, sd=None, crit=None, power=None):
    """The closed form with one bug: ``sd(a, b) -> s``; ``crit(n, m)``, ``power(n, m)`` the two
    quantiles at ``n`` seeds for a pilot of ``m``."""
    def fn(pilot_a, pilot_b, effect):
        a, b = np.asarray(pilot_a, dtype=np.float64), np.asarray(pilot_b, dtype=np.float64)
        s = np.std(a - b, ddof=1) if sd is None else sd(a, b)
        for n in range(2, MAX_SEEDS + 1):
            q_crit = stats.t.ppf(1 - ALPHA / 2, n - 1) if crit is None else crit(n, a.size)
            q_power = stats.t.ppf(POWER, n - 1) if power is None else power(n, a.size)
            if (q_crit + q_power) * s / np.sqrt(n) <= effect:
                return n
        return MAX_SEEDS
    return fn


_FIX_QUANTILES = "q = t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1), at each candidate n."

_SEEDS_MISTAKES = (
    Mistake("normal_quantiles",
            "Your quantiles are the normal distribution's (1.96 + 0.84). The verdict will use a "
            "t test with n - 1 degrees of freedom, whose quantiles are larger at few seeds: "
            "your design comes out too small and ends inconclusive.",
            _FIX_QUANTILES,
            _seeds_variant(crit=lambda n, m: stats.norm.ppf(1 - ALPHA / 2),
                           power=lambda n, m: stats.norm.ppf(POWER))),
    Mistake("unpaired_sd",
            "Your standard deviation is that of two independent arms, sqrt(var(a) + var(b)). "
            "Both arms run on the same seeds and the verdict tests the paired differences, "
            "whose spread is much smaller when the seed's luck is shared.",
            "sd = np.std(pilot_a - pilot_b, ddof=1).",
            _seeds_variant(sd=lambda a, b: np.sqrt(np.var(a, ddof=1) + np.var(b, ddof=1)))),
    Mistake("one_sided_alpha",
            "Your significance quantile is t.ppf(1 - alpha): a one-sided test. The verdict's "
            "95% interval is two-sided, alpha / 2 on each side.",
            _FIX_QUANTILES,
            _seeds_variant(crit=lambda n, m: stats.t.ppf(1 - ALPHA, n - 1))),
    Mistake("forgot_power",
            "Your minimum detectable effect is t.ppf(1 - alpha / 2) * se alone: an effect of "
            "that size is found only half the time. For 80% power add t.ppf(power, n - 1).",
            _FIX_QUANTILES,
            _seeds_variant(power=lambda n, m: 0.0)),
    Mistake("pilot_ddof0",
            "Your pilot standard deviation divides by n (np.std's default, ddof=0): too small, "
            "so too few seeds.",
            "sd = np.std(pilot_a - pilot_b, ddof=1).",
            _seeds_variant(sd=lambda a, b: np.std(a - b))),
    Mistake("df_n",
            "Your t quantiles use n degrees of freedom; n paired differences, with their own "
            "standard deviation, have n - 1.",
            _FIX_QUANTILES,
            _seeds_variant(crit=lambda n, m: stats.t.ppf(1 - ALPHA / 2, n),
                           power=lambda n, m: stats.t.ppf(POWER, n))),
    Mistake("pilot_df",
            "Your t quantiles keep the pilot's degrees of freedom (its seeds minus 1) for every "
            "candidate n. The verdict's test will have the new design's n - 1.",
            _FIX_QUANTILES,
            _seeds_variant(crit=lambda n, m: stats.t.ppf(1 - ALPHA / 2, m - 1),
                           power=lambda n, m: stats.t.ppf(POWER, m - 1))),
)


def _seeds_cases() -> list[Case]:
    """Pilots of five and of three seeds whose two arms share the seed's luck (the paired
    spread is a fraction of each arm's), and effects needing from a few seeds to a few dozen,
    where the t and normal quantiles, and the other mistakes, give different counts."""
    arr = np.array
    a5 = arr([0.52, 0.61, 0.47, 0.58, 0.55])
    b5 = arr([0.50, 0.57, 0.46, 0.55, 0.51])
    a3 = arr([0.71, 0.66, 0.74])
    b3 = arr([0.70, 0.62, 0.71])
    cases = []
    for a, b, effect in [(a5, b5, 0.03), (a5, b5, 0.015), (a5, b5, 0.008), (a3, b3, 0.02),
                         (a3, b3, 0.01)]:
        label = (f"pilot_a = {np.round(a, 2).tolist()}, pilot_b = {np.round(b, 2).tolist()}, "
                 f"effect = {effect}")
        cases.append(Case(label, (a, b, effect)))
    return cases


@with_solution(_seeds_reference)
def check_seeds_needed(fn: Callable[..., Any]) -> None:
    """Check ``fn(pilot_a, pilot_b, effect)``: the number of seeds a paired comparison needs to
    detect ``effect`` by the verdict rule's test, two-sided at ``ALPHA`` = 0.05 with ``POWER`` =
    0.8, given a pilot's per-seed results of the two arms::

        sd = std(pilot_a - pilot_b, ddof=1)
        n = min {n >= 2 : (t_{1 - ALPHA/2, n-1} + t_{POWER, n-1}) * sd / sqrt(n) <= effect}

    the ``n`` at which :attr:`bncourse.verdict.Estimate.mde` reaches ``effect``. ``fn`` returns
    ``n`` (an integer). Five cases: pilots of five and of three seeds.

    Raises:
        ExerciseError: naming the mistake (normal quantiles, the unpaired standard deviation,
            a one-sided alpha, the power term forgotten, ddof=0, n degrees of freedom).
    """
    check_function(
        fn, _seeds_reference, _seeds_cases(), _SEEDS_MISTAKES,
        name="check_seeds_needed", outputs=("n",), rtol=0.0, atol=0.0,
        advice="take the sample standard deviation of the pilot's paired differences; then, for "
               "n = 2, 3, ..., compute the minimum detectable effect at n seeds (two t "
               "quantiles with n - 1 degrees of freedom, times the standard error sd / sqrt(n)) "
               "and stop at the first n where it is at most the effect.",
    )
