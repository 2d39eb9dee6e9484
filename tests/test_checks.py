"""The exercise checkers: the reference passes, and each known mistake is named with its fix.

The buggy learner functions here are written the way a learner would write them, independently
of the catalogue in ``bncourse.checks``, so a test fails if a catalogue entry drifts from the
mistake it claims to describe.
"""

import functools
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
from scipy import stats

from bncourse import checks
from bncourse.checks import (
    Case,
    ExerciseError,
    Mistake,
    check_backward,
    check_backward_compact,
    check_batchnorm_module,
    check_forward,
    check_function,
    check_running_update,
)
from bncourse.checks.backward import _BACKWARD_MISTAKES
from bncourse.checks.folding import _FOLD_MISTAKES, _fold_cases, _fold_reference
from bncourse.checks.forward import _FORWARD_MISTAKES
from bncourse.checks.ics import _ICS_MISTAKES
from bncourse.checks.module import _MODULE_MISTAKES, _variant_module
from bncourse.checks.renorm import _RENORM_MISTAKES
from bncourse.checks.running import _RUNNING_MISTAKES, _running_cases, _running_reference
from bncourse.checks.verdict import _interval_cases, _interval_mistakes, _paired_interval_reference
from bncourse.functional import batchnorm_backward, batchnorm_backward_compact, batchnorm_forward
from bncourse.nn import BatchNorm
from bncourse.verdict import estimate

# ---------------------------------------------------------------------------------------------
# Learner-style building blocks
# ---------------------------------------------------------------------------------------------


def _axes(x):
    return (0, *range(2, x.ndim))


def _c(v, x):
    return v.reshape(1, -1, *[1] * (x.ndim - 2))


def _forward(x, gamma, beta, eps=1e-5):
    """A correct learner forward."""
    mu = x.mean(axis=_axes(x), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=_axes(x), keepdims=True)
    return _c(gamma, x) * (x - mu) / np.sqrt(var + eps) + _c(beta, x)


def _with_cache(forward):
    """``forward`` returning ``(out, cache)``: the reference cache beside the learner's ``out``
    (check_forward checks the cache separately)."""
    @functools.wraps(forward)
    def out_and_cache(x, gamma, beta, eps=1e-5):
        out = forward(x, gamma, beta, eps)
        return out, batchnorm_forward(x, gamma, beta, training=True, eps=eps)[1]
    return out_and_cache


def _stats(x):
    mu = x.mean(axis=_axes(x), keepdims=True)
    return mu, x.var(axis=_axes(x), keepdims=True)


def _diagnosis(checker, fn, *args):
    with pytest.raises(ExerciseError) as info:
        checker(fn, *args)
    return info.value


# ---------------------------------------------------------------------------------------------
# The references pass
# ---------------------------------------------------------------------------------------------


def test_reference_forward_passes_with_one_deterministic_line(capsys):
    check_forward(lambda x, gamma, beta, eps=1e-5:
                  batchnorm_forward(x, gamma, beta, training=True, eps=eps))
    assert capsys.readouterr().out == "check_forward: all 6 cases match the reference.\n"


def test_forward_returning_only_out_is_asked_for_the_cache():
    msg = str(_diagnosis(check_forward, lambda x, gamma, beta, eps=1e-5:
                         batchnorm_forward(x, gamma, beta, training=True, eps=eps)[0]))
    assert "returned only one value; expected the pair `(out, cache)`" in msg


def test_forward_cache_must_be_a_dict():
    msg = str(_diagnosis(check_forward, lambda x, gamma, beta, eps=1e-5: (_forward(x, gamma, beta,
                                                                                  eps), [])))
    assert "`cache` is a list; expected a dict" in msg


def test_forward_cache_without_the_keys_the_backward_reads_names_them():
    def forward(x, gamma, beta, eps=1e-5):
        out, cache = batchnorm_forward(x, gamma, beta, training=True, eps=eps)
        del cache["inv_std"], cache["x_hat"]
        return out, cache

    assert "`cache` lacks the key(s) 'inv_std', 'x_hat'" in str(_diagnosis(check_forward, forward))


@pytest.mark.parametrize(("key", "value", "phrase"), [
    ("gamma", lambda c: c["gamma"].reshape(-1), "has shape (4,); expected (1, 4, 1)"),
    ("inv_std", lambda c: c["std"], "holds other values"),
    ("axes", lambda c: [0, 2], "expected (0, 2)"),
])
def test_forward_cache_with_wrong_entries_is_reported_with_right_out(key, value, phrase):
    def forward(x, gamma, beta, eps=1e-5):
        out, cache = batchnorm_forward(x, gamma, beta, training=True, eps=eps)
        cache[key] = value(cache)
        return out, cache

    err = _diagnosis(check_forward, forward)
    assert err.mistakes == ("cache_values",)
    assert f"cache[{key!r}]" in str(err) and phrase in str(err)


def test_learner_style_forward_passes(capsys):
    check_forward(_with_cache(_forward))
    assert "all 6 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("checker", [check_backward, check_backward_compact])
@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_compact])
def test_reference_backwards_pass_both_backward_checkers(checker, backward, capsys):
    checker(backward)
    assert capsys.readouterr().out == f"{checker.__name__}: all 6 cases match the reference.\n"


def test_reference_running_update_passes(capsys):
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        return ((1 - momentum) * running_mean + momentum * batch_mean,
                (1 - momentum) * running_var + momentum * batch_var_biased * m / (m - 1))

    check_running_update(update)
    assert capsys.readouterr().out == "check_running_update: all 4 cases match the reference.\n"


def test_running_update_in_place_that_also_returns_the_pair_passes(capsys):
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        running_mean *= 1 - momentum
        running_mean += momentum * batch_mean
        running_var *= 1 - momentum
        running_var += momentum * batch_var_biased * m / (m - 1)
        return running_mean, running_var

    check_running_update(update)
    assert "all 4 cases match" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Forward mistakes
# ---------------------------------------------------------------------------------------------


