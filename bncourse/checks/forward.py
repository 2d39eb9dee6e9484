"""check_forward (notebook 01): the training-mode forward pass.

The oracle is :func:`bncourse.functional.batchnorm_forward`. The catalogue's variants build
their (buggy) normalization with :func:`_norm`, whose axes, variance, denominator and centring
can each be set wrong: they are the mistakes, not a second reference.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs, _ch, _label
from bncourse.checks.engine import (
    ATOL,
    RTOL,
    SEED,
    Case,
    ExerciseError,
    Hint,
    Mistake,
    _Stop,
    check_function,
    with_solution,
)
from bncourse.functional import batchnorm_forward

__all__ = ["check_forward"]


def _forward_reference(x, gamma, beta, eps=1e-5):
    return batchnorm_forward(x, gamma, beta, training=True, eps=eps)[0]


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


def _norm(x, eps, *, axes=None, ddof=0, mode="sqrt_var_eps", center=True):
    """(x - mean) / denominator with the statistics over ``axes`` (default: the right ones)."""
    axes = _reduce_axes(x.ndim) if axes is None else axes
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    denom = {"sqrt_var_eps": np.sqrt(var + eps), "sqrt_var": np.sqrt(var),
             "sqrt_var_plus_eps": np.sqrt(var) + eps, "var_eps": var + eps}[mode]
    return ((x - mu) if center else x) / denom


def _affine(x_hat, gamma, beta):
    return _ch(gamma, x_hat.ndim) * x_hat + _ch(beta, x_hat.ndim)


_FORWARD_MISTAKES = (
    Mistake("per_example",
            "The statistics are taken per example (over axis 1), not per channel.",
            "BN averages each channel over the batch: `x.mean(axis=0)` for (N, C) inputs, "
            "over axes (0, 2) for (N, C, L) ones, with keepdims=True.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, axes=(1,)), gamma, beta)),
    Mistake("per_example_all_axes",
            "The statistics are taken per example (over every axis but 0), not per channel.",
            "BN averages each channel over the batch: over every axis except 1, "
            "with keepdims=True.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, axes=tuple(range(1, x.ndim))), gamma, beta)),
    Mistake("global_stats",
            "One mean and variance for the whole array, instead of one per channel.",
            "Reduce over every axis except the channel axis 1: "
            "`x.mean(axis=(0, *range(2, x.ndim)), keepdims=True)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, axes=tuple(range(x.ndim))), gamma, beta)),
    Mistake("axis0_only",
            "For (N, C, L) inputs the statistics are taken over axis 0 only, so each position "
            "along L gets its own mean and variance; (N, C) inputs are right.",
            "Each channel has one mean and variance over all its N * L values: reduce over "
            "axes (0, 2), i.e. `axis=(0, *range(2, x.ndim))`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, axes=(0,)), gamma, beta)),
    Mistake("forgot_eps",
            "eps is missing: you divide by sqrt(var). It shows in the channel whose variance is "
            "tiny (~1e-4), and it would divide by zero for a constant channel.",
            "Divide by `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, mode="sqrt_var"), gamma, beta)),
    Mistake("eps_outside_sqrt",
            "eps is added outside the square root: you divide by sqrt(var) + eps.",
            "Add eps to the variance, then take the root: `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(
                _norm(x, eps, mode="sqrt_var_plus_eps"), gamma, beta)),
    Mistake("hardcoded_eps",
            "The `eps` argument is ignored: your function uses eps = 1e-5 whatever it is given "
            "(the cases with eps=0.001 are wrong).",
            "Use the `eps` parameter, not a constant.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, 1e-5), gamma, beta)),
    Mistake("divided_by_variance",
            "You divide by the variance, not by the standard deviation.",
            "Divide by the square root: `np.sqrt(var + eps)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, mode="var_eps"), gamma, beta)),
    Mistake("unbiased_variance",
            "The normalization uses the unbiased variance (divided by m - 1). BN normalizes "
            "with the biased one (divided by m); only the running variance is unbiased.",
            "Use `x.var(axis=..., keepdims=True)` (ddof=0, numpy's default), or "
            "`((x - mu) ** 2).mean(...)`.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, ddof=1), gamma, beta)),
    Mistake("not_centered",
            "The mean is not subtracted: you divide x itself by the standard deviation.",
            "x_hat = (x - mu) / np.sqrt(var + eps).",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps, center=False), gamma, beta)),
    Mistake("gamma_beta_swapped",
            "gamma and beta are swapped: you compute beta * x_hat + gamma.",
            "out = gamma * x_hat + beta: gamma scales, beta shifts.",
            lambda x, gamma, beta, eps=1e-5: _affine(_norm(x, eps), beta, gamma)),
    Mistake("no_affine",
            "gamma and beta are not applied: you return x_hat.",
            "Finish with out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _norm(x, eps)),
    Mistake("no_gamma",
            "gamma is not applied: you return x_hat + beta.",
            "out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _norm(x, eps) + _ch(beta, x.ndim)),
    Mistake("no_beta",
            "beta is not applied: you return gamma * x_hat.",
            "out = gamma * x_hat + beta.",
            lambda x, gamma, beta, eps=1e-5: _ch(gamma, x.ndim) * _norm(x, eps)),
)

_FORWARD_HINTS = (
    Hint("2d", "your function is right for (N, C) inputs but not for (N, C, L) ones. For "
               "(N, C, L) inputs take each channel's statistics over axes 0 and 2 (every axis "
               "but 1), and reshape gamma and beta to (1, C, 1)."),
)


def _forward_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases = []
    for shape, eps in [((16, 5), 1e-5), ((7, 3), 1e-3), ((40, 4), 1e-5),
                       ((6, 4, 9), 1e-5), ((3, 5, 7), 1e-3), ((10, 3, 4), 1e-5)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        cases.append(Case(_label(shape, eps=eps), (x, gamma, beta), {"eps": eps},
                          tags=frozenset({"2d"}) if len(shape) == 2 else frozenset(),
                          channel_notes={shape[1] // 2: _TINY}))
    return cases


CACHE_KEYS = ("xmu", "std", "inv_std", "x_hat", "gamma", "axes", "m", "training")
"""The cache entries the course's backward passes read (the notebook's and ``functional``'s)."""


