"""check_rms_norm (notebook 08): RMSNorm's forward pass (Zhang & Sennrich 2019), in numpy.

The oracle is the package's :class:`bncourse.nn.RMSNorm` (equal to ``torch.nn.RMSNorm``), run
in float64. The catalogue's variants divide by the wrong quantity or over the wrong axis, each
written as the learner would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.nn import RMSNorm

__all__ = ["check_rms_norm"]


@torch.no_grad()
def _rms_norm_reference(x, weight, eps=1e-6):
    norm = RMSNorm(x.shape[-1], eps=eps).double()
    norm.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float64)))
    return norm(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _divide_by(denominator):
    """``x / denominator(x, eps) * weight``: the variants differ only in what they divide by."""
    def fn(x, weight, eps=1e-6):
        return x / denominator(x, eps) * weight
    return fn


def _ms(x, axis=-1):
    return (x ** 2).mean(axis=axis, keepdims=True)


_RMS = "each token's root mean square over its last axis, sqrt(mean(x ** 2, axis=-1) + eps)"

_RMS_MISTAKES = (
    Mistake("centred",
            "The tokens are centred first (x - mean): that is layer norm. RMSNorm divides by "
            "the root mean square and never subtracts the mean, which is what makes it cheaper.",
            "Drop the centring: out = x / " + _RMS + " * weight.",
            lambda x, weight, eps=1e-6: (x - x.mean(-1, keepdims=True)) / np.sqrt(
                x.var(-1, keepdims=True) + eps) * weight),
    Mistake("std_not_rms",
            "You divide by the standard deviation (the spread around the mean) instead of the "
            "root mean square (the spread around zero): for a token with a large mean the two "
            "differ.",
            "Use mean(x ** 2), not var(x): out = x / " + _RMS + " * weight.",
            _divide_by(lambda x, eps: np.sqrt(x.var(-1, keepdims=True) + eps))),
    Mistake("eps_outside_root",
            "eps is added after the square root, sqrt(mean(x ** 2)) + eps, instead of inside; "
            "it shows in the token with a tiny root mean square.",
            "np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps).",
            _divide_by(lambda x, eps: np.sqrt(_ms(x)) + eps)),
    Mistake("no_eps",
            "eps is missing; it shows in the token with a tiny root mean square.",
            "Add eps to the mean square, inside the root.",
            _divide_by(lambda x, eps: np.sqrt(_ms(x)))),
    Mistake("no_sqrt",
            "You divide by the mean square, without the square root: the output then scales as "
            "1/x instead of being scale-free.",
            "Take the square root: " + _RMS + ".",
            _divide_by(lambda x, eps: _ms(x) + eps)),
    Mistake("l2_norm",
            "You divide by the Euclidean norm (a sum of squares, not a mean): the output is "
            "sqrt(D) times too small.",
            "Average the squares over the last axis (mean, not sum).",
            _divide_by(lambda x, eps: np.sqrt((x ** 2).sum(-1, keepdims=True) + eps))),
    Mistake("batch_axis",
            "The mean square is over the batch (axis 0), one per feature: the statistics must "
            "be each token's own, over its last axis, so that a token never depends on its "
            "batch mates.",
            "Reduce over axis=-1, keepdims=True.",
            _divide_by(lambda x, eps: np.sqrt(_ms(x, axis=0) + eps))),
    Mistake("no_weight",
            "The learned scale `weight` is not applied.",
            "Multiply by weight (shape (D,), it broadcasts along the last axis).",
            lambda x, weight, eps=1e-6: x / np.sqrt(_ms(x) + eps)),
)


def _rms_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 82)
    cases = []
    for shape, eps in [((6, 8), 1e-6), ((5, 7), 1e-5), ((2, 4, 6), 1e-6)]:
        d = shape[-1]
        tokens = shape[:-1]
        # tokens with a non-zero mean (RMS differs from std) and one with a tiny RMS (~1e-3)
        x = (rng.uniform(-2, 2, (*tokens, 1)) + rng.uniform(0.5, 3.0, (*tokens, 1))
             * rng.standard_normal(shape))
        x.reshape(-1, d)[1] = 1e-3 * rng.standard_normal(d)
        weight = rng.uniform(0.5, 2.0, d)
        dims = "(N, D)" if len(shape) == 2 else "(N, L, D)"
        cases.append(Case(f"\"x of shape {dims} = {shape}, eps={eps:g}\"", (x, weight),
                          {"eps": eps}))
    return cases


@with_solution(_rms_norm_reference)
def check_rms_norm(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, weight, eps=1e-6) -> out``: RMSNorm over the last axis, as
    ``torch.nn.RMSNorm(D, eps=eps)``: ``out = x / sqrt(mean(x ** 2) + eps) * weight``, the mean
    over each token's D features.

    ``x`` is an (N, D) or (N, L, D) float64 array, ``weight`` (D,); ``out`` has the shape of
    ``x``. Three cases with tokens of non-zero mean and one token of tiny root mean square. On
    success prints one line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _rms_norm_reference, _rms_cases(), _RMS_MISTAKES, name="check_rms_norm",
        advice="divide each token by " + _RMS + ", then multiply by weight.",
    )
