"""verdict: t intervals match scipy, the rule classifies and combines settings as documented."""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats

from bncourse.verdict import ALPHA, OUTCOMES, POWER, decide, estimate

TOL = 1e-12  # relative tolerance against scipy: same formulas, different summation order
POWER_TOL = 0.05  # mde = (t_crit + t_power) * se is an approximation to the exact power
MARGIN = 0.1

# Synthetic per-seed effects, each built so its class is unambiguous at MARGIN.
FOR = [0.9, 1.0, 1.1, 1.0, 1.0]  # clearly positive
AGAINST = [-v for v in FOR]  # clearly negative
NIL = [0.001, -0.002, 0.0, 0.002, -0.001]  # 90% interval well inside (-MARGIN, MARGIN)
NOISY = [1.0, -1.2, 0.8, -0.9, 0.4]  # interval covers 0 and reaches beyond the margin
TINY = [0.010, 0.011, 0.009, 0.010, 0.010]  # significantly > 0, but far inside the margin

SAMPLES = [np.random.default_rng(0).normal(0.3, 1.0, n) for n in (2, 5, 12)]

samples = st.lists(
    st.floats(-10, 10, allow_nan=False, allow_infinity=False), min_size=2, max_size=12
)
margins = st.one_of(st.none(), st.floats(0.01, 5))


def has_spread(x):
    return np.std(x) > 1e-3 * (1 + np.abs(np.mean(x)))


# Estimates against scipy.


@pytest.mark.parametrize("x", SAMPLES)
def test_one_sample_interval_equals_scipy_ttest_1samp(x):
    e = estimate(x)
    ci = stats.ttest_1samp(x, 0).confidence_interval(1 - ALPHA)
    np.testing.assert_allclose([e.ci_low, e.ci_high], [ci.low, ci.high], rtol=TOL)
    assert e.mean == pytest.approx(np.mean(x), rel=TOL) and e.df == len(x) - 1


@given(samples)
def test_one_sample_interval_equals_scipy_on_random_samples(x):
    assume(has_spread(x))
    e = estimate(x)
    ci = stats.ttest_1samp(x, 0).confidence_interval(1 - ALPHA)
    np.testing.assert_allclose([e.ci_low, e.ci_high], [ci.low, ci.high], rtol=1e-9, atol=1e-9)


def test_paired_interval_equals_scipy_ttest_rel():
    a, b = SAMPLES[1], np.random.default_rng(1).normal(0.0, 1.0, 5)
    e = estimate(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(1 - ALPHA)
    np.testing.assert_allclose([e.ci_low, e.ci_high], [ci.low, ci.high], rtol=TOL)


def test_paired_estimate_equals_one_sample_estimate_of_differences():
    a, b = SAMPLES[1], np.random.default_rng(1).normal(0.0, 1.0, 5)
    assert estimate(a, b, paired=True) == estimate(a - b)


@pytest.mark.parametrize("n_b", [5, 9])
def test_welch_interval_and_df_equal_scipy_ttest_ind_unequal_var(n_b):
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.5, 6), rng.normal(0.0, 2.0, n_b)
    e = estimate(a, b, paired=False)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(1 - ALPHA)
    np.testing.assert_allclose([e.ci_low, e.ci_high, e.df], [ci.low, ci.high, res.df], rtol=TOL)
    assert e.n == min(6, n_b)


@pytest.mark.parametrize("x", SAMPLES[1:])
@pytest.mark.parametrize("margin", [0.2, 0.8, 2.0])
def test_equivalence_equals_two_one_sided_scipy_tests(x, margin):
    p_above = stats.ttest_1samp(x, popmean=-margin, alternative="greater").pvalue
    p_below = stats.ttest_1samp(x, popmean=margin, alternative="less").pvalue
    assert estimate(x).equivalent(margin) == (p_above < ALPHA and p_below < ALPHA)


@pytest.mark.parametrize("x", SAMPLES[1:])
def test_equivalence_is_tested_at_alpha_by_the_90_not_the_95_percent_interval(x):
    ci90 = stats.ttest_1samp(x, 0).confidence_interval(1 - 2 * ALPHA)
    ci95 = stats.ttest_1samp(x, 0).confidence_interval(1 - ALPHA)
    margin = (max(-ci90.low, ci90.high) + max(-ci95.low, ci95.high)) / 2  # between the two
    assert estimate(x).equivalent(margin)
    assert stats.ttest_1samp(x, popmean=margin, alternative="less").pvalue < ALPHA


