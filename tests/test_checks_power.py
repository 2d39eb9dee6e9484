"""check_seeds_needed (notebook 07): the reference is the verdict rule's minimum detectable
effect run backwards, each known mistake is named.

The buggy planners are written the way a learner would write them, independently of the
catalogue's variants.
"""

import numpy as np
import pytest
from scipy import stats

from bncourse.checks import ExerciseError
from bncourse.checks.power import (
    _SEEDS_MISTAKES,
    _seeds_cases,
    _seeds_reference,
    check_seeds_needed,
)
from bncourse.verdict import estimate


def _learner(pilot_a, pilot_b, effect, bug=None):
    """A learner's planner; ``bug`` names the one mistake to make."""
    a, b = np.asarray(pilot_a, dtype=float), np.asarray(pilot_b, dtype=float)
    if bug == "unpaired_sd":
        sd = np.sqrt(a.var(ddof=1) + b.var(ddof=1))
    else:
        sd = (a - b).std(ddof=0 if bug == "pilot_ddof0" else 1)
    n = 2
    while True:
        df = {"df_n": n, "pilot_df": a.size - 1}.get(bug, n - 1)
        if bug == "normal_quantiles":
            q = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
        else:
            level = 0.95 if bug == "one_sided_alpha" else 0.975
            q = stats.t.ppf(level, df) + (0 if bug == "forgot_power" else stats.t.ppf(0.8, df))
        if q * sd / np.sqrt(n) <= effect:
            return n
        n += 1


def _buggy(bug):
    def seeds_needed(pilot_a, pilot_b, effect):
        return _learner(pilot_a, pilot_b, effect, bug=bug)
    return seeds_needed


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "normal_quantiles": "normal distribution's",
    "unpaired_sd": "two independent arms",
    "one_sided_alpha": "a one-sided test",
    "forgot_power": "found only half the time",
    "pilot_ddof0": "ddof=0",
    "df_n": "use n degrees of freedom",
    "pilot_df": "keep the pilot's degrees of freedom",
}


def test_the_reference_passes_with_one_line(capsys):
    check_seeds_needed(check_seeds_needed.solution)
    assert capsys.readouterr().out == "check_seeds_needed: all 5 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_seeds_needed(_buggy(None))
    assert "all 5 cases match" in capsys.readouterr().out


def test_the_reference_is_where_the_verdict_rules_mde_reaches_the_effect():
    for case in _seeds_cases():
        a, b, effect = case.args
        n = _seeds_reference(a, b, effect)
        sd = np.std(a - b, ddof=1)
        # n paired differences with the pilot's spread: the package's mde at n and at n - 1
        shape = np.linspace(-1, 1, n)
        at_n = estimate(sd * shape / shape.std(ddof=1)).mde
        assert at_n <= effect
        if n > 2:
            shape = np.linspace(-1, 1, n - 1)
            assert estimate(sd * shape / shape.std(ddof=1)).mde > effect


def test_a_stub_is_reported_as_not_implemented_yet():
    def seeds_needed(pilot_a, pilot_b, effect):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_seeds_needed(seeds_needed)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _SEEDS_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_seeds_needed(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _SEEDS_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_seeds_needed(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_seeds_needed(lambda pilot_a, pilot_b, effect: None)


def test_a_tuple_instead_of_a_number_is_reported_with_its_shape():
    with pytest.raises(ExerciseError, match=r"has shape \(2,\)"):
        check_seeds_needed(lambda pilot_a, pilot_b, effect: (_learner(pilot_a, pilot_b, effect),
                                                             0.8))


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_seeds_needed(lambda pilot_a, effect: 5)


def test_an_unknown_bug_gets_the_advice():
    def one_too_many(pilot_a, pilot_b, effect):
        return _learner(pilot_a, pilot_b, effect) + 1

    with pytest.raises(ExerciseError, match="stop at the first n") as info:
        check_seeds_needed(one_too_many)
    assert info.value.mistakes == ()
