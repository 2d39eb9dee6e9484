"""check_classify_setting (notebook 07): the verdict rule for one setting of a claim.

The reference is the course's rule itself, :func:`bncourse.verdict.decide`, on one setting: its
``settings`` entry. The catalogue's variants write the rule out with one bug each
(:func:`_rule_variant`). The answer is a word ("for", "against", "equivalent", "null"); the
engine compares numbers, so the checker compares each word's index in :data:`LABELS` and adds
the words, case by case, to a failure's message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import Case, ExerciseError, Mistake, check_function, with_solution
from bncourse.verdict import ALPHA, Estimate, decide, estimate

__all__ = ["LABELS", "check_classify_setting"]

#: The classes of a setting, as :func:`bncourse.verdict.decide` names them.
LABELS = ("for", "against", "equivalent", "null")

_NAME = "check_classify_setting"


def _rule_reference(effect, expect, margin):
    """The class of one setting: ``decide({setting: effect}, expect=..., margin=...)``.

    Args:
        effect: the setting's :class:`~bncourse.verdict.Estimate` (its 95% interval
            ``ci_low``/``ci_high``, any other with ``effect.interval(confidence)``).
        expect: ``"greater"``, ``"less"`` or ``"equivalent"``: what the claim predicts.
        margin: the equivalence margin, a positive number, or ``None`` (no equivalence test;
            only with ``"greater"`` or ``"less"``).

    Returns:
        ``"for"``, ``"against"``, ``"equivalent"`` or ``"null"``, by the rule of
        :mod:`bncourse.verdict`.
    """
    return decide({"setting": effect}, expect=expect, margin=margin).settings["setting"]


def _rule_variant(*, equivalence=None, direction=None, sign=None, nonzero_against=False,
                  null_is_for=False, null_is_against=False, direction_first=False,
                  test_equivalence=True):
    """The rule written out with one bug: ``equivalence(e, margin) -> bool`` replaces the
    90%-interval test, ``direction(e) -> -1/0/+1`` the 95%-interval one, ``sign(expect)`` the
    predicted sign; the flags name the other bugs."""
    def is_equivalent(e, margin):
        if equivalence is not None:
            return equivalence(e, margin)
        low, high = e.interval(1 - 2 * ALPHA)
        return -margin < low and high < margin

    def side(e):
        return e.direction if direction is None else direction(e)

    def fn(effect, expect, margin):
        if expect == "equivalent":
            if is_equivalent(effect, margin):
                return "for"
            outside = (side(effect) != 0 if nonzero_against
                       else effect.ci_low > margin or effect.ci_high < -margin)
            if outside:
                return "against"
            return "for" if null_is_for and side(effect) == 0 else "null"
        predicted = (1 if expect == "greater" else -1) if sign is None else sign(expect)
        equivalent = test_equivalence and margin is not None and is_equivalent(effect, margin)
        if equivalent and not direction_first:
            return "equivalent"
        if side(effect) == predicted:
            return "for"
        if side(effect) == -predicted or (null_is_against and side(effect) == 0):
            return "against"
        return "equivalent" if equivalent else "null"
    return fn


def _side_at(confidence):
    def direction(e):
        low, high = e.interval(confidence)
        return 1 if low > 0 else -1 if high < 0 else 0
    return direction


def _equivalent_at(confidence):
    def equivalence(e, margin):
        low, high = e.interval(confidence)
        return -margin < low and high < margin
    return equivalence


_FIX_EQUIVALENCE = ("equivalent when the 90% interval, effect.interval(0.90), lies inside "
                    "(-margin, margin).")

_RULE_MISTAKES = (
    Mistake("null_is_against",
            "A 95% interval that contains 0 counts as \"against\" in your rule. It is \"null\": "
            "the data cannot tell the effect's sign. \"against\" needs an interval on the other "
            "side of 0 from the predicted one.",
            "\"against\" only if the 95% interval excludes 0 on the side opposite to the "
            "prediction; otherwise \"null\".",
            _rule_variant(null_is_against=True)),
    Mistake("no_equivalence_test",
            "Your rule never answers \"equivalent\" for a directional claim: it ignores the "
            "margin. An effect whose 90% interval lies inside (-margin, margin) is too small to "
            "matter, whichever side of 0 it is on.",
            "test equivalence first when a margin is given; " + _FIX_EQUIVALENCE,
            _rule_variant(test_equivalence=False)),
    Mistake("direction_before_equivalence",
            "Your rule tests the sign before equivalence, so a real but negligible effect (its "
            "interval excludes 0 but lies inside the margin) counts for or against the claim. "
            "The rule tests equivalence first: such an effect is \"equivalent\".",
            "test equivalence first; only if it fails, look at the sign.",
            _rule_variant(direction_first=True)),
    Mistake("equivalence_at_95",
            "Your equivalence test uses the 95% interval. Equivalence is two one-sided tests at "
            "5% each, which is the 90% interval lying inside the margin.",
            _FIX_EQUIVALENCE,
            _rule_variant(equivalence=_equivalent_at(1 - ALPHA))),
    Mistake("direction_at_90",
            "Your sign test uses the 90% interval: a one-sided test at 5%. The rule's sign test "
            "is two-sided: the 95% interval (ci_low, ci_high) must exclude 0.",
            "use effect.ci_low > 0 (or effect.ci_high < 0) for the sign.",
            _rule_variant(direction=_side_at(1 - 2 * ALPHA))),
    Mistake("equivalence_by_mean",
            "Your equivalence test looks at the mean alone (|mean| < margin). A mean inside the "
            "margin with a wide interval proves nothing; the whole 90% interval must be inside.",
            _FIX_EQUIVALENCE,
            _rule_variant(equivalence=lambda e, margin: abs(e.mean) < margin)),
    Mistake("ignores_less",
            "Your rule treats every directional claim as predicting a positive effect. With "
            "expect=\"less\" the claim predicts a negative one: an interval below 0 is \"for\".",
            "predicted sign = +1 for \"greater\", -1 for \"less\".",
            _rule_variant(sign=lambda expect: 1)),
    Mistake("no_difference_is_equivalence",
            "For an equivalence claim your rule answers \"for\" whenever the 95% interval "
            "contains 0. Not finding a difference is not evidence of no difference: a wide "
            "interval is \"null\". \"for\" needs the 90% interval inside the margin.",
            _FIX_EQUIVALENCE,
            _rule_variant(null_is_for=True)),
    Mistake("nonzero_is_against_equivalence",
            "For an equivalence claim your rule answers \"against\" whenever the 95% interval "
            "excludes 0. An effect can be real and still smaller than the margin; \"against\" "
            "needs the whole 95% interval outside [-margin, margin].",
            "\"against\" if effect.ci_low > margin or effect.ci_high < -margin.",
            _rule_variant(nonzero_against=True)),
)

#: Per-seed noise of the effects, standardized to mean 0 and sample standard deviation 1.
_SHAPE = np.array([-1.3, -0.4, 0.1, 0.6, 1.0])
_SHAPE = (_SHAPE - _SHAPE.mean()) / _SHAPE.std(ddof=1)


def _effect(mean: float, se: float) -> Estimate:
    """The estimate from five per-seed samples with this mean and standard error."""
    return estimate(mean + se * np.sqrt(_SHAPE.size) * _SHAPE)


def _case(mean, se, expect, margin, why):
    e = _effect(mean, se)
    low, high = e.interval(1 - 2 * ALPHA)
    label = (f"\"{why}: effect {e.format()}, 90% [{low:+.3f}, {high:+.3f}], "
             f"expect={expect!r}, margin={margin}\"")
    return Case(label, (e, expect, margin))


def _rule_cases() -> list[Case]:
    """One setting each, five seeds: every class of every kind of claim, and the borderline
    intervals (inside the margin at 90% but not at 95%, excluding 0 at 90% but not at 95%, a
    real effect smaller than the margin) where the mistakes answer differently."""
    return [
        _case(0.05, 0.005, "greater", 0.01, "a clear positive effect"),
        _case(0.005, 0.01, "greater", 0.01, "a small effect, wide interval"),
        _case(0.004, 0.001, "greater", 0.01, "a real but negligible effect"),
        _case(0.0, 0.004, "greater", 0.01, "inside the margin at 90% only"),
        _case(0.025, 0.01, "greater", 0.01, "above 0 at 90% only"),
        _case(-0.05, 0.005, "less", 0.01, "a clear negative effect"),
        _case(0.03, 0.005, "less", 0.01, "a clear positive effect"),
        _case(0.003, 0.01, "greater", None, "no margin"),
        _case(0.003, 0.003, "equivalent", 0.02, "a small effect, narrow interval"),
        _case(0.015, 0.003, "equivalent", 0.02, "a real effect near the margin"),
        _case(0.0, 0.02, "equivalent", 0.02, "no difference found, wide interval"),
        _case(0.06, 0.005, "equivalent", 0.02, "a large effect"),
    ]


def _coded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` answering the index of its word in :data:`LABELS` (the engine compares numbers);
    anything else passes through for the engine to report."""
    @functools.wraps(fn)
    def coded(*args, **kwargs):
        word = fn(*args, **kwargs)
        return LABELS.index(word) if isinstance(word, str) and word in LABELS else word
    return coded


