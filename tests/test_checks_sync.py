"""check_sync_statistics (notebook 05): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import numpy as np
import pytest

from bncourse.checks.engine import ExerciseError
from bncourse.checks.sync import _SYNC_MISTAKES, check_sync_statistics


def _learner(counts, sums, sums_sq, *, bug=None):
    """A learner's global statistics from all-reduced totals, correct unless ``bug`` is set."""
    n = counts.sum()
    with np.errstate(all="ignore"):                  # an empty worker: 0 / 0 in some bugs
        worker_mean = sums / counts[:, None]
        worker_var = sums_sq / counts[:, None] - worker_mean**2
    mean = sums.sum(0) / n
    if bug == "mean_of_means":
        mean = worker_mean.mean(0)
    if bug == "divided_by_workers":
        mean = sums.sum(0) / len(counts)
        return mean, sums_sq.sum(0) / len(counts) - mean**2
    var = sums_sq.sum(0) / n - mean**2
    if bug == "within_workers":
        var = sums_sq.sum(0) / n - (counts[:, None] * worker_mean**2).sum(0) / n
    if bug == "mean_of_variances":
        var = worker_var.mean(0)
    if bug == "unbiased":
        var = var * n / (n - 1)
    return mean, var


def _with(bug):
    def sync_statistics(counts, sums, sums_sq):
        return _learner(counts, sums, sums_sq, bug=bug)
    return sync_statistics


LEARNER_MISTAKES = [
    ("mean_of_means", "plain average of the workers' means"),
    ("within_workers", "each worker's own mean"),
    ("mean_of_variances", "average of the workers' variances"),
    ("divided_by_workers", "number of workers"),
    ("unbiased", "divided by N - 1"),
]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_sync_statistics(fn)
    return info.value


def test_sync_reference_solution_passes_with_one_line(capsys):
    check_sync_statistics(check_sync_statistics.solution)
    assert capsys.readouterr().out == "check_sync_statistics: all 3 cases match the reference.\n"


def test_sync_correct_learner_passes(capsys):
    check_sync_statistics(_with(None))
    assert "all 3 cases match" in capsys.readouterr().out


def test_sync_reference_equals_bn_statistics_of_the_concatenated_shards():
    rng = np.random.default_rng(4)
    shards = [rng.normal(size=(n, 3)) * 2 + rng.normal(size=3) for n in (3, 0, 9, 1)]
    counts = np.array([len(s) for s in shards])
    sums = np.stack([s.sum(0) for s in shards])
    sums_sq = np.stack([(s**2).sum(0) for s in shards])
    mean, var = check_sync_statistics.solution(counts, sums, sums_sq)
    everything = np.concatenate(shards)
    np.testing.assert_allclose(mean, everything.mean(0), atol=1e-12)
    np.testing.assert_allclose(var, everything.var(0), atol=1e-12)


def test_sync_stub_is_not_implemented_yet():
    def sync_statistics(counts, sums, sums_sq):
        raise NotImplementedError
    assert "not implemented yet" in str(_diagnosis(sync_statistics))


@pytest.mark.parametrize(("key", "phrase"), LEARNER_MISTAKES, ids=[k for k, _ in LEARNER_MISTAKES])
def test_sync_learner_mistake_is_named(key, phrase):
    err = _diagnosis(_with(key))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_sync_learner_mistakes_cover_the_catalogue():
    assert {k for k, _ in LEARNER_MISTAKES} == {m.key for m in _SYNC_MISTAKES}


@pytest.mark.parametrize("mistake", _SYNC_MISTAKES, ids=[m.key for m in _SYNC_MISTAKES])
def test_sync_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(mistake.fn).mistakes == (mistake.key,)


def test_sync_counts_not_reshaped_get_the_broadcasting_advice():
    def sync_statistics(counts, sums, sums_sq):
        worker_mean = sums / counts                  # (W, C) / (W,): broadcasts wrongly or fails
        return worker_mean.sum(0), sums_sq.sum(0)
    assert "broadcast" in str(_diagnosis(sync_statistics))


def test_sync_one_value_instead_of_two_is_explained():
    def sync_statistics(counts, sums, sums_sq):
        return _learner(counts, sums, sums_sq)[0]
    assert "expected the 2 values `mean, var`" in str(_diagnosis(sync_statistics))


def test_sync_returning_none_is_explained():
    assert "returned None" in str(_diagnosis(lambda counts, sums, sums_sq: None))