def _out_of_out_and_cache(raw: Any) -> Any:
    """``out`` from ``(out, cache)``, after checking that the cache can feed the backward."""
    if not (isinstance(raw, tuple) and len(raw) == 2):
        what = (f"a tuple of {len(raw)} values" if isinstance(raw, tuple)
                else "only one value" if raw is not None else "None")
        raise _Stop(f"your function returned {what}; expected the pair `(out, cache)`: the "
                    f"backward passes read the intermediates from `cache`. End with "
                    f"`return out, cache`.")
    out, cache = raw
    if not isinstance(cache, dict):
        raise _Stop(f"`cache` is a {type(cache).__name__}; expected a dict of the forward's "
                    f"intermediates, e.g. `cache = dict(xmu=xmu, ...)`.")
    missing = [k for k in CACHE_KEYS if k not in cache]
    if missing:
        raise _Stop(f"`cache` lacks the key(s) {', '.join(repr(k) for k in missing)}, which the "
                    f"backward passes read; expected at least {', '.join(CACHE_KEYS)}.")
    return out


def _cache_problems(fn: Callable[..., Any], case: Case) -> list[str]:
    """Where the cache's entries differ from the reference forward's, on one case."""
    x, gamma, beta = case.args
    _, cache = fn(x.copy(), gamma.copy(), beta.copy(), **case.kwargs)
    _, want = _forward_solution(x, gamma, beta, **case.kwargs)
    problems = []
    for key in CACHE_KEYS:
        got, expected = cache[key], want[key]
        if isinstance(expected, (bool, tuple, int)):
            if not (isinstance(got, (bool, tuple, int, np.integer)) and got == expected):
                problems.append(f"- cache[{key!r}] is {got!r}; expected {expected!r}.")
            continue
        got = np.asarray(got)
        if got.shape != expected.shape:
            problems.append(f"- cache[{key!r}] has shape {got.shape}; expected {expected.shape} "
                            f"(per-channel values keep the broadcastable shape (1, C, 1, ...)).")
        elif not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            problems.append(f"- cache[{key!r}] holds other values than the forward's "
                            f"{key} (case {case.label}).")
    return problems


def _forward_solution(x, gamma, beta, eps=1e-5):
    return batchnorm_forward(x, gamma, beta, training=True, eps=eps)


@with_solution(_forward_solution)
def check_forward(fn: Callable[..., Any]) -> None:
    """Check a training-mode batch-norm forward pass against the reference.

    ``fn(x, gamma, beta, eps=1e-5)`` must return ``(out, cache)`` for ``x`` of shape (N, C) or
    (N, C, L): per-channel batch statistics over axis 0 and every spatial axis, biased variance,
    ``eps`` inside the square root, then ``gamma * x_hat + beta``; ``cache`` is a dict holding
    at least :data:`CACHE_KEYS` with the reference's values (per-channel arrays shaped
    (1, C, 1, ...)), since the backward passes read them. Six cases, float64, eps of 1e-5 and
    1e-3.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    report = io.StringIO()
    with contextlib.redirect_stdout(report):     # the success line waits for the cache check
        check_function(
            fn, _forward_reference, _forward_cases(), _FORWARD_MISTAKES, _FORWARD_HINTS,
            name="check_forward", outputs=("out",), unpack=_out_of_out_and_cache,
            advice="go through the steps one at a time: mu and var per channel over axis 0 "
                   "(and 2 for (N, C, L)), biased var, x_hat = (x - mu) / sqrt(var + eps), "
                   "out = gamma * x_hat + beta. Print x_hat.mean and x_hat.var per channel: "
                   "they should be ~0 and ~1.",
        )
    problems = _cache_problems(fn, _forward_cases()[3])       # an (N, C, L) case
    if problems:
        raise ExerciseError("\n".join(["check_forward: `out` is right, but the cache would "
                                       "mislead the backward pass:", *problems]),
                            ["cache_values"])
    print(report.getvalue(), end="")