def test_equivalence_oracle_cases_cover_both_answers():
    answers = {estimate(x).equivalent(m) for x in SAMPLES[1:] for m in (0.2, 0.8, 2.0)}
    assert answers == {True, False}


@pytest.mark.parametrize("n", [5, 10, 30])
def test_true_effect_equal_to_mde_is_detected_with_nominal_power(n):
    e = estimate(np.random.default_rng(1).normal(0.0, 1.0, n))
    t_crit = stats.t.ppf(1 - ALPHA / 2, e.df)
    nc = e.mde / e.se  # a true effect of mde, in standard errors
    power = stats.nct.sf(t_crit, e.df, nc) + stats.nct.cdf(-t_crit, e.df, nc)
    assert abs(power - POWER) < POWER_TOL


def test_interval_at_95_percent_reproduces_stored_interval():
    e = estimate(SAMPLES[1])
    np.testing.assert_allclose(e.interval(1 - ALPHA), (e.ci_low, e.ci_high), rtol=TOL)


def test_identical_samples_give_a_zero_width_interval_and_a_decided_verdict():
    e = estimate([0.5, 0.5, 0.5, 0.5])
    assert e.ci_low == e.ci_high == 0.5 and e.mde == 0
    assert decide({"MLP": [0.5, 0.5, 0.5, 0.5]}).outcome == "supported"


def test_identical_independent_samples_give_a_zero_width_welch_interval():
    e = estimate([0.5, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25], paired=False)
    assert e.ci_low == e.ci_high == 0.25 and math.isfinite(e.df)


# Hypothesis properties.


@given(samples)
def test_interval_contains_the_mean(x):
    e = estimate(x)
    assert e.ci_low <= e.mean <= e.ci_high


@given(samples, samples)
def test_swapping_a_and_b_negates_the_paired_estimate(a, b):
    n = min(len(a), len(b))
    ab, ba = estimate(a[:n], b[:n]), estimate(b[:n], a[:n])
    assert (ba.mean, ba.ci_low, ba.ci_high) == (-ab.mean, -ab.ci_high, -ab.ci_low)


@given(samples, margins)
def test_greater_on_x_gives_the_same_verdict_as_less_on_minus_x(x, margin):
    up = decide({"MLP": x}, expect="greater", margin=margin)
    down = decide({"MLP": [-v for v in x]}, expect="less", margin=margin)
    assert (up.outcome, up.settings) == (down.outcome, down.settings)


@given(samples)
def test_shifting_samples_far_above_zero_gives_supported(x):
    assert decide({"MLP": [v + 1000 for v in x]}, margin=MARGIN).outcome == "supported"


@given(st.dictionaries(st.sampled_from(["MLP", "CNN", "ViT"]), samples, min_size=1),
       st.sampled_from(["greater", "less", "equivalent"]), st.floats(0.01, 5))
def test_outcome_is_always_one_of_outcomes(effects, expect, margin):
    v = decide(effects, expect=expect, margin=margin)
    assert v.outcome in OUTCOMES
    assert set(v.settings.values()) <= {"for", "against", "equivalent", "null"}


# Directional claims: every outcome.


@pytest.mark.parametrize("effects", [{"MLP": FOR}, {"MLP": FOR, "CNN": [2 * v for v in FOR]}])
def test_positive_effect_in_every_setting_is_supported(effects):
    v = decide(effects, expect="greater", margin=MARGIN)
    assert v.outcome == "supported" and set(v.settings.values()) == {"for"}


def test_negative_effect_supports_a_claim_of_less():
    assert decide({"MLP": AGAINST}, expect="less").outcome == "supported"


def test_for_in_one_setting_and_null_in_another_is_supported():
    v = decide({"MLP": FOR, "CNN": NOISY}, margin=MARGIN)
    assert v.outcome == "supported" and v.settings == {"MLP": "for", "CNN": "null"}


def test_significant_effect_against_the_prediction_refutes():
    v = decide({"MLP": AGAINST, "CNN": NOISY}, expect="greater")
    assert v.outcome == "refuted" and v.settings["MLP"] == "against"


def test_equivalence_in_every_setting_refutes_a_directional_claim():
    v = decide({"MLP": NIL, "CNN": NIL}, expect="greater", margin=MARGIN)
    assert v.outcome == "refuted" and set(v.settings.values()) == {"equivalent"}


def test_equivalence_in_one_setting_and_null_in_another_is_inconclusive():
    assert decide({"MLP": NIL, "CNN": NOISY}, margin=MARGIN).outcome == "inconclusive"