def _fwd_per_example(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    return _c(gamma, x) * (x - mu) / np.sqrt(var + eps) + _c(beta, x)


def _fwd_axis0_only(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)
    return _c(gamma, x) * (x - mu) / np.sqrt(var + eps) + _c(beta, x)


def _fwd_global(x, gamma, beta, eps=1e-5):
    return _c(gamma, x) * (x - x.mean()) / np.sqrt(x.var() + eps) + _c(beta, x)


def _fwd_no_eps(x, gamma, beta, eps=1e-5):
    mu, var = _stats(x)
    return _c(gamma, x) * (x - mu) / np.sqrt(var) + _c(beta, x)


def _fwd_eps_outside(x, gamma, beta, eps=1e-5):
    mu, var = _stats(x)
    return _c(gamma, x) * (x - mu) / (np.sqrt(var) + eps) + _c(beta, x)


def _fwd_hardcoded_eps(x, gamma, beta, eps=1e-5):
    mu, var = _stats(x)
    return _c(gamma, x) * (x - mu) / np.sqrt(var + 1e-5) + _c(beta, x)


def _fwd_by_variance(x, gamma, beta, eps=1e-5):
    mu, var = _stats(x)
    return _c(gamma, x) * (x - mu) / (var + eps) + _c(beta, x)


def _fwd_unbiased(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=_axes(x), keepdims=True)
    var = x.var(axis=_axes(x), keepdims=True, ddof=1)
    return _c(gamma, x) * (x - mu) / np.sqrt(var + eps) + _c(beta, x)


def _fwd_not_centered(x, gamma, beta, eps=1e-5):
    _, var = _stats(x)
    return _c(gamma, x) * x / np.sqrt(var + eps) + _c(beta, x)


def _fwd_swapped(x, gamma, beta, eps=1e-5):
    return _forward(x, beta, gamma, eps)


def _fwd_no_affine(x, gamma, beta, eps=1e-5):
    mu, var = _stats(x)
    return (x - mu) / np.sqrt(var + eps)


def _fwd_no_gamma(x, gamma, beta, eps=1e-5):
    return _fwd_no_affine(x, gamma, beta, eps) + _c(beta, x)


def _fwd_no_beta(x, gamma, beta, eps=1e-5):
    return _c(gamma, x) * _fwd_no_affine(x, gamma, beta, eps)


_FORWARD_BUGS = [
    (_fwd_per_example, "per_example", "per example"),
    (_fwd_axis0_only, "axis0_only", "over axis 0 only"),
    (_fwd_global, "global_stats", "whole array"),
    (_fwd_no_eps, "forgot_eps", "eps is missing"),
    (_fwd_eps_outside, "eps_outside_sqrt", "outside the square root"),
    (_fwd_hardcoded_eps, "hardcoded_eps", "`eps` argument is ignored"),
    (_fwd_by_variance, "divided_by_variance", "divide by the variance"),
    (_fwd_unbiased, "unbiased_variance", "unbiased variance"),
    (_fwd_not_centered, "not_centered", "mean is not subtracted"),
    (_fwd_swapped, "gamma_beta_swapped", "gamma and beta are swapped"),
    (_fwd_no_affine, "no_affine", "gamma and beta are not applied"),
    (_fwd_no_gamma, "no_gamma", "gamma is not applied"),
    (_fwd_no_beta, "no_beta", "beta is not applied"),
]


@pytest.mark.parametrize("fn, key, phrase", _FORWARD_BUGS, ids=[k for _, k, _ in _FORWARD_BUGS])
def test_forward_mistake_is_named(fn, key, phrase):
    err = _diagnosis(check_forward, _with_cache(fn))
    assert err.mistakes == (key,)
    assert phrase in str(err)
    assert "Fix:" in str(err)


def test_forward_stats_over_axis0_only_gets_the_spatial_axes_note():
    assert "right for (N, C) inputs but not for (N, C, L)" in str(
        _diagnosis(check_forward, _with_cache(_fwd_axis0_only)))


def test_forward_wrong_output_shape_is_reported_with_both_shapes():
    msg = str(_diagnosis(check_forward, _with_cache(lambda x, gamma, beta, eps=1e-5:
                                                    _forward(x, gamma, beta, eps).T)))
    assert "`out` has shape (5, 16)" in msg and "expected (16, 5)" in msg


def test_forward_nan_output_is_reported_with_its_cause():
    def forward(x, gamma, beta, eps=1e-5):
        mu, var = _stats(x)
        return _c(gamma, x) * (x - mu) / np.sqrt(var - 2 * var) + _c(beta, x)

    msg = str(_diagnosis(check_forward, _with_cache(forward)))
    assert "contains NaN" in msg and "square root of a negative number" in msg


def test_not_implemented_says_not_implemented_yet():
    def forward(x, gamma, beta, eps=1e-5):
        raise NotImplementedError

    assert "not implemented yet" in str(_diagnosis(check_forward, forward))


def test_exception_is_reported_with_type_message_and_case():
    def forward(x, gamma, beta, eps=1e-5):
        raise RuntimeError("boom")

    msg = str(_diagnosis(check_forward, _with_cache(forward)))
    assert "raised RuntimeError: boom" in msg and "x of shape (N, C) = (16, 5)" in msg


def test_broadcast_error_from_unreshaped_gamma_gets_the_reshape_hint():
    def forward(x, gamma, beta, eps=1e-5):  # right for 2-D, breaks on (N, C, L)
        mu, var = _stats(x)
        return gamma * (x - mu) / np.sqrt(var + eps) + beta

    assert "gamma.reshape(1, -1" in str(_diagnosis(check_forward, _with_cache(forward)))


def test_wrong_signature_shows_how_the_checker_calls_it():
    msg = str(_diagnosis(check_forward, lambda x, gamma, beta: x))
    assert "The checker calls `<lambda>(x, gamma, beta, eps=...)`" in msg


def test_returning_none_asks_for_the_return():
    assert "Did you forget `return dx, dgamma, dbeta`?" in str(
        _diagnosis(check_backward, lambda dout, cache: None))
    assert "returned None; expected the pair `(out, cache)`" in str(
        _diagnosis(check_forward, lambda x, gamma, beta, eps=1e-5: None))


def test_changing_x_in_place_is_reported_even_with_right_values():
    def forward(x, gamma, beta, eps=1e-5):
        x -= x.mean(axis=_axes(x), keepdims=True)
        return _forward(x, gamma, beta, eps)

    msg = str(_diagnosis(check_forward, _with_cache(forward)))
    assert "returns the right values" in msg and "changed its input `x` in place" in msg


def test_unknown_forward_bug_gets_generic_message_with_max_error_and_location():
    def forward(x, gamma, beta, eps=1e-5):
        return _forward(x, gamma, beta, eps) * 1.1

    err = _diagnosis(check_forward, _with_cache(forward))
    msg = str(err)
    assert err.mistakes == ()
    assert "not by a mistake this checker knows" in msg
    assert "Largest error" in msg and "at `out[" in msg and "(channel " in msg
    assert "Hint:" in msg


def test_error_confined_to_the_tiny_variance_channel_is_pointed_out():
    def forward(x, gamma, beta, eps=1e-5):
        out = _forward(x, gamma, beta, eps)
        out[:, x.shape[1] // 2] += 0.01
        return out

    msg = str(_diagnosis(check_forward, _with_cache(forward)))
    assert "Only the channel with a tiny variance" in msg


def test_float32_computation_is_pointed_out():
    def forward(x, gamma, beta, eps=1e-5):
        return _forward(x.astype(np.float32), gamma.astype(np.float32),
                        beta.astype(np.float32), np.float32(eps))

    assert "float32: compute in float64" in str(_diagnosis(check_forward, _with_cache(forward)))


# ---------------------------------------------------------------------------------------------
# Backward mistakes (closed form, as learners write them)
# ---------------------------------------------------------------------------------------------


def _bwd(dout, cache, *, a=1.0, b=1.0, scale=None, m=None, axes=None, x_hat=None):
    """dx = scale * (dout - a * sum(dout) / m - b * x_hat * sum(dout * x_hat) / m)."""
    axes = _axes(dout) if axes is None else axes
    m = cache["m"] if m is None else m
    x_hat = cache["x_hat"] if x_hat is None else x_hat
    scale = cache["gamma"] / cache["std"] if scale is None else scale
    dbeta = dout.sum(axis=axes, keepdims=True)
    dgamma = (dout * x_hat).sum(axis=axes, keepdims=True)
    dx = scale * (dout - a * dbeta / m - b * x_hat * dgamma / m)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def _params(dout, cache):
    return (dout * cache["x_hat"]).sum(axis=_axes(dout)), dout.sum(axis=_axes(dout))


def _bwd_dx_times_m(dout, cache):
    dx, dgamma, dbeta = _bwd(dout, cache)
    return dx * cache["m"], dgamma, dbeta


def _bwd_dx_over_m(dout, cache):
    dx, dgamma, dbeta = _bwd(dout, cache)
    return dx / cache["m"], dgamma, dbeta


def _bwd_sign(dout, cache):
    dx, dgamma, dbeta = _bwd(dout, cache)
    return -dx, dgamma, dbeta


def _bwd_staged_no_mu_path(dout, cache):
    """The staged graph, stopping at dxmu: the path through mu is forgotten."""
    axes, m, xmu, std = cache["axes"], cache["m"], cache["xmu"], cache["std"]
    dx_hat = dout * cache["gamma"]
    dvar = 0.5 * (-(dx_hat * xmu).sum(axis=axes, keepdims=True) / std**2) / std
    dx = dx_hat / std + 2 * xmu * dvar / m
    return (dx, *_params(dout, cache))


def _bwd_staged_var_not_over_m(dout, cache):
    axes, m, xmu, std = cache["axes"], cache["m"], cache["xmu"], cache["std"]
    dx_hat = dout * cache["gamma"]
    dvar = 0.5 * (-(dx_hat * xmu).sum(axis=axes, keepdims=True) / std**2) / std
    dxmu = dx_hat / std + 2 * xmu * dvar          # forgot dsq = dvar / m
    dx = dxmu - dxmu.sum(axis=axes, keepdims=True) / m
    return (dx, *_params(dout, cache))


def _bwd_staged_no_half(dout, cache):
    axes, m, xmu, std = cache["axes"], cache["m"], cache["xmu"], cache["std"]
    dx_hat = dout * cache["gamma"]
    dvar = (-(dx_hat * xmu).sum(axis=axes, keepdims=True) / std**2) / std   # forgot the 0.5
    dxmu = dx_hat / std + 2 * xmu * dvar / m
    dx = dxmu - dxmu.sum(axis=axes, keepdims=True) / m
    return (dx, *_params(dout, cache))


def _bwd_no_gamma(dout, cache):
    return _bwd(dout, cache, scale=1 / cache["std"])


def _bwd_no_eps(dout, cache):
    std = np.sqrt(cache["var"])
    return (_bwd(dout, cache, scale=cache["gamma"] / std, x_hat=cache["xmu"] / std)[0],
            *_params(dout, cache))


def _bwd_m_is_n(dout, cache):
    return _bwd(dout, cache, m=dout.shape[0])


def _bwd_axis0(dout, cache):
    dx, _, _ = _bwd(dout, cache, axes=(0,), m=dout.shape[0])
    return dx, (dout * cache["x_hat"]).sum(axis=0), dout.sum(axis=0)


def _bwd_swapped(dout, cache):
    dx, dgamma, dbeta = _bwd(dout, cache)
    return dx, dbeta, dgamma


def _bwd_not_summed(dout, cache):
    return _bwd(dout, cache)[0], dout * cache["x_hat"], dout


def _bwd_wrong_axis(dout, cache):
    return _bwd(dout, cache)[0], (dout * cache["x_hat"]).sum(axis=1), dout.sum(axis=1)


def _bwd_keepdims(dout, cache):
    axes = _axes(dout)
    return (_bwd(dout, cache)[0], (dout * cache["x_hat"]).sum(axis=axes, keepdims=True),
            dout.sum(axis=axes, keepdims=True))


def _bwd_dgamma_xmu(dout, cache):
    return _bwd(dout, cache)[0], (dout * cache["xmu"]).sum(axis=_axes(dout)), _params(dout,
                                                                                        cache)[1]


_BACKWARD_BUGS = [
    (_bwd_dx_times_m, "dx_times_m", "m times too large"),
    (_bwd_dx_over_m, "dx_over_m", "m times too small"),
    (_bwd_sign, "dx_sign", "wrong sign everywhere"),
    (_bwd_staged_no_mu_path, "dx_no_mean_term", "missing the path through the mean"),
    (lambda dout, cache: _bwd(dout, cache, a=0.0), "dx_no_mean_term", "through the mean"),
    (lambda dout, cache: _bwd(dout, cache, b=0.0), "dx_no_var_term",
     "missing the path through the variance"),
    (lambda dout, cache: _bwd(dout, cache, a=cache["m"]), "mean_term_not_over_m",
     "mean term misses its 1/m"),
    (lambda dout, cache: _bwd(dout, cache, a=-1.0), "mean_term_sign", "mean term has the wrong"),
    (_bwd_staged_var_not_over_m, "var_term_not_over_m", "variance term misses its 1/m"),
    (lambda dout, cache: _bwd(dout, cache, b=-1.0), "var_term_sign",
     "variance term has the wrong sign"),
    (_bwd_staged_no_half, "var_term_twice", "twice too large"),
    (lambda dout, cache: _bwd(dout, cache, b=0.5), "var_term_half", "half what it should be"),
    (_bwd_no_gamma, "dx_no_gamma", "missing the factor gamma"),
    (_bwd_no_eps, "dx_no_eps", "without eps"),
    (_bwd_m_is_n, "m_is_n", "divides by N instead of m = N * L"),
    (_bwd_axis0, "axis0_only", "over axis 0 only"),
    (_bwd_swapped, "dgamma_dbeta_swapped", "`dgamma` and `dbeta` are swapped"),
    (_bwd_not_summed, "params_not_summed", "not summed over the batch"),
    (_bwd_wrong_axis, "params_wrong_axis", "summed over the channel axis 1"),
    (_bwd_keepdims, "params_keepdims", "keeps the reduced axes"),
    (_bwd_dgamma_xmu, "dgamma_uses_xmu", "uses x - mu instead of x_hat"),
]


@pytest.mark.parametrize("fn, key, phrase", _BACKWARD_BUGS, ids=[k for _, k, _ in _BACKWARD_BUGS])
def test_backward_mistake_is_named(fn, key, phrase):
    err = _diagnosis(check_backward, fn)
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_compact_checker_names_mistakes_too():
    err = _diagnosis(check_backward_compact, _bwd_no_gamma)
    assert err.mistakes == ("dx_no_gamma",) and str(err).startswith("check_backward_compact:")


def test_only_dbeta_not_summed_is_reported_for_dbeta_alone():
    def backward(dout, cache):
        dx, dgamma, _ = _bwd(dout, cache)
        return dx, dgamma, dout

    lines = str(_diagnosis(check_backward, backward)).splitlines()
    assert [line[:9] for line in lines if line.startswith("- ")] == ["- `dbeta`"]
    assert "The parameter gradient is not summed" in lines[1]


def test_two_independent_mistakes_are_both_named():
    def backward(dout, cache):
        dx, dgamma, dbeta = _bwd(dout, cache)
        return -dx, dbeta, dgamma

    assert set(_diagnosis(check_backward, backward).mistakes) == {"dx_sign",
                                                                   "dgamma_dbeta_swapped"}


def test_backward_right_only_for_all_ones_dout_explains_why_ones_hide_bugs():
    def backward(dout, cache):
        return (np.zeros_like(dout), *_params(dout, cache))

    msg = str(_diagnosis(check_backward, backward))
    assert "right when dout is all ones, but not for a random dout" in msg
    assert "true dx is exactly 0" in msg and "not by a mistake this checker knows" in msg


def test_backward_wrong_only_for_3d_inputs_gets_spatial_axes_note():
    def backward(dout, cache):
        dx, dgamma, dbeta = _bwd(dout, cache)
        return (dx if dout.ndim == 2 else dx * 1.5), dgamma, dbeta

    assert "right for (N, C) inputs but not for (N, C, L)" in str(
        _diagnosis(check_backward, backward))


def test_backward_key_error_lists_the_cache_keys():
    msg = str(_diagnosis(check_backward, lambda dout, cache: cache["x_norm"]))
    assert "KeyError" in msg and "The keys of `cache` are: x, mu, xmu" in msg


def test_backward_returning_two_values_asks_for_three():
    msg = str(_diagnosis(check_backward, lambda dout, cache: _bwd(dout, cache)[:2]))
    assert "returned 2 values" in msg and "`dx, dgamma, dbeta`" in msg


def test_backward_with_learners_own_forward_and_cache_keys_passes(capsys):
    def forward(x, gamma, beta, eps=1e-5):
        mu, var = _stats(x)
        x_norm = (x - mu) / np.sqrt(var + eps)
        return _c(gamma, x) * x_norm + _c(beta, x), {"xn": x_norm, "g": _c(gamma, x),
                                                     "s": np.sqrt(var + eps)}

    def backward(dout, c):
        axes, m = _axes(dout), dout.size // dout.shape[1]
        dbeta = dout.sum(axis=axes, keepdims=True)
        dgamma = (dout * c["xn"]).sum(axis=axes, keepdims=True)
        dx = c["g"] / c["s"] * (dout - (dbeta + c["xn"] * dgamma) / m)
        return dx, dgamma.reshape(-1), dbeta.reshape(-1)

    check_backward(backward, forward=forward)
    assert "all 6 cases match" in capsys.readouterr().out
    assert _diagnosis(check_backward, lambda d, c: (-backward(d, c)[0], *backward(d, c)[1:]),
                      forward).mistakes == ("dx_sign",)


def test_backward_with_a_forward_returning_only_out_asks_for_the_cache():
    msg = str(_diagnosis(check_backward, batchnorm_backward, _forward))
    assert "must return (out, cache)" in msg


# ---------------------------------------------------------------------------------------------
# Running-update mistakes
# ---------------------------------------------------------------------------------------------


def _update(w_old, correction):
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        w = w_old(momentum)
        return (w * running_mean + (1 - w) * batch_mean,
                w * running_var + (1 - w) * batch_var_biased * correction(m))
    return update


_RUNNING_BUGS = [
    (lambda rm, rv, bm, bv, m, momentum: (rm.copy(), rv.copy()), "not_updated",
     "return the old values"),
    (_update(lambda mom: mom, lambda m: m / (m - 1)), "momentum_reversed",
     "momentum convention is reversed"),
    (_update(lambda mom: mom, lambda m: 1), "cs231n_convention", "CS231n convention"),
    (_update(lambda mom: 1 - mom, lambda m: 1), "biased_variance", "biased batch variance"),
    (_update(lambda mom: 1 - mom, lambda m: (m - 1) / m), "correction_inverted",
     "(m - 1) / m instead of m / (m - 1)"),
    (_update(lambda mom: 0, lambda m: m / (m - 1)), "assigned_batch",
     "assigned instead of blended"),
    (_update(lambda mom: 0, lambda m: 1), "assigned_batch_biased", "variance is the biased"),
    (lambda *a: _update(lambda mom: 1 - mom, lambda m: m / (m - 1))(*a)[::-1],
     "outputs_swapped", "wrong order"),
]


@pytest.mark.parametrize("fn, key, phrase", _RUNNING_BUGS, ids=[k for _, k, _ in _RUNNING_BUGS])
def test_running_update_mistake_is_named(fn, key, phrase):
    err = _diagnosis(check_running_update, fn)
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_running_update_in_place_returning_none_asks_for_the_return():
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        running_mean *= 1 - momentum
        running_mean += momentum * batch_mean
        running_var *= 1 - momentum
        running_var += momentum * batch_var_biased * m / (m - 1)

    msg = str(_diagnosis(check_running_update, update))
    assert "returned None" in msg and "in place" in msg and "return new_mean, new_var" in msg


# ---------------------------------------------------------------------------------------------
# The machinery
# ---------------------------------------------------------------------------------------------


def test_exercise_error_is_an_assertion_error():
    assert issubclass(ExerciseError, AssertionError)


def test_checkers_are_deterministic():
    def forward(x, gamma, beta, eps=1e-5):
        return x * 0.9

    first = str(_diagnosis(check_forward, _with_cache(forward)))
    assert str(_diagnosis(check_forward, _with_cache(forward))) == first


@pytest.mark.parametrize("catalogue, checker", [
    (_FORWARD_MISTAKES, check_forward),
    (_BACKWARD_MISTAKES, check_backward),
    (_RUNNING_MISTAKES, check_running_update),
])
def test_every_catalogued_mistake_is_told_apart_from_the_others(catalogue, checker):
    for mistake in catalogue:
        fn = _with_cache(mistake.fn) if checker is check_forward else mistake.fn
        assert _diagnosis(checker, fn).mistakes == (mistake.key,), mistake.key


def test_check_function_is_usable_for_a_new_exercise(capsys):
    x = np.random.default_rng(0).normal(size=(4, 3))
    relu_cases = [Case("x of shape (4, 3)", (x,))]
    abs_mistake = Mistake("abs", "You return |x|.", "Use np.maximum(x, 0).", np.abs)

    check_function(lambda x: x * (x > 0), lambda x: np.maximum(x, 0), relu_cases,
                   [abs_mistake], name="check_relu")
    assert capsys.readouterr().out == "check_relu: the case matches the reference.\n"
    with pytest.raises(ExerciseError, match=r"You return \|x\|\. Fix: Use np.maximum"):
        check_function(lambda x: np.sqrt(x**2), lambda x: np.maximum(x, 0), relu_cases,
                       [abs_mistake], name="check_relu")


def test_every_checker_of_the_package_is_public():
    names = set(checks.__all__)
    for info in pkgutil.iter_modules(checks.__path__):
        module = importlib.import_module(f"bncourse.checks.{info.name}")
        for name, obj in vars(module).items():
            if (name.startswith("check_") and inspect.isfunction(obj)
                    and obj.__module__ == module.__name__):
                assert name in names, f"{module.__name__}.{name} is missing from __all__"
                assert getattr(checks, name) is obj
    assert all(hasattr(checks, name) for name in names)


def test_references_built_on_functional_equal_their_closed_forms():
    for case in _running_cases():
        rm, rv, bm, bv, m, momentum = case.args
        rule = ((1 - momentum) * rm + momentum * bm,
                (1 - momentum) * rv + momentum * bv * m / (m - 1))
        np.testing.assert_allclose(_running_reference(*case.args), rule, rtol=1e-13)
    for case in _fold_cases():
        weight, bias, gamma, beta, mean, var = case.args
        s = gamma / np.sqrt(var + case.kwargs["eps"])
        w_folded, b_folded = _fold_reference(*case.args, **case.kwargs)
        np.testing.assert_allclose(w_folded, weight * s[:, None], rtol=1e-13)
        np.testing.assert_allclose(b_folded, s * (bias - mean) + beta, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# check_batchnorm_module (notebook 02): learner-style module classes
# ---------------------------------------------------------------------------------------------


def _learner_bn(*, old_weight=False, store_biased=False, count=True, none=None, dims=None,
                eval_batch=False, eval_update=False, norm_unbiased=False, detach=False,
                update=True, stats_as_params=False, plain_count=False, names=("weight", "bias"),
                var_init=1.0):
    """A from-scratch BN module as a learner writes it, with switches for their mistakes."""
    import torch
    from torch import nn

    class MyBatchNorm(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            self.eps, self.momentum = eps, momentum
            setattr(self, names[0], nn.Parameter(torch.ones(num_features)))
            setattr(self, names[1], nn.Parameter(torch.zeros(num_features)))
            if stats_as_params:
                self.running_mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)
                self.running_var = nn.Parameter(torch.ones(num_features), requires_grad=False)
            else:
                self.register_buffer("running_mean", torch.zeros(num_features))
                self.register_buffer("running_var", torch.full((num_features,), var_init))
            if plain_count:
                self.num_batches_tracked = 0
            else:
                self.register_buffer("num_batches_tracked", torch.tensor(0))
            self.seen = 0

        def forward(self, x):
            axes = dims(x) if dims else [0, *range(2, x.dim())]
            shape = [1, -1] + [1] * (x.dim() - 2)
            w, b = getattr(self, names[0]), getattr(self, names[1])
            if self.training or eval_batch or eval_update:
                mean = x.mean(axes)
                var = ((x - mean.view(shape)) ** 2).mean(axes)
                m = x.numel() // x.shape[1]
            if self.training or eval_update:
                self.seen += 1
                if count:
                    self.num_batches_tracked += 1
                if self.momentum is None:
                    f = none(self.seen) if none else 1 / self.seen
                else:
                    f = 1 - self.momentum if old_weight else self.momentum
                with torch.no_grad():
                    v = var if store_biased else var * m / (m - 1)
                    if update:
                        self.running_mean.copy_((1 - f) * self.running_mean + f * mean)
                        self.running_var.copy_((1 - f) * self.running_var + f * v)
            if self.training or eval_batch:
                if detach:
                    mean, var = mean.detach(), var.detach()
                if norm_unbiased:
                    var = var * m / (m - 1)
            else:
                mean, var = self.running_mean, self.running_var
            x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
            return w.view(shape) * x_hat + b.view(shape)

    return MyBatchNorm


def test_learner_style_module_passes_with_two_deterministic_lines(capsys):
    check_batchnorm_module(_learner_bn())
    assert capsys.readouterr().out == (
        "check_batchnorm_module: all 4 cases match the reference.\n"
        "check_batchnorm_module: state_dict loads into nn.BatchNorm1d and back, with equal "
        "eval outputs.\n")


def test_the_package_batchnorm_passes_the_comparison_but_is_rejected_as_borrowed(
        capsys, monkeypatch):
    from bncourse.checks import module
    from bncourse.nn import BatchNorm

    with pytest.raises(ExerciseError, match="is bncourse.nn.batchnorm.BatchNorm"):
        check_batchnorm_module(BatchNorm)
    monkeypatch.setattr(module, "_borrowed_batchnorm", lambda cls: None)
    check_batchnorm_module(BatchNorm)
    assert "all 4 cases match" in capsys.readouterr().out


_MODULE_BUGS = [
    (dict(update=False), "not_updated", "never change in training mode"),
    (dict(old_weight=True), "momentum_reversed", "momentum convention is reversed"),
    (dict(store_biased=True), "biased_var", "stores the biased batch variance"),
    (dict(count=False), "nbt_not_incremented", "num_batches_tracked is not incremented"),
    (dict(none=lambda n: 0.1), "none_as_default", "treated as momentum=0.1"),
    (dict(none=lambda n: 1.0), "none_assigns_batch", "overwrites the running statistics"),
    (dict(none=lambda n: 1 / (n + 1)), "none_off_by_one", "off by one"),
    (dict(eval_batch=True), "eval_batch_stats", "Eval mode still normalizes with the batch"),
    (dict(eval_update=True), "updates_in_eval", "also updated in eval mode"),
    (dict(norm_unbiased=True), "unbiased_norm", "normalizes with the unbiased variance"),
    (dict(detach=True), "detached", "detached from the graph"),
]


@pytest.mark.parametrize("kw, key, phrase", _MODULE_BUGS, ids=[k for _, k, _ in _MODULE_BUGS])
def test_module_mistake_is_named(kw, key, phrase):
    err = _diagnosis(check_batchnorm_module, _learner_bn(**kw))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_module_ignoring_self_training_gets_both_eval_mistakes():
    err = _diagnosis(check_batchnorm_module, _learner_bn(eval_batch=True, eval_update=True))
    assert set(err.mistakes) == {"eval_batch_stats", "updates_in_eval"}


def test_module_statistics_mixing_channels_for_3d_inputs_is_named():
    import torch
    from torch import nn

    class MyBatchNorm(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            self.c, self.eps, self.momentum = num_features, eps, momentum
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

        def forward(self, x):
            shape = [1, -1] + [1] * (x.dim() - 2)
            if not self.training:
                mean, var = self.running_mean, self.running_var
            else:
                flat = x.reshape(-1, self.c)
                mean, var = flat.mean(0), flat.var(0, unbiased=False)
                self.num_batches_tracked += 1
                f = 1 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
                m = flat.shape[0]
                with torch.no_grad():
                    self.running_mean.lerp_(mean, f)
                    self.running_var.lerp_(var * m / (m - 1), f)
            x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
            return self.weight.view(shape) * x_hat + self.bias.view(shape)

    err = _diagnosis(check_batchnorm_module, MyBatchNorm)
    assert err.mistakes == ("reshape_channels",)
    assert "right for (N, C) inputs but not for (N, C, L)" in str(err)


def test_module_with_statistics_over_dim_0_only_gets_the_3d_advice():
    err = _diagnosis(check_batchnorm_module, _learner_bn(dims=lambda x: [0]))
    assert "For (N, C, L) inputs, reduce over dims (0, 2)" in str(err)


def test_running_statistics_as_parameters_are_named():
    err = _diagnosis(check_batchnorm_module, _learner_bn(stats_as_params=True))
    assert err.mistakes == ("stats_as_parameters",)
    assert "registered as nn.Parameter" in str(err) and "register_buffer" in str(err)


def test_num_batches_tracked_as_a_python_int_is_named():
    err = _diagnosis(check_batchnorm_module, _learner_bn(plain_count=True))
    assert err.mistakes == ("num_batches_tracked_not_buffer",)
    assert "plain attribute (int)" in str(err)


def test_gamma_beta_names_are_named():
    err = _diagnosis(check_batchnorm_module, _learner_bn(names=("gamma", "beta")))
    assert set(err.mistakes) == {"weight_not_parameter", "bias_not_parameter", "state_dict_keys"}
    assert "gamma, beta" in str(err) or "beta, gamma" in str(err)


def test_running_var_starting_at_zero_is_named():
    err = _diagnosis(check_batchnorm_module, _learner_bn(var_init=0.0))
    assert err.mistakes == ("running_var_init",)


def test_num_batches_tracked_of_the_wrong_dtype_is_named():
    import torch

    class MyBatchNorm(_learner_bn()):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__(num_features, eps, momentum)
            self.num_batches_tracked = torch.tensor(0.0)

    assert _diagnosis(check_batchnorm_module, MyBatchNorm).mistakes == (
        "num_batches_tracked_dtype",)


def test_module_not_implemented_and_instances_and_torch_subclasses_are_refused():
    from torch import nn

    class MyBatchNorm(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            raise NotImplementedError

    assert "not implemented yet" in str(_diagnosis(check_batchnorm_module, MyBatchNorm))
    assert _diagnosis(check_batchnorm_module, _learner_bn()(3)).mistakes == (
        "not_a_module_class",)
    assert _diagnosis(check_batchnorm_module, nn.BatchNorm1d).mistakes == (
        "subclasses_batchnorm",)


def test_module_with_a_wrong_constructor_signature_is_told_the_signature():
    from torch import nn

    class MyBatchNorm(nn.Module):
        def __init__(self, num_features):
            super().__init__()

    msg = str(_diagnosis(check_batchnorm_module, MyBatchNorm))
    assert "MyBatchNorm(num_features, eps=1e-5, momentum=0.1)" in msg


def test_every_catalogued_module_mistake_is_told_apart_from_the_others():
    for mistake in _MODULE_MISTAKES:
        cls = _variant_module(mistake.key)
        assert _diagnosis(check_batchnorm_module, cls).mistakes == (mistake.key,), mistake.key


# ---------------------------------------------------------------------------------------------
# check_ics_measure (notebook 03)
# ---------------------------------------------------------------------------------------------


def _ics_flat(grads):
    return np.concatenate([g.ravel() for g in grads])


def _ics_learner(grads_before, grads_after):
    """A correct learner solution."""
    a, b = _ics_flat(grads_before), _ics_flat(grads_after)
    return np.sqrt(np.sum((a - b) ** 2)), np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))


def _ics_squared(gb, ga):
    a, b = _ics_flat(gb), _ics_flat(ga)
    return np.sum((a - b) ** 2), _ics_learner(gb, ga)[1]


def _ics_per_tensor_cosine(gb, ga):
    cosines = [np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b))
               for a, b in zip(gb, ga, strict=True)]
    return _ics_learner(gb, ga)[0], sum(cosines) / len(cosines)


def _ics_dot(gb, ga):
    return _ics_learner(gb, ga)[0], np.dot(_ics_flat(gb), _ics_flat(ga))


def _ics_weight_only(gb, ga):
    return _ics_learner(gb[:1], ga[:1])


def test_check_ics_measure_accepts_a_correct_solution(capsys):
    checks.check_ics_measure(_ics_learner)
    assert capsys.readouterr().out == "check_ics_measure: all 3 cases match the reference.\n"


@pytest.mark.parametrize("fn, key", [
    (_ics_squared, "squared_l2"),
    (_ics_per_tensor_cosine, "per_tensor_cosine"),
    (_ics_dot, "unnormalized_cosine"),
    (_ics_weight_only, "first_tensor_only"),
    (lambda gb, ga: _ics_learner(gb, ga)[::-1], "outputs_swapped"),
])
def test_check_ics_measure_names_the_mistake(fn, key):
    with pytest.raises(ExerciseError) as info:
        checks.check_ics_measure(fn)
    assert info.value.mistakes == (key,)


def test_check_ics_measure_tells_every_catalogued_mistake_apart():
    for mistake in _ICS_MISTAKES:
        with pytest.raises(ExerciseError) as info:
            checks.check_ics_measure(mistake.fn)
        assert info.value.mistakes == (mistake.key,), mistake.key


def test_check_ics_measure_reports_an_unknown_bug_with_advice():
    with pytest.raises(ExerciseError, match="np.linalg.norm"):
        checks.check_ics_measure(lambda gb, ga: (0.5 * _ics_learner(gb, ga)[0],
                                                 _ics_learner(gb, ga)[1]))


# ---------------------------------------------------------------------------------------------
# Notebook 05: check_renorm_rd
# ---------------------------------------------------------------------------------------------


def _learner_renorm(*, invert=False, no_eps=False, one_sided_d=False, clip=True):
    """A learner's r, d of batch renormalization, with one optional bug."""
    def renorm_rd(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
        e = 0.0 if no_eps else eps
        sigma_b, sigma = np.sqrt(batch_var + e), np.sqrt(running_var + e)
        r = sigma / sigma_b if invert else sigma_b / sigma
        d = (batch_mean - running_mean) / sigma
        if clip:
            r = np.clip(r, 1 / r_max, r_max)
            d = np.minimum(d, d_max) if one_sided_d else np.clip(d, -d_max, d_max)
        return r, d
    return renorm_rd


def test_renorm_reference_passes(capsys):
    checks.check_renorm_rd(_learner_renorm())
    assert capsys.readouterr().out == "check_renorm_rd: all 3 cases match the reference.\n"


@pytest.mark.parametrize("kwargs, key", [
    ({"invert": True}, "r_inverted"), ({"no_eps": True}, "no_eps"),
    ({"one_sided_d": True}, "d_one_sided"), ({"clip": False}, "no_clip"),
])
def test_renorm_learner_mistakes_are_named(kwargs, key):
    err = _diagnosis(checks.check_renorm_rd, _learner_renorm(**kwargs))
    assert err.mistakes == (key,)


def test_every_catalogued_renorm_mistake_is_told_apart_from_the_others():
    for mistake in _RENORM_MISTAKES:
        assert _diagnosis(checks.check_renorm_rd, mistake.fn).mistakes == (mistake.key,), \
            mistake.key


def test_renorm_unknown_bug_gets_the_advice():
    def renorm_rd(batch_mean, batch_var, running_mean, running_var, r_max, d_max, eps=1e-5):
        return np.ones_like(batch_mean), np.zeros_like(batch_mean)

    msg = str(_diagnosis(checks.check_renorm_rd, renorm_rd))
    assert "not by a mistake this checker knows" in msg and "Hint:" in msg


# ---------------------------------------------------------------------------------------------
# Notebook 04: check_bn_output_std
# ---------------------------------------------------------------------------------------------


def _learner_noise_std(z, batch_size, kurtosis=3.0, *, mates_are_b=False, drop_var=False,
                       half=False, kurt_raw=False, z_plain=False, gaussian=False, root=True):
    """A learner's delta-method noise of x_hat, correct unless a flag adds one mistake."""
    z, b = np.asarray(z, dtype=float), np.asarray(batch_size, dtype=float)
    var_mu = (b if mates_are_b else b - 1) / (b * b)
    zz = z if z_plain else z * z
    excess = 2.0 if gaussian else (kurtosis if kurt_raw else kurtosis - 1)
    term = 0.0 if drop_var else zz * excess * (0.5 if half else 0.25)
    v = var_mu * (1 + term)
    return np.sqrt(v) if root else v


def test_noise_std_reference_passes(capsys):
    checks.check_bn_output_std(_learner_noise_std)
    assert capsys.readouterr().out == "check_bn_output_std: all 4 cases match the reference.\n"


def test_noise_std_matches_a_monte_carlo_estimate_for_large_batches():
    rng = np.random.default_rng(0)
    z, b = 1.5, 64
    mates = rng.standard_normal((20000, b - 1))
    batch = np.concatenate([np.full((20000, 1), z), mates], axis=1)
    x_hat = (z - batch.mean(1)) / batch.std(1)
    assert abs(x_hat.std() / _learner_noise_std(z, b) - 1) < 0.05


@pytest.mark.parametrize("flags, key", [
    (dict(root=False), "no_sqrt"),
    (dict(mates_are_b=True), "n_not_n_minus_1"),
    (dict(mates_are_b=True, drop_var=True), "std_of_a_mean"),
    (dict(drop_var=True), "mean_noise_only"),
    (dict(half=True), "half_not_quarter"),
    (dict(kurt_raw=True), "kurtosis_not_minus_1"),
    (dict(z_plain=True), "z_not_squared"),
    (dict(gaussian=True), "gaussian_only"),
])
def test_noise_std_mistakes_are_named(flags, key):
    def fn(z, batch_size, kurtosis=3.0):
        return _learner_noise_std(z, batch_size, kurtosis, **flags)

    assert _diagnosis(checks.check_bn_output_std, fn).mistakes == (key,)


def test_noise_std_ignoring_kurtosis_gets_the_gaussian_hint():
    def fn(z, batch_size, kurtosis=3.0):
        return _learner_noise_std(z, batch_size, gaussian=True)

    assert "right for kurtosis 3" in str(_diagnosis(checks.check_bn_output_std, fn))


def test_noise_std_unknown_bug_and_stub_are_explained():
    def stub(z, batch_size, kurtosis=3.0):
        raise NotImplementedError

    assert "not implemented yet" in str(_diagnosis(checks.check_bn_output_std, stub))

    def odd(z, batch_size, kurtosis=3.0):
        return 2 * _learner_noise_std(z, batch_size, kurtosis)

    err = _diagnosis(checks.check_bn_output_std, odd)
    assert err.mistakes == () and "Hint: write it as sqrt(var_mean + var_scale)" in str(err)


# ---------------------------------------------------------------------------------------------
# check_fold_linear_bn (notebook 06)
# ---------------------------------------------------------------------------------------------


def _fold_learner(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """A correct learner solution."""
    inv_std = 1.0 / np.sqrt(running_var + eps)
    scale = gamma * inv_std
    return weight * scale.reshape(-1, 1), (bias - running_mean) * scale + beta


def _fold_learner_bug(bug):
    def fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        std = np.sqrt(running_var + (0.0 if bug == "forgot_eps" else eps))
        scale = gamma * std if bug == "std_not_inverse" else gamma / std
        if bug == "scaled_input_features":
            new_w = weight * scale
        else:
            new_w = (weight.T * scale).T
        if bug == "forgot_running_mean":
            new_b = scale * bias + beta
        elif bug == "ignored_layer_bias":
            new_b = beta - running_mean * scale
        else:
            new_b = scale * (bias - running_mean) + beta
        return new_w, new_b
    return fn


def test_check_fold_linear_bn_accepts_a_correct_solution(capsys):
    checks.check_fold_linear_bn(_fold_learner)
    assert capsys.readouterr().out == "check_fold_linear_bn: all 3 cases match the reference.\n"


@pytest.mark.parametrize("key", ["forgot_eps", "std_not_inverse", "scaled_input_features",
                                 "forgot_running_mean", "ignored_layer_bias"])
def test_check_fold_linear_bn_names_the_mistake(key):
    with pytest.raises(ExerciseError) as info:
        checks.check_fold_linear_bn(_fold_learner_bug(key))
    assert info.value.mistakes == (key,)
    assert "Fix:" in str(info.value)


def test_check_fold_linear_bn_tells_every_catalogued_mistake_apart():
    for mistake in _FOLD_MISTAKES:
        with pytest.raises(ExerciseError) as info:
            checks.check_fold_linear_bn(mistake.fn)
        assert info.value.mistakes == (mistake.key,), mistake.key


def test_check_fold_linear_bn_agrees_with_torch_fuse_linear_bn_eval():
    import torch
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    torch.manual_seed(0)
    linear, bn = torch.nn.Linear(5, 4).double(), torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.5, 3)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    fused = fuse_linear_bn_eval(linear.eval(), bn.eval())
    w, b = _fold_learner(*(t.detach().numpy() for t in (linear.weight, linear.bias, bn.weight,
                           bn.bias, bn.running_mean, bn.running_var)), bn.eps)
    np.testing.assert_allclose(w, fused.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b, fused.bias.detach().numpy(), rtol=1e-12)


def test_check_fold_linear_bn_reports_an_unknown_bug_with_advice():
    with pytest.raises(ExerciseError, match="the x-term is the new weight") as info:
        checks.check_fold_linear_bn(
            lambda *a, **k: (_fold_learner(*a, **k)[0] * 1.01, _fold_learner(*a, **k)[1]))
    assert info.value.mistakes == ()


def test_check_fold_linear_bn_reports_a_modified_input():
    def in_place(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        w, b = _fold_learner(weight, bias, gamma, beta, running_mean, running_var, eps)
        weight *= 2
        return w, b

    with pytest.raises(ExerciseError, match="changed its input `weight` in place"):
        checks.check_fold_linear_bn(in_place)


# --- notebook 07: the paired t interval behind every verdict ---------------------------------


def _interval_learner(a, b, confidence=0.95):
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    half = stats.t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean(), d.mean() - half, d.mean() + half


def test_check_paired_interval_accepts_a_correct_solution(capsys):
    checks.check_paired_interval(_interval_learner)
    assert capsys.readouterr().out == "check_paired_interval: all 3 cases match the reference.\n"


def test_check_paired_interval_reference_equals_the_verdict_rules_interval():
    for case in _interval_cases():
        ref = _paired_interval_reference(*case.args, **case.kwargs)
        e = estimate(*case.args)
        low, high = e.interval(case.kwargs.get("confidence", 0.95))
        np.testing.assert_allclose(ref, (e.mean, low, high), rtol=1e-12)


def test_check_paired_interval_tells_every_catalogued_mistake_apart():
    for mistake in _interval_mistakes():
        with pytest.raises(ExerciseError) as info:
            checks.check_paired_interval(mistake.fn)
        assert info.value.mistakes == (mistake.key,), mistake.key
        assert "Fix:" in str(info.value)


def test_check_paired_interval_names_a_normal_quantile():
    def z(a, b, confidence=0.95):
        d = np.asarray(a) - np.asarray(b)
        half = stats.norm.ppf((1 + confidence) / 2) * d.std(ddof=1) / np.sqrt(d.size)
        return d.mean(), d.mean() - half, d.mean() + half

    with pytest.raises(ExerciseError, match="Student's t") as info:
        checks.check_paired_interval(z)
    assert info.value.mistakes == ("normal_quantile",)


def test_check_paired_interval_reports_an_unknown_bug_with_advice():
    def wide(a, b, confidence=0.95):
        mean, low, high = _interval_learner(a, b, confidence)
        return mean, low - 0.01, high + 0.01

    with pytest.raises(ExerciseError, match="Student's t quantile") as info:
        checks.check_paired_interval(wide)
    assert info.value.mistakes == ()


def test_check_paired_interval_reports_a_missing_return():
    with pytest.raises(ExerciseError, match="returned None"):
        checks.check_paired_interval(lambda a, b, confidence=0.95: None)


# --- rendering in IPython, and skipping an exercise -------------------------------------------


def test_exercise_error_renders_as_its_message_without_a_traceback():
    with pytest.raises(checks.ExerciseError) as info:
        checks.check_forward(_with_cache(lambda x, gamma, beta, eps=1e-5: x))
    rendered = info.value._render_traceback_()
    assert len(rendered) == 1 and str(info.value) in rendered[0]
    assert "Traceback" not in rendered[0] and "File " not in rendered[0]


def test_skip_returns_the_attached_solution_and_says_it_scores_nothing(capsys):
    def check_square(fn):
        checks.check_function(fn, np.square, [checks.Case("x", (np.arange(3.0),))],
                              name="check_square")

    checks.with_solution(np.square)(check_square)
    solution = checks.skip(check_square)
    assert solution is np.square
    assert "check_square: skipped" in capsys.readouterr().out
    check_square(solution)


def test_skip_without_a_solution_raises():
    with pytest.raises(ValueError, match="expected a checker with a reference solution"):
        checks.skip(lambda fn: None)


# --- check_batchnorm_module rejects borrowed batch norm ----------------------------------------


class _SubclassOfOurs(BatchNorm):
    pass


class _SubclassOfTorchs(torch.nn.BatchNorm1d):
    pass


class _HoldsTorchsBatchNorm(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(num_features, eps, momentum)

    def forward(self, x):
        return self.bn(x)


class _CallsFunctionalBatchNorm(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.eps, self.momentum = eps, momentum

    def forward(self, x):
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                              self.bias, self.training, 0.1, self.eps)


@pytest.mark.parametrize(("cls", "key", "phrase"), [
    (_SubclassOfOurs, "subclasses_batchnorm", "derives from bncourse.nn.batchnorm.BatchNorm"),
    (_SubclassOfTorchs, "subclasses_batchnorm", "derives from torch.nn.modules.batchnorm"),
    (_HoldsTorchsBatchNorm, "wraps_batchnorm_module", "holds a library batch-norm module"),
    (_CallsFunctionalBatchNorm, "calls_library_batch_norm", "calls F.batch_norm"),
])
def test_module_checker_rejects_borrowed_batch_norm(cls, key, phrase):
    with pytest.raises(checks.ExerciseError) as info:
        check_batchnorm_module(cls)
    assert info.value.mistakes == (key,)
    assert phrase in str(info.value)


def test_module_checker_restores_torchs_batch_norm_functions():
    import torch.nn.functional as F

    before = (F.batch_norm, torch.batch_norm)
    with pytest.raises(checks.ExerciseError):
        check_batchnorm_module(_CallsFunctionalBatchNorm)
    assert (F.batch_norm, torch.batch_norm) == before


# --- backward: the unbiased variance, and a compact backward reusing a wrong dgamma -------------


def _staged_backward(dout, cache, var_denominator=None):
    """The learner's staged backward (notebook 01), with dsq's denominator adjustable."""
    axes, m = cache["axes"], cache["m"]
    xmu, std, inv_std, x_hat, gamma = (cache[k] for k in ("xmu", "std", "inv_std", "x_hat",
                                                          "gamma"))
    dx_hat = gamma * dout
    dinv_std = (dx_hat * xmu).sum(axis=axes, keepdims=True)
    dvar = -dinv_std / std**2 / (2 * std)
    dsq = np.ones_like(xmu) * dvar / (m if var_denominator is None else var_denominator(m))
    dxmu = dx_hat * inv_std + 2 * xmu * dsq
    dx = dxmu - dxmu.sum(axis=axes, keepdims=True) / m
    return dx, (dout * x_hat).sum(axis=axes), dout.sum(axis=axes)


def test_staged_learner_backward_passes(capsys):
    check_backward(_staged_backward)
    assert "all 6 cases match" in capsys.readouterr().out


def test_backward_dividing_the_variance_term_by_m_minus_1_is_named():
    err = _diagnosis(check_backward, lambda dout, cache: _staged_backward(
        dout, cache, var_denominator=lambda m: m - 1))
    assert err.mistakes == ("var_term_unbiased",)
    assert "unbiased variance's 1/(m - 1)" in str(err)


@pytest.mark.parametrize(("dgamma_of", "keys"), [
    (lambda dout, cache: (dout * cache["xmu"]).sum(axis=cache["axes"]),
     ("dgamma_uses_xmu_in_dx", "dgamma_uses_xmu")),
    (lambda dout, cache: dout.sum(axis=cache["axes"]), None),
])
def test_compact_backward_reusing_a_wrong_dgamma_blames_dgamma_for_dx_too(dgamma_of, keys):
    def compact(dout, cache):
        m, shape = cache["m"], cache["gamma"].shape
        dbeta = dout.sum(axis=cache["axes"])
        dgamma = dgamma_of(dout, cache)
        dx = cache["gamma"] * cache["inv_std"] / m * (
            m * dout - dbeta.reshape(shape) - cache["x_hat"] * dgamma.reshape(shape))
        return dx, dgamma, dbeta

    err = _diagnosis(check_backward_compact, compact)
    if keys is not None:
        assert err.mistakes == keys
        assert "`dx` reuses your `dgamma`" in str(err)
    else:   # dgamma = sum(dout) is not catalogued: no term of dx is blamed for it
        assert "dx_no_var_term" not in err.mistakes and "var_term" not in str(err.mistakes)


# --- every checker: its solution passes, a stub is told it is not implemented ------------------

CHECKERS = sorted(name for name in checks.__all__
                  if name.startswith("check_") and name != "check_function")
BORROWED_IS_REJECTED = {"check_batchnorm_module"}   # its solution is the course's BatchNorm


@pytest.mark.parametrize("name", CHECKERS)
def test_every_checker_passes_its_own_solution_unless_it_is_a_borrowed_library_class(name,
                                                                                     capsys):
    checker = getattr(checks, name)
    assert callable(checker.solution)
    if name in BORROWED_IS_REJECTED:         # skipping is allowed; passing with it is not
        with pytest.raises(ExerciseError, match="library"):
            checker(checker.solution)
        return
    checker(checker.solution)
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("name", CHECKERS)
def test_every_checker_says_a_stub_is_not_implemented_yet(name):
    checker = getattr(checks, name)
    if isinstance(checker.solution, type):
        class Stub(torch.nn.Module):
            def __init__(self, *args, **kwargs):
                raise NotImplementedError
        stub = Stub
    else:
        def stub(*args, **kwargs):
            raise NotImplementedError
    with pytest.raises(ExerciseError, match="not implemented yet"):
        checker(stub)
