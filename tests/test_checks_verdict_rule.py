"""check_classify_setting (notebook 07): the reference is the verdict rule, each known mistake
is named.

The buggy rules are written the way a learner would write them, from the effect's intervals,
independently of the catalogue's variants.
"""

import pytest

from bncourse.checks import ExerciseError
from bncourse.checks.verdict_rule import (
    _RULE_MISTAKES,
    LABELS,
    _rule_cases,
    _rule_reference,
    check_classify_setting,
)
from bncourse.verdict import decide


def _learner(effect, expect, margin, bug=None):
    """A learner's rule; ``bug`` names the one mistake to make."""
    low95, high95 = effect.ci_low, effect.ci_high
    low90, high90 = effect.interval(0.90)
    eq_low, eq_high = (low95, high95) if bug == "equivalence_at_95" else (low90, high90)
    if bug == "equivalence_by_mean":
        eq_low = eq_high = effect.mean
    sign_low, sign_high = (low90, high90) if bug == "direction_at_90" else (low95, high95)
    above, below = sign_low > 0, sign_high < 0
    if expect == "equivalent":
        if -margin < eq_low and eq_high < margin:
            return "for"
        if bug == "nonzero_is_against_equivalence" and (above or below):
            return "against"
        if low95 > margin or high95 < -margin:
            return "against"
        if bug == "no_difference_is_equivalence" and not (above or below):
            return "for"
        return "null"
    equivalent = (margin is not None and bug != "no_equivalence_test"
                  and -margin < eq_low and eq_high < margin)
    if equivalent and bug != "direction_before_equivalence":
        return "equivalent"
    for_claim, against_claim = (below, above) if expect == "less" else (above, below)
    if bug == "ignores_less":
        for_claim, against_claim = above, below
    if for_claim:
        return "for"
    if against_claim or bug == "null_is_against":
        return "against"
    return "equivalent" if equivalent else "null"


def _buggy(bug):
    def classify_setting(effect, expect, margin):
        return _learner(effect, expect, margin, bug=bug)
    return classify_setting


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "null_is_against": "contains 0 counts as \"against\"",
    "no_equivalence_test": "ignores the margin",
    "direction_before_equivalence": "tests the sign before equivalence",
    "equivalence_at_95": "equivalence test uses the 95% interval",
    "direction_at_90": "sign test uses the 90% interval",
    "equivalence_by_mean": "looks at the mean alone",
    "ignores_less": "predicting a positive effect",
    "no_difference_is_equivalence": "Not finding a difference is not evidence",
    "nonzero_is_against_equivalence": "excludes 0. An effect can be real",
}


def test_the_reference_passes_with_one_line(capsys):
    check_classify_setting(check_classify_setting.solution)
    assert capsys.readouterr().out == "check_classify_setting: all 12 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_classify_setting(_buggy(None))
    assert "all 12 cases match" in capsys.readouterr().out


def test_the_reference_is_the_verdict_rules_setting_class():
    for case in _rule_cases():
        effect, expect, margin = case.args
        verdict = decide({"x": effect}, expect=expect, margin=margin)
        assert _rule_reference(*case.args) == verdict.settings["x"]


def test_the_cases_cover_every_class_for_directional_and_equivalence_claims():
    seen = {(case.args[1] == "equivalent", _rule_reference(*case.args)) for case in _rule_cases()}
    assert {label for directional, label in seen if not directional} == set(LABELS)
    assert {label for equivalence, label in seen if equivalence} == {"for", "against", "null"}


def test_a_stub_is_reported_as_not_implemented_yet():
    def classify_setting(effect, expect, margin):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_classify_setting(classify_setting)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _RULE_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_classify_setting(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _RULE_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_classify_setting(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_a_failure_lists_the_differing_classes_in_words():
    with pytest.raises(ExerciseError) as info:
        check_classify_setting(_buggy("ignores_less"))
    message = str(info.value)
    assert "yours 'against', the rule's 'for'" in message
    assert "yours 'for', the rule's 'against'" in message


def test_a_claim_level_outcome_is_reported_as_the_wrong_level():
    with pytest.raises(ExerciseError, match="verdict on a whole claim") as info:
        check_classify_setting(lambda effect, expect, margin: "supported")
    assert info.value.mistakes == ()


def test_an_unknown_word_is_reported_with_the_four_classes():
    with pytest.raises(ExerciseError, match="expected one of 'for', 'against', 'equivalent'"):
        check_classify_setting(lambda effect, expect, margin: "For")


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_classify_setting(lambda effect, expect, margin: None)


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_classify_setting(lambda effect, expect: "null")


def test_an_unknown_bug_gets_the_advice():
    def always_null(effect, expect, margin):
        return "null"

    with pytest.raises(ExerciseError, match="test, in this order: equivalence") as info:
        check_classify_setting(always_null)
    assert info.value.mistakes == ()
