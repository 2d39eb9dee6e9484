"""check_backward and check_backward_compact (notebook 01): the training-mode backward pass.

The oracles are :func:`bncourse.functional.batchnorm_backward` (the staged exercise) and
:func:`bncourse.functional.batchnorm_backward_compact` (the closed form), on caches made by
:func:`bncourse.functional.batchnorm_forward`. The catalogue's variants build their (buggy)
``dx`` with :func:`_dx`, a closed form whose every ingredient can be set wrong: they are the
mistakes, not a second reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs, _ch, _label
from bncourse.checks.engine import (
    SEED,
    Case,
    ExerciseError,
    Hint,
    Mistake,
    _call,
    _fn_name,
    _Stop,
    check_function,
    with_solution,
)
from bncourse.functional import batchnorm_backward, batchnorm_backward_compact, batchnorm_forward

__all__ = ["check_backward", "check_backward_compact"]


def _dx(dout, cache, *, mean_term=1.0, var_term=1.0, m=None, axes=None, gamma=True, eps=True):
    """Closed-form dx with each ingredient adjustable, to build the mistakes from."""
    axes = cache["axes"] if axes is None else axes
    m = cache["m"] if m is None else m
    mean_term = m if mean_term == "m" else mean_term
    var_term = {"m": m, "unbiased": m / (m - 1)}.get(var_term, var_term)
    if eps:
        inv_std, x_hat = cache["inv_std"], cache["x_hat"]
    else:
        inv_std = 1.0 / np.sqrt(cache["var"])
        x_hat = cache["xmu"] * inv_std
    sum_dout = dout.sum(axis=axes, keepdims=True)
    sum_dout_xhat = (dout * x_hat).sum(axis=axes, keepdims=True)
    scale = cache["gamma"] * inv_std if gamma else inv_std
    return scale * (dout - mean_term * sum_dout / m - var_term * x_hat * sum_dout_xhat / m)


def _params(dout, cache, axes=None, keepdims=False, x_hat=None):
    axes = cache["axes"] if axes is None else axes
    x_hat = cache["x_hat"] if x_hat is None else x_hat
    return (dout * x_hat).sum(axis=axes, keepdims=keepdims), dout.sum(axis=axes, keepdims=keepdims)


def _with_dx(**kw):
    return lambda dout, cache: (_dx(dout, cache, **kw), *_params(dout, cache))


def _with_ref_dx(f):
    return lambda dout, cache: (f(batchnorm_backward(dout, cache)[0], cache),
                                *_params(dout, cache))


def _compact_with(dgamma, dbeta):
    """``dx`` of a compact backward that reuses its own (wrong) ``dgamma`` and ``dbeta``, beside
    the right parameter gradients: the mistake explains ``dx`` only, and the plain parameter
    mistake explains the parameter gradients, so each output is told its own cause."""
    def backward(dout, cache):
        dg, db = dgamma(dout, cache), dbeta(dout, cache)
        m, shape = cache["m"], cache["gamma"].shape
        dx = cache["gamma"] * cache["inv_std"] / m * (
            m * dout - db.reshape(shape) - cache["x_hat"] * dg.reshape(shape))
        return (dx, *_params(dout, cache))
    return backward


def _with_params(f):
    return lambda dout, cache: (batchnorm_backward(dout, cache)[0], *f(dout, cache))


_CLOSED_FORM = ("dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat)), means "
                "per channel over the reduced axes")

_BACKWARD_MISTAKES = (
    Mistake("dx_times_m",
            "`dx` is m times too large (m = the values per channel: N for (N, C) inputs, "
            "N * L for (N, C, L) ones): a 1/m is missing overall.",
            f"{_CLOSED_FORM}; or, with sums, gamma / (m * std) * (m * dout - sum(dout) - "
            "x_hat * sum(dout * x_hat)).",
            _with_ref_dx(lambda dx, cache: dx * cache["m"])),
    Mistake("dx_over_m",
            "`dx` is m times too small (m = the values per channel): an extra 1/m, often a "
            "mean where the formula has the upstream gradient itself.",
            _CLOSED_FORM + ".",
            _with_ref_dx(lambda dx, cache: dx / cache["m"])),
    Mistake("dx_sign",
            "`dx` has the wrong sign everywhere.",
            "Check the signs: d(x - mu)/dx = +1, d(x - mu)/dmu = -1, d(1/s)/ds = -1/s**2.",
            _with_ref_dx(lambda dx, cache: -dx)),
    Mistake("dx_no_mean_term",
            "`dx` is missing the path through the mean: mu = mean(x) depends on x, so every "
            "x[i] also moves mu.",
            "Add the mean term: dmu = -sum(dxmu) per channel, then dx = dxmu + dmu / m "
            "(closed form: subtract mean(dout)).",
            _with_dx(mean_term=0.0)),
    Mistake("dx_no_var_term",
            "`dx` is missing the path through the variance: var = mean((x - mu)**2) depends "
            "on x, so every x[i] also moves std.",
            "Back-propagate through inv_std, std and var to dsq = dvar / m, and add "
            "2 * xmu * dsq to dxmu (closed form: subtract x_hat * mean(dout * x_hat)).",
            _with_dx(var_term=0.0)),
    Mistake("mean_term_not_over_m",
            "In `dx` the mean term misses its 1/m: the derivative of mu = mean(x) with "
            "respect to each x[i] is 1/m.",
            "dx = dxmu + dmu / m (closed form: subtract mean(dout), not sum(dout)).",
            _with_dx(mean_term="m")),
    Mistake("mean_term_sign",
            "In `dx` the mean term has the wrong sign: xmu = x - mu, so dmu = -sum(dxmu).",
            "dmu = -dxmu.sum(axis=axes, keepdims=True).",
            _with_dx(mean_term=-1.0)),
    Mistake("var_term_not_over_m",
            "In `dx` the variance term misses its 1/m: var = mean(sq), so dsq = dvar / m.",
            "dsq = dvar / m, broadcast to the input's shape (closed form: x_hat * "
            "mean(dout * x_hat), a mean, not a sum).",
            _with_dx(var_term="m")),
    Mistake("var_term_sign",
            "In `dx` the variance term has the wrong sign: d(1/std)/dstd = -1/std**2.",
            "dstd = -dinv_std / std**2.",
            _with_dx(var_term=-1.0)),
    Mistake("var_term_twice",
            "In `dx` the variance term is twice too large: the 1/2 of d sqrt(v)/dv = "
            "1 / (2 sqrt(v)) is missing.",
            "dvar = 0.5 * dstd / std.",
            _with_dx(var_term=2.0)),
    Mistake("var_term_half",
            "In `dx` the variance term is half what it should be: the 2 of d(xmu**2)/dxmu = "
            "2 * xmu is missing.",
            "dxmu += 2 * xmu * dsq.",
            _with_dx(var_term=0.5)),
    Mistake("dx_no_gamma",
            "`dx` is missing the factor gamma: out = gamma * x_hat + beta, so "
            "dx_hat = gamma * dout.",
            "Start from dx_hat = dout * gamma (the cache holds gamma with shape (1, C, ...)).",
            _with_dx(gamma=False)),
    Mistake("dx_no_eps",
            "`dx` uses std = sqrt(var) without eps; it shows in the channel whose variance is "
            "tiny (~1e-4).",
            "Use the forward's std = sqrt(var + eps), e.g. `cache['std']` or "
            "`cache['inv_std']`, instead of recomputing it.",
            _with_dx(eps=False)),
    Mistake("m_is_n",
            "For (N, C, L) inputs `dx` divides by N instead of m = N * L, the number of "
            "values per channel; (N, C) inputs are right.",
            "Use m = x.size // C (or `cache['m']`), and sum over axes (0, 2).",
            lambda dout, cache: (_dx(dout, cache, m=dout.shape[0]), *_params(dout, cache))),
    Mistake("axis0_only",
            "For (N, C, L) inputs the sums run over axis 0 only (forgetting the spatial axis "
            "2), giving one value per (channel, position); (N, C) inputs are right.",
            "Sum over every axis except 1: `axis=(0, *range(2, dout.ndim))` (or "
            "`cache['axes']`), and use m = N * L.",
            lambda dout, cache: (_dx(dout, cache, axes=(0,), m=dout.shape[0]),
                                 *_params(dout, cache, axes=(0,)))),
    Mistake("dgamma_dbeta_swapped",
            "`dgamma` and `dbeta` are swapped.",
            "dbeta = sum(dout), dgamma = sum(dout * x_hat), per channel.",
            _with_params(lambda dout, cache: _params(dout, cache)[::-1])),
    Mistake("params_not_summed",
            "The parameter gradient is not summed over the batch: it has the input's shape. "
            "gamma and beta are shared by every example, so their gradients add up.",
            "Sum per channel over every axis except 1: `.sum(axis=(0, *range(2, dout.ndim)))`, "
            "shape (C,).",
            _with_params(lambda dout, cache: (dout * cache["x_hat"], dout))),
    Mistake("params_wrong_axis",
            "The parameter gradient is summed over the channel axis 1 instead of over the "
            "batch, giving one value per example.",
            "Sum over every axis except 1: `.sum(axis=(0, *range(2, dout.ndim)))`, shape (C,).",
            _with_params(lambda dout, cache: _params(dout, cache, axes=1))),
    Mistake("params_keepdims",
            "The parameter gradient keeps the reduced axes: shape (1, C) or (1, C, 1) "
            "instead of (C,).",
            "Reshape to (C,): `.reshape(-1)`, or sum with keepdims=False.",
            _with_params(lambda dout, cache: _params(dout, cache, keepdims=True))),
    Mistake("var_term_unbiased",
            "In `dx` the variance term uses the unbiased variance's 1/(m - 1): BN normalizes "
            "with the biased variance, var = mean(sq), so dsq = dvar / m.",
            "Divide by m everywhere in the backward pass; m - 1 belongs only to the running "
            "variance.",
            _with_dx(var_term="unbiased")),
    Mistake("dgamma_uses_xmu_in_dx",
            "`dx` reuses your `dgamma`, which uses x - mu instead of x_hat: fix `dgamma` and "
            "`dx` follows.",
            "dgamma = (dout * x_hat).sum(axis=axes).",
            _compact_with(lambda dout, cache: _params(dout, cache, x_hat=cache["xmu"])[0],
                          lambda dout, cache: _params(dout, cache)[1])),
    Mistake("dgamma_dbeta_swapped_in_dx",
            "`dx` reuses your `dgamma` and `dbeta`, which are swapped: fix the two sums and "
            "`dx` follows.",
            "dbeta = sum(dout), dgamma = sum(dout * x_hat), per channel.",
            _compact_with(lambda dout, cache: _params(dout, cache)[1],
                          lambda dout, cache: _params(dout, cache)[0])),
    Mistake("dgamma_uses_xmu",
            "`dgamma` uses x - mu instead of x_hat: out = gamma * x_hat + beta, so "
            "dgamma = sum(dout * x_hat).",
            "dgamma = (dout * x_hat).sum(axis=axes).",
            _with_params(lambda dout, cache: _params(dout, cache, x_hat=cache["xmu"]))),
)

_BACKWARD_HINTS = (
    Hint("ones", "your function is right when dout is all ones, but not for a random dout. "
                 "All-ones hides bugs: then the loss is sum(out) = gamma * sum(x_hat) + "
                 "m * beta per channel, and x_hat sums to zero whatever x is, so the loss does "
                 "not depend on x and the true dx is exactly 0 (in general dx sums to zero "
                 "per channel). Terms that vanish for dout = 1 -- dout - mean(dout), "
                 "sum(dout * x_hat) -- hide any factor or sign error in them. Always test "
                 "with a random dout."),
    Hint("2d", "your function is right for (N, C) inputs but not for (N, C, L) ones: sum "
               "over axes 0 and 2 (every axis but 1), and m = N * L values per channel."),
)


def _backward_cases(forward, name: str) -> list[Case]:
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for shape, eps, ones in [((16, 5), 1e-5, False), ((7, 3), 1e-3, False),
                             ((6, 4, 9), 1e-5, False), ((3, 5, 7), 1e-5, False),
                             ((8, 3), 1e-5, True), ((4, 3, 5), 1e-5, True)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        if ones:
            dout = np.ones(shape)
        else:  # per-channel offsets: a dout with non-zero mean, as a real loss gives
            dout = _ch(rng.uniform(-1, 1, shape[1]), len(shape)) + 1.5 * rng.standard_normal(shape)
        _, ref_cache = batchnorm_forward(x, gamma, beta, training=True, eps=eps)
        label = _label(shape, eps=eps)[:-1] + (", dout = all ones\"" if ones else "\"")
        cache = ref_cache
        if forward is not None:
            cache = _learner_cache(forward, Case(label, (x, gamma, beta), {"eps": eps}), name)
        tags = {"2d"} if len(shape) == 2 else set()
        cases.append(Case(label, (dout, cache), reference_args=(dout, ref_cache),
                          tags=frozenset(tags | ({"ones"} if ones else set())),
                          channel_notes={shape[1] // 2: _TINY}))
    return cases


def _learner_cache(forward, case: Case, name: str) -> Any:
    fname = _fn_name(forward)
    try:
        raw, _ = _call(forward, case, ["x", "gamma", "beta"], name, fname)
    except _Stop as stop:
        raise ExerciseError(f"{name}: your forward {stop}") from stop.__cause__
    if not (isinstance(raw, tuple) and len(raw) == 2):
        raise ExerciseError(f"{name}: your forward `{fname}` must return (out, cache) for the "
                            f"backward pass to use.")
    return raw[1]


def _check_backward(fn, forward, name: str, reference) -> None:
    check_function(
        fn, reference, _backward_cases(forward, name), _BACKWARD_MISTAKES,
        _BACKWARD_HINTS, name=name, outputs=("dx", "dgamma", "dbeta"),
        advice="check each node's local derivative against a numerical gradient "
               "(bncourse.gradcheck.numerical_gradient) with a random dout; dx of a correct "
               "backward sums to ~0 per channel. " + _CLOSED_FORM + ".",
    )


@with_solution(batchnorm_backward)
def check_backward(fn: Callable[..., Any], forward: Callable[..., Any] | None = None) -> None:
    """Check a training-mode batch-norm backward pass (the staged exercise) against the reference.

    ``fn(dout, cache)`` must return ``(dx, dgamma, dbeta)`` with the shapes of ``x``, (C,) and
    (C,). Six cases, (N, C) and (N, C, L), four random upstream gradients and two all-ones ones.

    Args:
        fn: the learner's backward.
        forward: makes the cache, called as ``forward(x, gamma, beta, eps=eps)`` and returning
            ``(out, cache)`` (e.g. the learner's own forward). Default: the reference
            :func:`bncourse.functional.batchnorm_forward` with ``training=True``, whose cache
            keys it documents.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    _check_backward(fn, forward, "check_backward", batchnorm_backward)


@with_solution(batchnorm_backward_compact)
def check_backward_compact(fn: Callable[..., Any],
                           forward: Callable[..., Any] | None = None) -> None:
    """Check the closed-form backward pass: the same contract and cases as :func:`check_backward`.

    The reference is :func:`bncourse.functional.batchnorm_backward_compact`, which agrees with
    :func:`bncourse.functional.batchnorm_backward` to rounding.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    _check_backward(fn, forward, "check_backward_compact", batchnorm_backward_compact)
