"""check_fold_linear_bn (notebook 06): folding an eval-mode BN into the Linear layer before it.

The oracle is eval-mode :func:`bncourse.functional.batchnorm_forward`: the folded layer is the
affine map that BN applied to the layer's outputs is, read off on the inputs 0 and e_j. The
catalogue's variants compute the fold's formula with one bug each (:func:`_fold_variant`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import batchnorm_forward

__all__ = ["check_fold_linear_bn"]


def _fold_reference(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """The Linear layer equal to eval-mode BN after ``x -> weight @ x + bias``.

    ``BN(W x + b) = s * (W x + b - running_mean) + beta`` is affine in x: its linear part, BN
    with a zero running mean and a zero beta, maps each column of W to the folded weight's, and
    its value at x = 0, BN of the bias, is the folded bias. Equal, to rounding, to ``W' = s W``
    (row c scaled by s_c) and ``b' = s (b - running_mean) + beta``, ``s = gamma /
    sqrt(running_var + eps)``.
    """
    def bn(z, mean, shift):  # eval-mode BN of the rows of z, each one layer output
        return batchnorm_forward(z, gamma, shift, training=False, running_mean=mean,
                                 running_var=running_var, eps=eps)[0]

    zeros = np.zeros_like(running_mean)
    return bn(weight.T, zeros, zeros).T, bn(bias[None, :], running_mean, beta)[0]


def _fold_variant(*, scale=None, rows=True, bias_fn=None):
    """The reference with one bug: ``scale(gamma, var, eps) -> s``, ``rows=False`` scales the
    columns (input features), ``bias_fn(s, b, beta, mean) -> b'``."""
    def fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = (gamma / np.sqrt(running_var + eps) if scale is None
             else scale(gamma, running_var, eps))
        w = weight * s[:, None] if rows else weight * s[None, :]
        b = s * (bias - running_mean) + beta if bias_fn is None else bias_fn(s, bias, beta,
                                                                            running_mean)
        return w, b
    return fn


_FOLD_MISTAKES = (
    Mistake("forgot_eps",
            "The scale is gamma / sqrt(running_var): eps is missing. Eval-mode BN divides by "
            "sqrt(running_var + eps), and for a channel with a small running variance the "
            "difference is large.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g / np.sqrt(v))),
    Mistake("std_not_inverse",
            "The scale multiplies by the standard deviation, gamma * sqrt(running_var + eps); "
            "BN divides by it.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g * np.sqrt(v + e))),
    Mistake("variance_not_std",
            "The scale divides by the variance, gamma / (running_var + eps): the square root is "
            "missing.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: g / (v + e))),
    Mistake("forgot_gamma",
            "The scale is 1 / sqrt(running_var + eps): gamma is missing.",
            "s = gamma / np.sqrt(running_var + eps).",
            _fold_variant(scale=lambda g, v, e: 1.0 / np.sqrt(v + e))),
    Mistake("scaled_input_features",
            "The weight's columns (input features) are scaled: W * s[None, :]. BN acts on the "
            "layer's outputs, so row c of W (output feature c) gets s_c. (Every case has a square "
            "W, so both broadcast; with a non-square W this bug raises a shape error instead.)",
            "W_folded = weight * s[:, None] (for a Conv weight: s.reshape(-1, 1, 1)).",
            _fold_variant(rows=False)),
    Mistake("forgot_running_mean",
            "The bias leaves out the running mean: s * b + beta. BN subtracts running_mean "
            "before scaling.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * b + beta)),
    Mistake("ignored_layer_bias",
            "The bias ignores the Linear layer's own bias: beta - s * running_mean. In eval "
            "mode the bias is not cancelled (the running mean is fixed), so it must be folded "
            "in too.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: beta - s * m)),
    Mistake("unscaled_layer_bias",
            "The layer's own bias is added unscaled: b + beta - s * running_mean. It passes "
            "through BN's scale like the rest of the layer's output.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: b + beta - s * m)),
    Mistake("mean_sign",
            "The running mean is added, s * (bias + running_mean) + beta; BN subtracts it.",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * (b + m) + beta)),
    Mistake("forgot_beta",
            "The bias leaves out beta: s * (bias - running_mean).",
            "b_folded = s * (bias - running_mean) + beta.",
            _fold_variant(bias_fn=lambda s, b, beta, m: s * (b - m))),
)


def _fold_cases() -> list[Case]:
    """Square weights (so a row/column mix-up broadcasts and can be named); running means far
    from 0, gamma and beta far from 1 and 0, non-zero layer biases; channel C // 2 has a tiny
    running variance (~1e-4), where eps changes the scale by ~5%."""
    rng = np.random.default_rng(SEED + 6)
    cases = []
    for c, eps in [(4, 1e-5), (6, 1e-3), (5, 1e-5)]:
        var = rng.uniform(0.5, 4.0, c)
        var[c // 2] = 1e-4
        args = (rng.normal(size=(c, c)), rng.uniform(-2, 2, c), rng.uniform(1.5, 3.0, c),
                rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c), rng.uniform(-3, 3, c), var)
        cases.append(Case(f"\"Linear({c}, {c}) + BatchNorm1d({c}), eps={eps:g}\"", args,
                          {"eps": eps}, channel_notes={c // 2: _TINY}))
    return cases


@with_solution(_fold_reference)
def check_fold_linear_bn(fn: Callable[..., Any]) -> None:
    """Check ``fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5)``: the weight
    (C_out, C_in) and bias (C_out,) of one Linear layer with an eval-mode BN folded into it::

        s = gamma / sqrt(running_var + eps)
        W_folded = s[:, None] * weight          # row c (output feature c) scaled by s_c
        b_folded = s * (bias - running_mean) + beta

    ``fn`` must return ``(W_folded, b_folded)`` as numpy arrays and leave its inputs unchanged.
    Three float64 cases with square weights and a channel of tiny running variance.

    Raises:
        ExerciseError: naming the mistake (eps forgotten, std instead of 1/std, the running
            mean or the layer's bias left out of the bias, columns scaled instead of rows, ...).
    """
    check_function(
        fn, _fold_reference, _fold_cases(), _FOLD_MISTAKES,
        name="check_fold_linear_bn", outputs=("W_folded", "b_folded"),
        advice="write eval-mode BN of z = W x + b as s * (z - running_mean) + beta with "
               "s = gamma / sqrt(running_var + eps), then expand: the x-term is the new weight, "
               "the rest the new bias.",
    )
