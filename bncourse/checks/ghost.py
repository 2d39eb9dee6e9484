"""check_ghost_batchnorm (notebook 04): ghost batch normalization's training forward in numpy.

The reference splits the batch as :class:`bncourse.nn.GhostBatchNorm` does (consecutive chunks of
``ghost_batch_size`` examples along axis 0, the last one possibly smaller) and normalizes each
chunk with :func:`bncourse.functional.batchnorm_forward`. The catalogue's variants normalize other
groups of rows (:func:`_normalize_groups`): the whole batch, strided rows, rows at the same
position of every ghost batch, ``np.array_split``'s balanced chunks, a short last chunk merged
into the one before; or use the unbiased variance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs, _ch, _label
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import batchnorm_forward

__all__ = ["check_ghost_batchnorm"]


def _ghost_reference(x, gamma, beta, ghost_batch_size, eps=1e-5):
    """Training-mode ghost BN: each consecutive chunk of ``ghost_batch_size`` rows (the last may
    be smaller) normalized by BN with its own statistics, as :class:`bncourse.nn.GhostBatchNorm`
    splits the batch."""
    chunks = [x[start:start + ghost_batch_size] for start in range(0, x.shape[0], ghost_batch_size)]
    return np.concatenate([batchnorm_forward(chunk, gamma, beta, training=True, eps=eps)[0]
                           for chunk in chunks])


def _normalize_groups(x, gamma, beta, groups: Sequence[np.ndarray], eps, ddof=0):
    """BN of each group of rows (index arrays covering 0..N-1) with the group's own mean and
    variance (``ddof=1``: unbiased); a one-row group has variance 0."""
    axes = (0, *range(2, x.ndim))
    out = np.empty_like(x)
    for rows in groups:
        part = x[rows]
        mu = part.mean(axis=axes, keepdims=True)
        var = (part.var(axis=axes, ddof=ddof, keepdims=True) if part.size // x.shape[1] > ddof
               else np.zeros_like(mu))
        out[rows] = _ch(gamma, x.ndim) * (part - mu) / np.sqrt(var + eps) + _ch(beta, x.ndim)
    return out


def _consecutive(n, g):
    return [np.arange(s, min(s + g, n)) for s in range(0, n, g)]


def _group_variant(groups: Callable[[int, int], list[np.ndarray]], ddof=0):
    def variant(x, gamma, beta, ghost_batch_size, eps=1e-5):
        return _normalize_groups(x, gamma, beta, groups(x.shape[0], ghost_batch_size), eps, ddof)
    return variant


def _merged_remainder(n, g):
    chunks = _consecutive(n, g)
    if len(chunks) > 1 and len(chunks[-1]) < g:
        chunks[-2:] = [np.concatenate(chunks[-2:])]
    return chunks


_GHOST_MISTAKES = (
    Mistake("whole_batch",
            "Every example is normalized with the statistics of the whole batch: that is plain "
            "BN. Ghost BN gives each ghost batch its own mean and variance, and that is where "
            "its extra noise comes from.",
            "Cut x into ghost batches first and compute the mean and variance inside each one.",
            _group_variant(lambda n, g: [np.arange(n)])),
    Mistake("strided",
            "Your ghost batches are strided (rows k, k + n_ghosts, k + 2 n_ghosts, ...), e.g. "
            "x[k::n_ghosts]. Ghost batches are consecutive rows: the first ghost_batch_size "
            "examples, then the next ones, as torch's x.split(ghost_batch_size) cuts them.",
            "Take x[start:start + ghost_batch_size] for start = 0, ghost_batch_size, ...",
            _group_variant(lambda n, g: [np.arange(k, n, -(-n // g)) for k in range(-(-n // g))])),
    Mistake("wrong_axis",
            "You normalize over the wrong axis of the reshaped batch: each group holds the rows "
            "at the same position of every ghost batch (rows j, j + ghost_batch_size, ...), "
            "which is what x.reshape(n_ghosts, ghost_batch_size, ...) normalized over axis 0 "
            "gives. The statistics of a ghost batch are over its own ghost_batch_size rows.",
            "After x.reshape(n_ghosts, ghost_batch_size, C, ...), reduce over axis 1 (and the "
            "spatial axes), not axis 0.",
            _group_variant(lambda n, g: [np.arange(j, n, g) for j in range(min(g, n))])),
    Mistake("array_split",
            "np.array_split spreads the remainder over several chunks (22 rows in 4 parts: 6, "
            "6, 5, 5). Ghost BN, like torch's split, makes every ghost batch ghost_batch_size "
            "rows and leaves the remainder to a shorter last one (6, 6, 6, 4).",
            "Slice x[start:start + ghost_batch_size] for start in range(0, N, ghost_batch_size).",
            _group_variant(lambda n, g: np.array_split(np.arange(n), -(-n // g)))),
    Mistake("merged_remainder",
            "The short last chunk is merged into the ghost batch before it. Ghost BN keeps it "
            "as a ghost batch of its own, smaller than the others.",
            "Normalize the last N % ghost_batch_size rows as their own ghost batch.",
            _group_variant(_merged_remainder)),
    Mistake("unbiased_var",
            "Each ghost batch is normalized with its unbiased variance (divided by m - 1). BN "
            "normalizes with the biased one (divided by m), in every ghost batch too.",
            "Use np.var(..., ddof=0) (numpy's default), or ((chunk - mu) ** 2).mean(...).",
            _group_variant(_consecutive, ddof=1)),
)


def _ghost_cases() -> list[Case]:
    """Batches with a per-channel mean and scale and a tiny-variance channel (C // 2), whose
    halves differ (x[: N // 2] shifted), so every grouping of the rows gives other statistics."""
    rng = np.random.default_rng(SEED + 14)
    cases = []
    for shape, g, eps in [((24, 5), 6, 1e-5), ((22, 4), 6, 1e-5), ((12, 3, 5), 4, 1e-3),
                          ((8, 3), 10, 1e-5)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        x[: shape[0] // 2] += _ch(1.5 * rng.uniform(0.5, 1.0, shape[1]), x.ndim)
        cases.append(Case(_label(shape, ghost_batch_size=g, eps=eps), (x, gamma, beta, g),
                          {"eps": eps}, channel_notes={shape[1] // 2: _TINY}))
    return cases


@with_solution(_ghost_reference)
def check_ghost_batchnorm(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, gamma, beta, ghost_batch_size, eps=1e-5) -> out``: training-mode ghost BN
    (Hoffer et al. 2017) of ``x`` (N, C) or (N, C, L), as :class:`bncourse.nn.GhostBatchNorm`
    computes it: ``x`` is cut along axis 0 into consecutive ghost batches of
    ``ghost_batch_size`` examples (the last one smaller when ``ghost_batch_size`` does not
    divide N; a single one when ``ghost_batch_size >= N``), and each is batch-normalized with
    its own per-channel mean and biased variance, then scaled by ``gamma`` and shifted by
    ``beta`` (C,). ``out`` has the shape of ``x``.

    Four float64 cases: N a multiple of the ghost size, N not a multiple (22 = 6 + 6 + 6 + 4),
    an (N, C, L) input, and a ghost size larger than the batch. On success prints one
    deterministic line.

    Raises:
        ExerciseError: naming the mistake (whole-batch statistics, strided ghost batches, the
            wrong reduction axis, np.array_split's chunks, the remainder merged, the unbiased
            variance).
    """
    check_function(
        fn, _ghost_reference, _ghost_cases(), _GHOST_MISTAKES, name="check_ghost_batchnorm",
        advice="check one ghost batch alone: x[:ghost_batch_size] through your BN forward of "
               "notebook 01 must give the first ghost_batch_size rows of your output.",
    )