def test_for_in_one_setting_and_against_in_another_is_mixed():
    assert decide({"MLP": FOR, "CNN": AGAINST}).outcome == "mixed"


def test_for_in_one_setting_and_equivalent_in_another_is_mixed():
    v = decide({"MLP": FOR, "CNN": NIL}, margin=MARGIN)
    assert v.outcome == "mixed" and v.settings == {"MLP": "for", "CNN": "equivalent"}


def test_significant_but_tiny_effect_inside_margin_counts_as_equivalent():
    assert estimate(TINY).ci_low > 0  # significant on its own...
    v = decide({"MLP": TINY}, expect="greater", margin=MARGIN)
    assert v.settings == {"MLP": "equivalent"} and v.outcome == "refuted"


def test_significant_tiny_effect_without_margin_counts_as_for():
    assert decide({"MLP": TINY}, expect="greater").settings == {"MLP": "for"}


def test_noisy_samples_are_inconclusive_and_state_the_detectable_effect():
    v = decide({"MLP": NOISY, "CNN": [0.5 * u for u in NOISY]}, margin=MARGIN)
    assert v.outcome == "inconclusive"
    assert v.mde == estimate(NOISY).mde > 0  # the larger of the two settings
    assert f"smallest detectable effect {v.mde:.3f}" in v.summary()


def test_summary_of_a_decided_verdict_lists_settings_without_the_detectable_effect():
    text = decide({"MLP": FOR, "CNN": NOISY}).summary()
    assert text.startswith("supported: MLP +1.000 [") and "CNN" in text and "null" in text
    assert "detectable" not in text


def test_welch_estimate_can_be_passed_to_decide():
    e = estimate([2.1, 1.9, 2.0, 2.2], [1.0, 0.8, 1.1, 0.9, 1.2], paired=False)
    v = decide({"MLP": e})
    assert v.effects["MLP"] is e and v.outcome == "supported"


# Equivalence claims.


def test_equivalence_claim_equivalent_in_every_setting_is_supported():
    v = decide({"MLP": NIL, "CNN": TINY}, expect="equivalent", margin=MARGIN)
    assert v.outcome == "supported" and set(v.settings.values()) == {"for"}


@pytest.mark.parametrize("x", [FOR, AGAINST])
def test_equivalence_claim_with_interval_outside_margin_is_refuted(x):
    v = decide({"MLP": x}, expect="equivalent", margin=MARGIN)
    assert v.outcome == "refuted" and v.settings == {"MLP": "against"}


def test_equivalence_claim_equivalent_in_one_setting_and_outside_in_another_is_mixed():
    assert decide({"MLP": NIL, "CNN": FOR}, expect="equivalent", margin=MARGIN).outcome == "mixed"


def test_equivalence_claim_on_noisy_samples_is_inconclusive():
    v = decide({"MLP": NOISY}, expect="equivalent", margin=MARGIN)
    assert v.outcome == "inconclusive" and v.settings == {"MLP": "null"}


# Bad input.


@pytest.mark.parametrize(
    ("a", "match"),
    [
        ([1.0], "at least 2 samples"),
        ([], "at least 2 samples"),
        ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
        ([1.0, float("nan"), 2.0], "finite"),
        ([1.0, float("inf")], "finite"),
    ],
)
def test_estimate_rejects_bad_samples(a, match):
    with pytest.raises(ValueError, match=match):
        estimate(a)


def test_paired_samples_of_unequal_length_are_rejected():
    with pytest.raises(ValueError, match="equal length.*paired=False"):
        estimate([1.0, 2.0, 3.0], [1.0, 2.0])


def test_decide_names_the_setting_with_bad_samples():
    with pytest.raises(ValueError, match=r"effects\['CNN'\].*at least 2"):
        decide({"MLP": FOR, "CNN": [1.0]})


def test_unknown_expect_is_rejected():
    with pytest.raises(ValueError, match="expect to be one of"):
        decide({"MLP": FOR}, expect="bigger")


@pytest.mark.parametrize("margin", [0, -0.1, float("nan"), "0.1"])
def test_non_positive_margin_is_rejected(margin):
    with pytest.raises(ValueError, match="margin to be a positive number"):
        decide({"MLP": FOR}, margin=margin)


def test_equivalence_claim_without_margin_is_rejected():
    with pytest.raises(ValueError, match="margin with expect='equivalent'"):
        decide({"MLP": NIL}, expect="equivalent")


def test_empty_effects_are_rejected():
    with pytest.raises(ValueError, match="at least one setting"):
        decide({})
