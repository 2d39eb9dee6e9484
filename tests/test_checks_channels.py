"""check_channel_stats (notebook 02): the reference passes, each known mistake is named."""

import numpy as np
import pytest

from bncourse.checks.channels import _CHANNEL_STATS_MISTAKES, check_channel_stats
from bncourse.checks.engine import ExerciseError


def _axes(x):
    return (0, *range(2, x.ndim))


def _learner(x):
    mean = x.mean(axis=_axes(x))
    var = ((x - mean.reshape(1, -1, *[1] * (x.ndim - 2))) ** 2).mean(axis=_axes(x))
    return mean, var


def _over(axes, ddof=0):
    def channel_stats(x):
        ax = axes(x)
        return x.mean(axis=ax), x.var(axis=ax, ddof=ddof)
    return channel_stats


def _reshaped(x):
    flat = x.reshape(-1, x.shape[1])
    return flat.mean(0), flat.var(0)


def _std(x):
    mean, var = _learner(x)
    return mean, np.sqrt(var)


_BUGS = [
    (_over(lambda x: 0), "axis0_only", "over axis 0 (the batch) only"),
    (_over(lambda x: tuple(range(1, x.ndim))), "per_example", "per example"),
    (_over(lambda x: (0, 1)), "per_position", "one per position"),
    (_over(lambda x: None), "global", "for the whole array"),
    (_reshaped, "reshape_channels", "does not gather each channel's values"),
    (_over(_axes, ddof=1), "unbiased", "unbiased"),
    (_std, "std_not_var", "standard deviation"),
    (lambda x: _learner(x)[::-1], "outputs_swapped", "wrong order"),
]


def test_reference_solution_passes_with_one_line(capsys):
    check_channel_stats(check_channel_stats.solution)
    assert capsys.readouterr().out == "check_channel_stats: all 3 cases match the reference.\n"


def test_learner_style_solution_passes(capsys):
    check_channel_stats(_learner)
    assert "all 3 cases match" in capsys.readouterr().out


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {key for _, key, _ in _BUGS} == {m.key for m in _CHANNEL_STATS_MISTAKES}


@pytest.mark.parametrize("fn, key, phrase", _BUGS, ids=[k for _, k, _ in _BUGS])
def test_mistake_is_named(fn, key, phrase):
    with pytest.raises(ExerciseError) as info:
        check_channel_stats(fn)
    assert key in info.value.mistakes
    assert phrase in str(info.value)


def test_stub_says_not_implemented_yet():
    def channel_stats(x):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_channel_stats(channel_stats)


def test_returning_none_asks_for_the_return():
    with pytest.raises(ExerciseError, match="returned None"):
        check_channel_stats(lambda x: None)


def test_returning_one_value_asks_for_the_pair():
    with pytest.raises(ExerciseError, match="expected the 2 values `mean, var`"):
        check_channel_stats(lambda x: _learner(x)[0])


def test_mean_without_keepdims_broadcast_error_gets_the_keepdims_hint():
    def channel_stats(x):
        mean = x.mean(axis=_axes(x))
        return mean, ((x - mean) ** 2).mean(axis=_axes(x))   # (C,) against (N, C, L)

    with pytest.raises(ExerciseError, match="keepdims=True"):
        check_channel_stats(channel_stats)


def test_wrong_signature_shows_how_the_checker_calls_it():
    def channel_stats(x, axis):
        return _learner(x)

    with pytest.raises(ExerciseError, match=r"calls `channel_stats\(x\)`"):
        check_channel_stats(channel_stats)


def test_unknown_bug_gets_the_advice():
    with pytest.raises(ExerciseError) as info:
        check_channel_stats(lambda x: (_learner(x)[0] + 1.0, _learner(x)[1]))
    assert info.value.mistakes == ()
    assert "Hint: reduce over every axis but the channel axis 1" in str(info.value)