def _words(fn: Callable[..., Any], case: Case) -> Any:
    try:
        return fn(*case.args, **dict(case.kwargs))
    except Exception:  # noqa: BLE001 -- the engine reports a raising function
        return None


def _check_words(fn: Callable[..., Any], cases: list[Case]) -> None:
    """A string that is not one of the four classes cannot be compared: say so first."""
    name = getattr(fn, "__name__", type(fn).__name__)
    for case in cases:
        word = _words(fn, case)
        if isinstance(word, str) and word not in LABELS:
            hint = (" That is a verdict on a whole claim; this function classifies one setting."
                    if word in ("supported", "refuted", "mixed", "inconclusive") else "")
            raise ExerciseError(
                f"{_NAME}: `{name}` returned {word!r} (case {case.label}); expected one of "
                f"{', '.join(map(repr, LABELS))}.{hint}")


@with_solution(_rule_reference)
def check_classify_setting(fn: Callable[..., Any]) -> None:
    """Check ``fn(effect, expect, margin)``: the class of one setting of a claim, as
    :func:`bncourse.verdict.decide` gives it.

    ``effect`` is a :class:`~bncourse.verdict.Estimate`, ``expect`` one of ``"greater"``,
    ``"less"``, ``"equivalent"``, ``margin`` a positive number or ``None``. ``fn`` returns
    ``"for"``, ``"against"``, ``"equivalent"`` or ``"null"``. The rule: for ``"greater"`` /
    ``"less"``, ``"equivalent"`` if a margin is given and the 90% interval lies inside
    ``(-margin, margin)``; else ``"for"`` / ``"against"`` if the 95% interval excludes 0 on the
    predicted / the other side; else ``"null"``. For ``"equivalent"``: ``"for"`` if the 90%
    interval lies inside the margin, ``"against"`` if the 95% interval lies outside
    ``[-margin, margin]``, else ``"null"``. Twelve settings with five seeds each.

    Raises:
        ExerciseError: naming the mistake (an interval containing 0 called "against", the margin
            ignored or tested after the sign, the 95% interval for equivalence or the 90% one
            for the sign, the mean alone against the margin, "less" read as "greater", "no
            difference found" read as equivalence, ...).
    """
    cases = _rule_cases()
    _check_words(fn, cases)
    try:
        check_function(
            _coded(fn), _coded(_rule_reference), cases,
            [Mistake(mk.key, mk.diagnosis, mk.fix, _coded(mk.fn)) for mk in _RULE_MISTAKES],
            name=_NAME, outputs=("class",),
            advice="for a directional claim test, in this order: equivalence (90% interval "
                   "inside the margin, if a margin is given), then the sign (95% interval "
                   "excluding 0). For an equivalence claim: the 90% interval inside the margin "
                   "is \"for\", the 95% interval outside it \"against\".",
        )
    except ExerciseError as err:
        if "does not match the reference" not in str(err):
            raise  # a problem before any comparison: its message says it all
        raise ExerciseError(f"{err}\n{_disagreements(fn, cases)}", err.mistakes) from None


def _disagreements(fn: Callable[..., Any], cases: list[Case]) -> str:
    """The classes in words (the engine's message shows their indices in LABELS)."""
    lines = [f"Classes ({', '.join(f'{i} = {w!r}' for i, w in enumerate(LABELS))}), where "
             f"yours differ:"]
    for case in cases:
        yours, rule = _words(fn, case), _rule_reference(*case.args)
        if yours != rule:
            lines.append(f"  {case.label}: yours {yours!r}, the rule's {rule!r}")
    return "\n".join(lines)
