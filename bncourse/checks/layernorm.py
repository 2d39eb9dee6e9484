"""check_layernorm_backward (notebook 08): the backward pass of layer normalization, in numpy.

The oracle is :func:`bncourse.functional.layernorm_backward` on the cache of
:func:`bncourse.functional.layernorm_forward` (``normalized_ndim=1``: each token or example is
standardized over its last axis). The catalogue's variants recompute the forward and apply the
closed form with one ingredient wrong each (:func:`_ln_variant`): they are the mistakes, not a
second reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Hint, Mistake, check_function, with_solution
from bncourse.functional import layernorm_backward, layernorm_forward

__all__ = ["check_layernorm_backward"]


def _layernorm_backward_reference(dout, x, gamma, eps=1e-5):
    # bncourse.functional's layer norm over the last axis; beta does not enter the gradients
    _, cache = layernorm_forward(x, gamma, None, normalized_ndim=1, eps=eps)
    return layernorm_backward(dout, cache)


def _ln_variant(*, batch_axes=False, mean_term=1.0, var_term=1.0, ddof=0, use_eps=True,
                use_gamma=True, param_axes="batch", swap=False):
    """The closed-form backward with one ingredient set wrong (the defaults are right).

    ``batch_axes``: statistics over every axis but the last (batch norm's grouping);
    ``mean_term="D"``: the mean term summed instead of averaged;
    ``param_axes``: ``"batch"`` (right), ``"feature"`` (over the last axis) or ``"none"``."""
    def backward(dout, x, gamma, eps=1e-5):
        last = (x.ndim - 1,)
        rest = tuple(range(x.ndim - 1))
        stat = rest if batch_axes else last
        xmu = x - x.mean(axis=stat, keepdims=True)
        var = (xmu ** 2).sum(axis=stat, keepdims=True) / (
            np.prod([x.shape[a] for a in stat]) - ddof)
        inv_std = 1.0 / np.sqrt(var + (eps if use_eps else 0.0))
        x_hat = xmu * inv_std
        dx_hat = dout * gamma if use_gamma else dout
        mt = x.shape[-1] if mean_term == "D" else mean_term
        dx = inv_std * (dx_hat - mt * dx_hat.mean(axis=stat, keepdims=True)
                        - var_term * x_hat * (dx_hat * x_hat).mean(axis=stat, keepdims=True))
        if param_axes == "batch":
            dgamma, dbeta = (dout * x_hat).sum(axis=rest), dout.sum(axis=rest)
        elif param_axes == "feature":
            dgamma, dbeta = (dout * x_hat).sum(axis=last), dout.sum(axis=last)
        else:
            dgamma, dbeta = dout * x_hat, dout
        return (dx, dbeta, dgamma) if swap else (dx, dgamma, dbeta)
    return backward


_CLOSED_FORM = ("with g = dout * gamma, dx = (g - mean(g) - x_hat * mean(g * x_hat)) / "
                "sqrt(var + eps), the means over each token's last axis")

_LAYERNORM_MISTAKES = (
    Mistake("batch_axis",
            "The statistics run over the batch (every axis but the last), one per feature: that "
            "is batch norm. Layer norm standardizes each token (each example of an (N, D) "
            "input) over its own D features.",
            "Take the mean and variance over the last axis, keepdims=True (axis=-1), and use "
            "means over that axis in dx too.",
            _ln_variant(batch_axes=True)),
    Mistake("no_mean_term",
            "`dx` is missing the path through the mean: each token's mean depends on all its D "
            "features, so every feature also moves the mean.",
            "Subtract the mean of g = dout * gamma over the last axis: " + _CLOSED_FORM + ".",
            _ln_variant(mean_term=0.0)),
    Mistake("no_var_term",
            "`dx` is missing the path through the variance: each token's variance depends on "
            "all its features.",
            "Subtract x_hat * mean(g * x_hat) over the last axis: " + _CLOSED_FORM + ".",
            _ln_variant(var_term=0.0)),
    Mistake("mean_term_sum",
            "In `dx` the mean term is a sum over the features where it should be a mean: the "
            "derivative of the mean of D values with respect to each is 1/D.",
            "Use g.mean(axis=-1, keepdims=True), not .sum.",
            _ln_variant(mean_term="D")),
    Mistake("unbiased",
            "The variance is the unbiased one (divided by D - 1). Layer norm, like BN and "
            "torch.nn.LayerNorm, normalizes with the biased variance (divided by D).",
            "var = ((x - mean) ** 2).mean(axis=-1, keepdims=True), or np.var with ddof=0.",
            _ln_variant(ddof=1)),
    Mistake("no_eps",
            "`dx` uses sqrt(var) without eps; it shows in the token whose variance is tiny "
            "(~1e-4).",
            "Divide by np.sqrt(var + eps), as the forward does.",
            _ln_variant(use_eps=False)),
    Mistake("no_gamma",
            "`dx` is missing the factor gamma: out = gamma * x_hat + beta, so the gradient "
            "reaching x_hat is dout * gamma.",
            "Start from g = dout * gamma (gamma broadcasts along the last axis).",
            _ln_variant(use_gamma=False)),
    Mistake("params_over_features",
            "`dgamma` and `dbeta` are summed over the features (the last axis), one value per "
            "token. gamma and beta have one entry per feature, shared by every token: their "
            "gradients add up over the tokens.",
            "Sum over every axis but the last: `.sum(axis=tuple(range(dout.ndim - 1)))`, shape "
            "(D,).",
            _ln_variant(param_axes="feature")),
    Mistake("params_not_summed",
            "`dgamma` and `dbeta` are not summed: they have the input's shape. gamma and beta "
            "are shared by every token, so their gradients add up.",
            "Sum over every axis but the last, shape (D,).",
            _ln_variant(param_axes="none")),
    Mistake("dgamma_dbeta_swapped",
            "`dgamma` and `dbeta` are swapped.",
            "dgamma = sum(dout * x_hat), dbeta = sum(dout), over every axis but the last.",
            _ln_variant(swap=True)),
)
_LAYERNORM_HINTS = (
    Hint("2d", "your function is right for (N, D) inputs but not for (N, L, D) ones: the "
               "statistics are over the last axis only, and dgamma, dbeta sum over every other "
               "axis (N and L)."),
)

_TINY_TOKEN = "the token with a tiny variance (~1e-4), where eps matters"


def _layernorm_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 80)
    cases = []
    for shape, eps in [((8, 6), 1e-5), ((5, 7), 1e-3), ((3, 4, 5), 1e-5), ((2, 3, 6), 1e-5)]:
        d = shape[-1]
        # offsets per token and per feature, scales per token, one token of tiny variance: the
        # batch-axis statistics differ from the token's, and eps shows
        tokens = shape[:-1]
        scale = rng.uniform(0.5, 3.0, tokens)
        scale.reshape(-1)[1] = 1e-2
        x = (rng.uniform(-3, 3, (*tokens, 1)) + rng.uniform(-1, 1, d)
             + scale[..., None] * rng.standard_normal(shape))
        gamma = rng.uniform(1.5, 3.0, d)
        dout = rng.uniform(-1, 1, d) + 1.5 * rng.standard_normal(shape)
        dims = "(N, D)" if len(shape) == 2 else "(N, L, D)"
        cases.append(Case(f"\"x of shape {dims} = {shape}, eps={eps:g}\"", (dout, x, gamma),
                          {"eps": eps}, tags=frozenset({"2d"} if len(shape) == 2 else ())))
    return cases


@with_solution(_layernorm_backward_reference)
def check_layernorm_backward(fn: Callable[..., Any]) -> None:
    """Check ``fn(dout, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)``: the backward pass of
    layer norm over the last axis, ``out = gamma * (x - mean) / sqrt(var + eps) + beta`` with
    the mean and biased variance of each token's D features.

    ``x`` and ``dout`` are (N, D) or (N, L, D) float64 arrays, ``gamma`` is (D,); ``dx`` has the
    shape of ``x``, ``dgamma`` and ``dbeta`` are (D,). Four cases, two of each rank, with
    random upstream gradients and one token of tiny variance. On success prints one line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _layernorm_backward_reference, _layernorm_cases(), _LAYERNORM_MISTAKES,
        _LAYERNORM_HINTS, name="check_layernorm_backward", outputs=("dx", "dgamma", "dbeta"),
        advice="compare with a numerical gradient (bncourse.gradcheck.numerical_gradient) on "
               "one token; dx of a correct backward sums to ~0 over each token's features. "
               + _CLOSED_FORM + ".",
    )
