"""check_rms_norm (notebook 08): the reference passes and equals torch's RMSNorm, each known
mistake is named.

The buggy forwards are written the way a learner would write them, independently of the
catalogue's variants."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.rmsnorm import _RMS_MISTAKES, _rms_cases, check_rms_norm


def _learner(x, weight, eps=1e-6, bug=None):
    """A learner's RMSNorm over the last axis; ``bug`` names the one mistake to make."""
    if bug == "centred":
        x = x - x.mean(axis=-1, keepdims=True)
    axis = 0 if bug == "batch_axis" else -1
    if bug == "std_not_rms":
        ms = x.var(axis=-1, keepdims=True)
    elif bug == "l2_norm":
        ms = np.sum(x * x, axis=-1, keepdims=True)
    else:
        ms = np.mean(x * x, axis=axis, keepdims=True)
    if bug == "no_sqrt":
        denominator = ms + eps
    elif bug == "eps_outside_root":
        denominator = np.sqrt(ms) + eps
    elif bug == "no_eps":
        denominator = np.sqrt(ms)
    else:
        denominator = np.sqrt(ms + eps)
    out = x / denominator
    return out if bug == "no_weight" else out * weight


def _buggy(bug):
    def rms_norm(x, weight, eps=1e-6):
        return _learner(x, weight, eps, bug=bug)
    return rms_norm


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "centred": "that is layer norm",
    "std_not_rms": "standard deviation",
    "eps_outside_root": "after the square root",
    "no_eps": "eps is missing",
    "no_sqrt": "without the square root",
    "l2_norm": "Euclidean norm",
    "batch_axis": "over the batch",
    "no_weight": "is not applied",
}


def test_the_reference_passes_with_one_line(capsys):
    check_rms_norm(check_rms_norm.solution)
    assert capsys.readouterr().out == "check_rms_norm: all 3 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_rms_norm(_buggy(None))
    assert "all 3 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("case", _rms_cases(), ids=lambda c: c.label)
def test_the_reference_equals_torch_rms_norm(case):
    x, weight = case.args
    norm = torch.nn.RMSNorm(x.shape[-1], eps=case.kwargs["eps"]).double()
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(weight))
        want = norm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(check_rms_norm.solution(x, weight, **case.kwargs), want,
                               rtol=0, atol=1e-12)


def test_a_stub_is_reported_as_not_implemented_yet():
    def rms_norm(x, weight, eps=1e-6):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_rms_norm(rms_norm)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _RMS_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_rms_norm(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _RMS_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_rms_norm(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_rms_norm(lambda x, weight, eps=1e-6: None)


def test_a_reduction_without_keepdims_gets_the_broadcast_hint():
    with pytest.raises(ExerciseError, match="keepdims=True"):
        check_rms_norm(lambda x, weight, eps=1e-6: x / np.sqrt((x ** 2).mean(-1) + eps) * weight)


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_rms_norm(lambda x: x)


def test_an_unknown_bug_gets_the_advice():
    with pytest.raises(ExerciseError, match="Hint: divide each token by") as info:
        check_rms_norm(lambda x, weight, eps=1e-6: 2 * _learner(x, weight, eps))
    assert info.value.mistakes == ()
