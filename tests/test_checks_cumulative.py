"""check_cumulative_running_mean (notebook 02): the reference passes, each mistake is named."""

import numpy as np
import pytest

from bncourse.checks.cumulative import (
    _CUMULATIVE_MISTAKES,
    _cumulative_cases,
    _cumulative_reference,
    check_cumulative_running_mean,
)
from bncourse.checks.engine import ExerciseError


def _learner(weight=lambda n: 1 / n, *, count_first=True, reversed_weights=False,
             increment=True):
    """A learner's update, correct unless an option adds one mistake."""
    def cumulative_running_mean(running_mean, batch_mean, num_batches_tracked):
        n = num_batches_tracked + 1 if count_first else num_batches_tracked
        f = weight(n)
        if reversed_weights:
            new = f * running_mean + (1 - f) * batch_mean
        else:
            new = (1 - f) * running_mean + f * batch_mean
        return new, (num_batches_tracked + 1 if increment else num_batches_tracked)
    return cumulative_running_mean


_BUGS = [
    (_learner(count_first=False), "old_count", "the count before this batch"),
    (_learner(lambda n: 1 / (n + 1)), "counted_twice", "counted twice"),
    (_learner(lambda n: 0.1), "ema_default", "default momentum 0.1"),
    (_learner(reversed_weights=True), "weights_reversed", "weights are reversed"),
    (_learner(lambda n: 0.5), "mean_of_two", "equal weights"),
    (_learner(lambda n: 1.0), "assigned_batch", "replaces the running mean"),
    (_learner(increment=False), "count_not_incremented", "returned count is the old one"),
]


def test_reference_solution_passes_with_one_line(capsys):
    check_cumulative_running_mean(check_cumulative_running_mean.solution)
    assert (capsys.readouterr().out
            == "check_cumulative_running_mean: all 4 cases match the reference.\n")


def test_learner_style_solution_passes(capsys):
    check_cumulative_running_mean(_learner())
    assert "all 4 cases match" in capsys.readouterr().out


def test_in_place_update_that_also_returns_the_pair_passes(capsys):
    def cumulative_running_mean(running_mean, batch_mean, num_batches_tracked):
        n = num_batches_tracked + 1
        running_mean += (batch_mean - running_mean) / n
        return running_mean, n

    check_cumulative_running_mean(cumulative_running_mean)
    assert "all 4 cases match" in capsys.readouterr().out


def test_reference_is_the_plain_average_of_the_batch_means():
    means = np.random.default_rng(0).normal(size=(5, 3))
    running, count = np.zeros(3), 0
    for m in means:
        running, count = _cumulative_reference(running, m, count)
    np.testing.assert_allclose(running, means.mean(0), rtol=1e-12)
    assert count == 5


def test_reference_equals_the_closed_form_on_the_cases():
    for case in _cumulative_cases():
        running, batch, count = case.args
        n = count + 1
        new, new_count = _cumulative_reference(*case.args)
        np.testing.assert_allclose(new, (1 - 1 / n) * running + batch / n, rtol=1e-13)
        assert new_count == n


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {key for _, key, _ in _BUGS} == {m.key for m in _CUMULATIVE_MISTAKES}


@pytest.mark.parametrize("fn, key, phrase", _BUGS, ids=[k for _, k, _ in _BUGS])
def test_mistake_is_named(fn, key, phrase):
    with pytest.raises(ExerciseError) as info:
        check_cumulative_running_mean(fn)
    assert key in info.value.mistakes
    assert phrase in str(info.value)


def test_stub_says_not_implemented_yet():
    def cumulative_running_mean(running_mean, batch_mean, num_batches_tracked):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_cumulative_running_mean(cumulative_running_mean)


def test_in_place_update_returning_none_asks_for_the_return():
    def cumulative_running_mean(running_mean, batch_mean, num_batches_tracked):
        running_mean += (batch_mean - running_mean) / (num_batches_tracked + 1)

    with pytest.raises(ExerciseError, match="return new_mean, new_count"):
        check_cumulative_running_mean(cumulative_running_mean)


def test_returning_the_mean_alone_asks_for_the_pair():
    with pytest.raises(ExerciseError, match="expected the 2 values `new_mean, new_count`"):
        check_cumulative_running_mean(lambda r, b, n: _learner()(r, b, n)[0])


def test_wrong_arity_shows_how_the_checker_calls_it():
    with pytest.raises(ExerciseError, match="running_mean, batch_mean, num_batches_tracked"):
        check_cumulative_running_mean(lambda running_mean, batch_mean: (running_mean, 1))
