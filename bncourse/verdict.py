"""The course's one rule for turning measured effects into a verdict on a claim.

Every claim the course tests is decided here, from per-seed effect samples stored in the results,
never typed by hand. The rule, for each *setting* a claim is tested in (an MLP, a CNN, ...):

1. **Estimate** the effect: the mean of the samples with a two-sided 95% t interval. Samples are
   paired differences (arm a minus arm b on the same seeds) or one arm's values alone; two
   independent samples use Welch's interval. The interval is Student's t, as in
   ``scipy.stats.ttest_1samp(...).confidence_interval()``.
2. **Classify** the setting against what the claim predicts (``expect``):

   * ``"greater"`` / ``"less"``: the claim predicts a positive / negative effect.
     ``equivalent`` if a margin is given and the 90% interval lies inside ``(-margin, margin)``
     (two one-sided tests at alpha = 0.05, Schuirmann 1987): the effect is practically nil even
     if it is statistically non-zero; else ``for`` if the 95% interval excludes 0 on the predicted
     side, ``against`` if it excludes 0 on the other side; else ``null``.
   * ``"equivalent"``: the claim predicts no effect beyond ``margin``. ``for`` if the effect is
     equivalent to 0 within the margin (as above), ``against`` if the 95% interval lies entirely
     outside ``[-margin, margin]``, else ``null``.

3. **Combine** the settings into one outcome:

   * ``mixed``: some setting ``for``, another ``against`` (or, for a directional claim,
     ``equivalent``): the claim holds in some settings and demonstrably fails in others;
   * ``supported``: some setting ``for`` and every other one ``for`` or ``null``;
   * ``refuted``: no setting ``for``, and some setting ``against`` or every setting
     ``equivalent``;
   * ``inconclusive``: otherwise. The verdict then states the smallest effect the design could
     have detected, :attr:`Estimate.mde`.

The minimum detectable effect is the true effect that a two-sided test at alpha = 0.05 would
find with 80% power: ``mde = (t_{1 - alpha/2, df} + t_{power, df}) * se``, the standard
approximation (its exact power is 0.79 at 5 samples, 0.73 at 2).

Examples::

    >>> v = decide({"MLP": [0.04, 0.05, 0.03, 0.05, 0.04]}, expect="greater", margin=0.01)
    >>> v.outcome
    'supported'
    >>> decide({"MLP": [0.001, -0.002, 0.0, 0.002, -0.001]}, expect="greater", margin=0.01).outcome
    'refuted'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "POWER", "EXPECT", "OUTCOMES", "Estimate", "Verdict", "estimate", "decide"]

#: Significance level of every test (two-sided intervals are 1 - ALPHA).
ALPHA = 0.05
#: Power at which the minimum detectable effect is stated.
POWER = 0.8
EXPECT = ("greater", "less", "equivalent")
OUTCOMES = ("supported", "refuted", "mixed", "inconclusive")


def _as_samples(name: str, values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(
            f"expected {name} to be a 1-D sequence of at least 2 samples (got shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"expected {name} to be finite (got {x.tolist()})")
    return x


@dataclass(frozen=True)
class Estimate:
    """An effect with its uncertainty.

    Attributes:
        n: number of samples (for two independent samples, the smaller count).
        mean: the estimated effect.
        se: its standard error.
        df: degrees of freedom of the t distribution (Welch's for two independent samples).
        ci_low, ci_high: the two-sided ``1 - ALPHA`` (95%) t interval.
        mde: minimum detectable effect, see the module docstring.
    """

    n: int
    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    mde: float

    def interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided t interval at ``confidence``."""
        half = float(stats.t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    @property
    def direction(self) -> int:
        """+1 if the 95% interval lies above 0, -1 if below, else 0."""
        if self.ci_low > 0:
            return 1
        if self.ci_high < 0:
            return -1
        return 0

    def equivalent(self, margin: float) -> bool:
        """Two one-sided tests at ``ALPHA``: the ``1 - 2 ALPHA`` interval lies inside
        (-margin, margin)."""
        low, high = self.interval(1 - 2 * ALPHA)
        return -margin < low and high < margin

    def format(self, digits: int = 3) -> str:
        """``'+0.041 [+0.030, +0.052]'``: the mean and its 95% interval, rounded."""
        return f"{self.mean:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"


def _from_moments(mean: float, se: float, df: float, n: int) -> Estimate:
    t_crit = float(stats.t.ppf(1 - ALPHA / 2, df))
    t_power = float(stats.t.ppf(POWER, df))
    return Estimate(
        n=n, mean=mean, se=se, df=df,
        ci_low=mean - t_crit * se, ci_high=mean + t_crit * se,
        mde=(t_crit + t_power) * se,
    )


def _se(x: np.ndarray) -> float:
    """Standard error of the mean; exactly 0 for identical samples (not a rounding residue)."""
    return 0.0 if np.ptp(x) == 0 else float(x.std(ddof=1) / math.sqrt(x.size))


def estimate(
    a: Sequence[float], b: Sequence[float] | None = None, *, paired: bool = True
) -> Estimate:
    """The effect ``a`` (one sample) or ``a - b`` (two samples) with its 95% t interval.

    Args:
        a: per-seed values, at least 2.
        b: optional values to subtract. With ``paired=True`` (the course's default: both arms ran
            on the same seeds, so data order and initialization are shared) ``b[i]`` pairs with
            ``a[i]`` and the effect samples are ``a - b``; with ``paired=False`` the two samples
            are independent and Welch's interval is used.

    Returns:
        An :class:`Estimate`. Identical samples give a zero-width interval.
    """
    x = _as_samples("a", a)
    if b is None:
        return _from_moments(float(x.mean()), _se(x), x.size - 1, x.size)
    y = _as_samples("b", b)
    if paired:
        if x.shape != y.shape:
            raise ValueError(
                f"expected paired samples of equal length (got {x.size} and {y.size}); "
                "pass paired=False for independent samples"
            )
        return estimate(x - y)
    va, vb = _se(x) ** 2, _se(y) ** 2
    se = math.sqrt(va + vb)
    if se == 0:
        df = float(x.size + y.size - 2)
    else:  # Welch-Satterthwaite, on variances scaled by se^2 so tiny values cannot underflow
        ra, rb = va / se**2, vb / se**2
        df = float(1.0 / (ra**2 / (x.size - 1) + rb**2 / (y.size - 1)))
    return _from_moments(float(x.mean() - y.mean()), se, df, min(x.size, y.size))


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`decide`, with everything needed to check it.

    Attributes:
        outcome: one of :data:`OUTCOMES`.
        expect: what the claim predicts, one of :data:`EXPECT`.
        margin: the equivalence margin (``None``: no equivalence test).
        effects: setting -> :class:`Estimate`.
        settings: setting -> ``"for"``, ``"against"``, ``"equivalent"`` or ``"null"``.
    """

    outcome: str
    expect: str
    margin: float | None
    effects: dict[str, Estimate]
    settings: dict[str, str]

    @property
    def mde(self) -> float:
        """The largest minimum detectable effect over the settings: what a null result rules out."""
        return max(e.mde for e in self.effects.values())

    def summary(self, digits: int = 3) -> str:
        """One line: the outcome, then each setting's effect, interval and class."""
        parts = [f"{name} {e.format(digits)} {self.settings[name]}"
                 for name, e in self.effects.items()]
        text = f"{self.outcome}: " + "; ".join(parts)
        if self.outcome == "inconclusive":
            text += f" (smallest detectable effect {self.mde:.{digits}f})"
        return text

    def __str__(self) -> str:
        return self.summary()


def _classify(e: Estimate, expect: str, margin: float | None) -> str:
    if expect == "equivalent":
        if e.equivalent(margin):
            return "for"
        if e.ci_low > margin or e.ci_high < -margin:
            return "against"
        return "null"
    if margin is not None and e.equivalent(margin):
        return "equivalent"
    sign = 1 if expect == "greater" else -1
    if e.direction == sign:
        return "for"
    if e.direction == -sign:
        return "against"
    return "null"


def decide(
    effects: Mapping[str, Sequence[float] | Estimate],
    *,
    expect: str = "greater",
    margin: float | None = None,
) -> Verdict:
    """Decides a claim from its effect in one or more settings, by the rule of the module docstring.

    Args:
        effects: setting name -> effect samples (e.g. per-seed paired differences) or an
            :class:`Estimate` (for two independent samples, from ``estimate(a, b, paired=False)``).
        expect: ``"greater"`` or ``"less"`` (the claim predicts a positive or negative effect), or
            ``"equivalent"`` (the claim predicts no effect beyond ``margin``).
        margin: the equivalence margin, fixed before looking at the data: an effect whose 90%
            interval lies inside ``(-margin, margin)`` counts as no effect. Required for
            ``expect="equivalent"``.

    Returns:
        A :class:`Verdict`.
    """
    if expect not in EXPECT:
        raise ValueError(f"expected expect to be one of {EXPECT} (got {expect!r})")
    if margin is not None and not (isinstance(margin, numbers.Real) and not isinstance(margin, bool)
                                   and 0 < margin < math.inf):
        raise ValueError(f"expected margin to be a positive number or None (got {margin!r})")
    if expect == "equivalent" and margin is None:
        raise ValueError("expected a margin with expect='equivalent' (got None)")
    if not effects:
        raise ValueError("expected at least one setting (got none)")
    ests = {
        name: e if isinstance(e, Estimate) else estimate(_as_samples(f"effects[{name!r}]", e))
        for name, e in effects.items()
    }
    settings = {name: _classify(e, expect, margin) for name, e in ests.items()}
    classes = set(settings.values())
    if "for" in classes and classes & {"against", "equivalent"}:
        outcome = "mixed"
    elif "for" in classes:
        outcome = "supported"
    elif "against" in classes or classes == {"equivalent"}:
        outcome = "refuted"
    else:
        outcome = "inconclusive"
    return Verdict(outcome=outcome, expect=expect, margin=margin, effects=ests, settings=settings)
