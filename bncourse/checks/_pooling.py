"""Batches rebuilt from their statistics, for the checkers that pool per-batch statistics.

The statistics of a union of batches depend only on each batch's count, mean and (biased)
variance. So the pooling checkers' references build *some* batch with exactly those statistics,
concatenate them, and let :func:`bncourse.functional.batchnorm_forward` compute the statistics of
the union, as BN on that one large batch would: no pooling formula is written here.
"""

from __future__ import annotations

import numpy as np

from bncourse.functional import batchnorm_forward


def values_with_statistics(mean: np.ndarray, var: np.ndarray, count: int) -> np.ndarray:
    """(count, C) values whose per-channel mean is ``mean`` (C,) and biased variance ``var`` (C,).

    Every channel gets the same zero-mean, unit-variance pattern (alternating -1 and +1, with a 0
    and a rescaling when ``count`` is odd), shifted and scaled. ``count`` 0 gives no rows, and 1
    the mean alone (one value has variance 0).
    """
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if count <= 1:
        return np.broadcast_to(mean, (count, mean.size)).copy()
    signs = np.where(np.arange(count - count % 2) % 2 == 0, -1.0, 1.0)
    if count % 2:  # odd: a 0, and the +-1 stretched to keep the variance at 1
        signs = np.concatenate([[0.0], signs * np.sqrt(count / (count - 1))])
    return mean[None, :] + np.sqrt(np.maximum(var, 0.0))[None, :] * signs[:, None]


def union_statistics(counts, means, variances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, biased variance and the running (unbiased) variance, each (C,), of the union of
    batches with the given ``counts`` (K,), ``means`` (K, C) and biased ``variances`` (K, C),
    from a training-mode :func:`~bncourse.functional.batchnorm_forward` over the rebuilt union
    (the unbiased one is what its running-statistics update stores, with momentum 1)."""
    union = np.concatenate([values_with_statistics(m, v, int(n))
                            for n, m, v in zip(counts, means, variances, strict=True)])
    running_mean, running_var = np.zeros(union.shape[1]), np.ones(union.shape[1])
    _, cache = batchnorm_forward(union, None, None, training=True, running_mean=running_mean,
                                 running_var=running_var, momentum=1.0)
    return cache["mu"].reshape(-1), cache["var"].reshape(-1), running_var
