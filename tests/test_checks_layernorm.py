"""check_layernorm_backward (notebook 08): the reference passes, each known mistake is named.

The buggy backward passes are written the way a learner would write them, independently of the
catalogue's variants."""

import numpy as np
import pytest

from bncourse.checks.engine import ExerciseError
from bncourse.checks.layernorm import _LAYERNORM_MISTAKES, check_layernorm_backward


def _learner(dout, x, gamma, eps=1e-5, bug=None):
    """A learner's layer-norm backward over the last axis; ``bug`` names the one mistake."""
    axis = tuple(range(x.ndim - 1)) if bug == "batch_axis" else -1
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=1 if bug == "unbiased" else 0)
    std = np.sqrt(var) if bug == "no_eps" else np.sqrt(var + eps)
    x_hat = (x - mu) / std
    g = dout if bug == "no_gamma" else dout * gamma
    mean_g = (g.sum(axis=axis, keepdims=True) if bug == "mean_term_sum"
              else g.mean(axis=axis, keepdims=True))
    dx = g - (0 if bug == "no_mean_term" else mean_g)
    if bug != "no_var_term":
        dx = dx - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)
    dx = dx / std
    batch_axes = tuple(range(x.ndim - 1))
    if bug == "params_over_features":
        dgamma, dbeta = (dout * x_hat).sum(-1), dout.sum(-1)
    elif bug == "params_not_summed":
        dgamma, dbeta = dout * x_hat, dout
    else:
        dgamma, dbeta = (dout * x_hat).sum(batch_axes), dout.sum(batch_axes)
    if bug == "dgamma_dbeta_swapped":
        dgamma, dbeta = dbeta, dgamma
    return dx, dgamma, dbeta


def _buggy(bug):
    def layernorm_backward(dout, x, gamma, eps=1e-5):
        return _learner(dout, x, gamma, eps, bug=bug)
    return layernorm_backward


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "batch_axis": "that is batch norm",
    "no_mean_term": "path through the mean",
    "no_var_term": "path through the variance",
    "mean_term_sum": "a sum over the features",
    "unbiased": "unbiased",
    "no_eps": "without eps",
    "no_gamma": "missing the factor gamma",
    "params_over_features": "one value per token",
    "params_not_summed": "have the input's shape",
    "dgamma_dbeta_swapped": "swapped",
}


def test_the_reference_passes_with_one_line(capsys):
    check_layernorm_backward(check_layernorm_backward.solution)
    assert capsys.readouterr().out == ("check_layernorm_backward: all 4 cases match the "
                                       "reference.\n")


def test_a_correct_learner_solution_passes(capsys):
    check_layernorm_backward(_buggy(None))
    assert "all 4 cases match" in capsys.readouterr().out


def test_the_reference_equals_a_numerical_gradient():
    from bncourse.functional import layernorm_forward
    from bncourse.gradcheck import numerical_gradient, rel_error

    rng = np.random.default_rng(0)
    x, gamma, dout = rng.normal(size=(3, 5)), rng.uniform(1, 2, 5), rng.normal(size=(3, 5))
    dx = check_layernorm_backward.solution(dout, x, gamma)[0]
    numeric = numerical_gradient(lambda v: layernorm_forward(v, gamma, None)[0], x, dout)
    assert rel_error(dx, numeric) < 1e-7


def test_a_stub_is_reported_as_not_implemented_yet():
    def layernorm_backward(dout, x, gamma, eps=1e-5):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_layernorm_backward(layernorm_backward)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _LAYERNORM_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_layernorm_backward(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _LAYERNORM_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_layernorm_backward(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_a_bug_only_in_the_three_dimensional_cases_gets_the_rank_hint():
    def layernorm_backward(dout, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = _learner(dout, x, gamma, eps)
        if x.ndim == 3:                                   # sums over axis 0 only
            x_hat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
            dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
        return dx, dgamma, dbeta

    with pytest.raises(ExerciseError, match=r"right for \(N, D\) inputs but not for"):
        check_layernorm_backward(layernorm_backward)


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_layernorm_backward(lambda dout, x, gamma, eps=1e-5: None)


def test_returning_only_dx_asks_for_the_three_values():
    with pytest.raises(ExerciseError, match="expected the 3 values `dx, dgamma, dbeta`"):
        check_layernorm_backward(lambda dout, x, gamma, eps=1e-5: _learner(dout, x, gamma,
                                                                           eps)[0])


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_layernorm_backward(lambda dout, cache: (dout, dout, dout))


def test_an_unknown_bug_gets_the_advice():
    def layernorm_backward(dout, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = _learner(dout, x, gamma, eps)
        return 2 * dx, dgamma, dbeta

    with pytest.raises(ExerciseError, match="numerical gradient") as info:
        check_layernorm_backward(layernorm_backward)
    assert info.value.mistakes == ()
