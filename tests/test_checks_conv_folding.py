"""check_fold_conv1d_bn (notebook 06): the reference passes, each known mistake is named.

The buggy solutions are written the way a learner would write them, independently of the
catalogue's variants, so a test fails if a catalogue entry drifts from the mistake it names.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bncourse.checks import ExerciseError
from bncourse.checks.conv_folding import (
    _CONV_MISTAKES,
    _conv_cases,
    _fold_conv_reference,
    check_fold_conv1d_bn,
)


def _learner(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5, bug=None):
    """A learner's fold; ``bug`` names the one mistake to make."""
    std = np.sqrt(running_var if bug == "forgot_eps" else running_var + eps)
    if bug == "std_not_inverse":
        scale = gamma * std
    elif bug == "forgot_gamma":
        scale = 1 / std
    else:
        scale = gamma / std
    if bug == "scaled_input_channels":
        new_weight = weight * scale[None, :, None]
    else:
        new_weight = np.einsum("o,oik->oik", scale, weight)
    if bias is None:
        if bug == "no_bias_beta_only":
            return new_weight, beta.copy()
        if bug == "bias_none_kept":
            return new_weight, None
        if bug != "bias_none_crash":
            bias = np.zeros_like(gamma)
    if bug == "forgot_running_mean":
        new_bias = scale * bias + beta
    elif bug == "mean_after_scaling":
        new_bias = bias * scale - running_mean + beta
    elif bug == "unscaled_layer_bias":
        new_bias = bias + beta - running_mean * scale
    elif bug == "forgot_beta":
        new_bias = (bias - running_mean) * scale
    else:
        new_bias = (bias - running_mean) * scale + beta
    return new_weight, new_bias


def _buggy(bug):
    def fold_conv1d_bn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        return _learner(weight, bias, gamma, beta, running_mean, running_var, eps, bug=bug)
    return fold_conv1d_bn


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "forgot_eps": "eps is missing",
    "std_not_inverse": "multiplies by the standard deviation",
    "forgot_gamma": "gamma is missing",
    "scaled_input_channels": "input-channel axis",
    "forgot_running_mean": "leaves out the running mean",
    "mean_after_scaling": "subtracted after scaling",
    "unscaled_layer_bias": "added unscaled",
    "forgot_beta": "leaves out beta",
    "no_bias_beta_only": "return beta alone",
    "bias_none_crash": "expected a convolution without a bias",
    "bias_none_kept": "returned None as `b_folded`",
}


def test_the_reference_passes_with_one_line(capsys):
    check_fold_conv1d_bn(check_fold_conv1d_bn.solution)
    assert capsys.readouterr().out == "check_fold_conv1d_bn: all 3 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_fold_conv1d_bn(_buggy(None))
    assert "all 3 cases match" in capsys.readouterr().out


def test_a_stub_is_reported_as_not_implemented_yet():
    def fold_conv1d_bn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_fold_conv1d_bn(fold_conv1d_bn)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _CONV_MISTAKES} <= set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_fold_conv1d_bn(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _CONV_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_fold_conv1d_bn(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_the_reference_equals_torch_fuse_conv_bn_eval():
    for case in _conv_cases():
        weight, bias, gamma, beta, mean, var = case.args
        c_out, c_in, k = weight.shape
        conv = nn.Conv1d(c_in, c_out, k, bias=bias is not None).double().eval()
        bn = nn.BatchNorm1d(c_out, eps=case.kwargs["eps"]).double().eval()
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            if bias is not None:
                conv.bias.copy_(torch.from_numpy(bias))
            bn.weight.copy_(torch.from_numpy(gamma))
            bn.bias.copy_(torch.from_numpy(beta))
            bn.running_mean.copy_(torch.from_numpy(mean))
            bn.running_var.copy_(torch.from_numpy(var))
        fused = fuse_conv_bn_eval(conv, bn)
        w, b = _fold_conv_reference(*case.args, **case.kwargs)
        np.testing.assert_allclose(w, fused.weight.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(b, fused.bias.detach().numpy(), rtol=1e-12)


def test_the_cases_include_a_convolution_without_bias():
    assert any(case.args[1] is None for case in _conv_cases())


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_fold_conv1d_bn(lambda weight, bias, gamma, beta, running_mean, running_var,
                             eps=1e-5: None)


def test_a_single_array_instead_of_two_is_reported():
    def weight_only(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        return _learner(weight, bias, gamma, beta, running_mean, running_var, eps)[0]

    with pytest.raises(ExerciseError, match="expected the 2 values `W_folded, b_folded`"):
        check_fold_conv1d_bn(weight_only)


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_fold_conv1d_bn(lambda weight, bias: (weight, bias))


def test_an_unknown_bug_gets_the_advice():
    def off(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        w, b = _learner(weight, bias, gamma, beta, running_mean, running_var, eps)
        return w, b + 0.1

    with pytest.raises(ExerciseError, match="one scale s per output channel") as info:
        check_fold_conv1d_bn(off)
    assert info.value.mistakes == ()


def test_a_modified_input_is_reported():
    def in_place(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        w, b = _learner(weight, bias, gamma, beta, running_mean, running_var, eps)
        weight *= 2
        return w, b

    with pytest.raises(ExerciseError, match="changed its input `weight` in place"):
        check_fold_conv1d_bn(in_place)
