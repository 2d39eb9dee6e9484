"""check_precise_statistics (notebook 05): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import numpy as np
import pytest

from bncourse.checks._pooling import values_with_statistics
from bncourse.checks.engine import ExerciseError
from bncourse.checks.precise import _PRECISE_MISTAKES, check_precise_statistics


def _learner(batch_means, batch_vars, batch_size, *, bug=None):
    """A learner's pooled statistics (law of total variance), correct unless ``bug`` is set."""
    k, b = len(batch_means), batch_size
    mean = batch_means.mean(axis=0)
    within = batch_vars.mean(axis=0)
    between = ((batch_means - mean) ** 2).mean(axis=0)
    var = {None: (within + between) * k * b / (k * b - 1),
           "within_only": within,
           "within_only_unbiased": (batch_vars * b / (b - 1)).mean(axis=0),
           "biased": within + between,
           "batch_correction": (within + between) * b / (b - 1),
           "both_parts_unbiased": within * b / (b - 1) + between * k / (k - 1)}[bug]
    return mean, var


def _with(bug):
    def precise_statistics(batch_means, batch_vars, batch_size):
        return _learner(batch_means, batch_vars, batch_size, bug=bug)
    return precise_statistics


LEARNER_MISTAKES = [
    ("within_only", "spread of the batch means around the overall mean is missing"),
    ("within_only_unbiased", "`bncourse.nn.precise_bn`"),
    ("biased", "biased variance of the pooled values"),
    ("batch_correction", "one batch's size"),
    ("both_parts_unbiased", "each part unbiased on its own"),
]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_precise_statistics(fn)
    return info.value


def test_precise_reference_solution_passes_with_one_line(capsys):
    check_precise_statistics(check_precise_statistics.solution)
    assert capsys.readouterr().out == ("check_precise_statistics: all 3 cases match the "
                                       "reference.\n")


def test_precise_correct_learner_passes(capsys):
    check_precise_statistics(_with(None))
    assert "all 3 cases match" in capsys.readouterr().out


def test_precise_reference_equals_numpy_on_the_pooled_values():
    x = np.random.default_rng(3).normal(size=(6, 5, 2)) + np.arange(6)[:, None, None]  # (K, B, C)
    mean, var = check_precise_statistics.solution(x.mean(1), x.var(1), 5)
    np.testing.assert_allclose(mean, x.reshape(-1, 2).mean(0), atol=1e-12)
    np.testing.assert_allclose(var, x.reshape(-1, 2).var(0, ddof=1), atol=1e-12)


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_rebuilt_values_have_the_requested_mean_and_biased_variance(count):
    mean, var = np.array([2.0, -1.0]), np.array([0.0 if count == 1 else 3.0, 0.0])
    values = values_with_statistics(mean, var, count)
    assert values.shape == (count, 2)
    np.testing.assert_allclose(values.mean(0), mean, atol=1e-12)
    np.testing.assert_allclose(values.var(0), var, atol=1e-12)


def test_precise_stub_is_not_implemented_yet():
    def precise_statistics(batch_means, batch_vars, batch_size):
        raise NotImplementedError
    assert "not implemented yet" in str(_diagnosis(precise_statistics))


@pytest.mark.parametrize(("key", "phrase"), LEARNER_MISTAKES, ids=[k for k, _ in LEARNER_MISTAKES])
def test_precise_learner_mistake_is_named(key, phrase):
    err = _diagnosis(_with(key))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_precise_learner_mistakes_cover_the_catalogue():
    assert {k for k, _ in LEARNER_MISTAKES} == {m.key for m in _PRECISE_MISTAKES}


@pytest.mark.parametrize("mistake", _PRECISE_MISTAKES, ids=[m.key for m in _PRECISE_MISTAKES])
def test_precise_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(mistake.fn).mistakes == (mistake.key,)


def test_precise_reduction_over_channels_is_a_wrong_shape():
    def precise_statistics(batch_means, batch_vars, batch_size):
        return _learner(batch_means.T, batch_vars.T, batch_size)
    assert "`mean` has shape" in str(_diagnosis(precise_statistics))


def test_precise_one_value_instead_of_two_is_explained():
    def precise_statistics(batch_means, batch_vars, batch_size):
        return _learner(batch_means, batch_vars, batch_size)[1]
    assert "expected the 2 values `mean, var`" in str(_diagnosis(precise_statistics))


def test_precise_returning_none_is_explained():
    assert "returned None" in str(_diagnosis(lambda batch_means, batch_vars, batch_size: None))
