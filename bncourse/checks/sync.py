"""check_sync_statistics (notebook 05): the global batch statistics synchronized BN all-reduces.

Each worker sends its per-channel count, sum and sum of squares; their sums over the workers give
the global batch's mean and biased variance. The reference rebuilds each worker's shard from its
three numbers and lets :func:`bncourse.functional.batchnorm_forward` compute the statistics of the
global batch (:func:`bncourse.checks._pooling.union_statistics`): synchronized BN *is* BN on the
global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._pooling import union_statistics
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution

__all__ = ["check_sync_statistics"]


def _worker_stats(counts, sums, sums_sq):
    """Each worker's mean and biased variance (an empty worker: 0 and 0, it adds nothing)."""
    n = np.maximum(counts, 1)[:, None]
    mean = sums / n
    return mean, np.maximum(sums_sq / n - mean**2, 0.0)


def _sync_reference(counts, sums, sums_sq):
    """Mean and biased variance (C,) of the global batch, from per-worker counts (W,) and
    per-channel sums and sums of squares (W, C)."""
    means, variances = _worker_stats(counts, sums, sums_sq)
    global_mean, global_var, _ = union_statistics(counts, means, variances)
    return global_mean, global_var


def _from_totals(n, s, q):
    mean = s / n
    return mean, q / n - mean**2


def _column(counts):
    return np.asarray(counts, dtype=np.float64)[:, None]


def _mean_of_means(counts, sums, sums_sq):
    n = np.asarray(counts, dtype=np.float64).sum()
    mean = (sums / _column(counts)).mean(axis=0)
    return mean, sums_sq.sum(0) / n - mean**2


def _per_worker_moments(counts, sums, sums_sq):
    # E[x^2] - E[x]^2 with each worker's own mean: the counts-weighted within-worker variance
    n = _column(counts)
    within = (sums_sq - sums**2 / n).sum(0) / n.sum()
    return sums.sum(0) / n.sum(), within


def _mean_of_variances(counts, sums, sums_sq):
    n = _column(counts)
    mean = sums / n
    return sums.sum(0) / n.sum(), (sums_sq / n - mean**2).mean(axis=0)


def _by_workers(counts, sums, sums_sq):
    return _from_totals(len(counts), sums.sum(0), sums_sq.sum(0))


def _unbiased(counts, sums, sums_sq):
    n = np.asarray(counts, dtype=np.float64).sum()
    mean, var = _from_totals(n, sums.sum(0), sums_sq.sum(0))
    return mean, var * n / (n - 1)


_SYNC_MISTAKES = (
    Mistake("mean_of_means",
            "The global mean is the plain average of the workers' means. A worker with more "
            "values must weigh more: that average is right only when every worker has the same "
            "count (and an empty worker gives 0 / 0).",
            "Divide the total sum by the total count: sums.sum(0) / counts.sum().",
            _mean_of_means),
    Mistake("within_workers",
            "The variance is E[x^2] - E[x]^2 taken with each worker's own mean: that is the "
            "average spread of each shard around its own mean, and it leaves out how far the "
            "shards' means are from the global mean. BN on the global batch measures the spread "
            "around the global mean.",
            "Use the totals: sums_sq.sum(0) / N - mean ** 2 with the global mean and N = "
            "counts.sum().",
            _per_worker_moments),
    Mistake("mean_of_variances",
            "The variance is the average of the workers' variances. Averaging variances loses "
            "the spread between the workers' means, and weighs every worker equally whatever "
            "its count.",
            "Use the totals: sums_sq.sum(0) / N - mean ** 2 with the global mean and N = "
            "counts.sum().",
            _mean_of_variances),
    Mistake("divided_by_workers",
            "You divide the totals by the number of workers. The global batch has counts.sum() "
            "values per channel, not W.",
            "Divide by N = counts.sum().",
            _by_workers),
    Mistake("unbiased",
            "The variance is unbiased (divided by N - 1). BN normalizes with the biased variance "
            "of the global batch, as with one process.",
            "Divide by N = counts.sum(), not N - 1.",
            _unbiased),
)


def _sync_cases() -> list[Case]:
    """Shards drawn with different means per worker, so a missing between-worker spread shows:
    equal counts, unequal counts, and an empty worker (which synchronized BN allows)."""
    rng = np.random.default_rng(SEED + 7)
    cases = []
    for counts, c, label in [((8, 8), 3, "2 workers, 8 values each"),
                             ((2, 12, 40), 4, "3 workers, counts 2, 12, 40"),
                             ((6, 0, 10, 3), 3, "4 workers, one of them empty")]:
        shards = [rng.uniform(-3, 3, c) + rng.uniform(0.5, 2.0, c) * rng.normal(size=(n, c))
                  for n in counts]
        sums = np.stack([s.sum(0) for s in shards])
        sums_sq = np.stack([(s**2).sum(0) for s in shards])
        cases.append(Case(f"\"{label}, C={c}\"", (np.array(counts), sums, sums_sq)))
    return cases


@with_solution(_sync_reference)
def check_sync_statistics(fn: Callable[..., Any]) -> None:
    """Check ``fn(counts, sums, sums_sq) -> (mean, var)``: the per-channel mean and biased
    variance (C,) of the global batch of W data-parallel workers, from what synchronized BN
    all-reduces: each worker's number of values per channel ``counts`` (W,) and its per-channel
    ``sums`` and sums of squares ``sums_sq`` (W, C)::

        N    = counts.sum()
        mean = sums.sum(0) / N
        var  = sums_sq.sum(0) / N - mean ** 2

    Three float64 cases: equal counts, unequal counts, an empty worker. On success prints one
    deterministic line.

    Raises:
        ExerciseError: naming the mistake (an unweighted average of the workers' means or
            variances, each worker's own mean in E[x^2] - E[x]^2, dividing by the number of
            workers, the unbiased variance).
    """
    check_function(
        fn, _sync_reference, _sync_cases(), _SYNC_MISTAKES,
        name="check_sync_statistics", outputs=("mean", "var"),
        advice="the global batch is all the workers' values together: its mean and variance "
               "are totals over the workers divided by the total count.",
    )
