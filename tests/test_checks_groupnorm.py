"""check_groupnorm_forward (notebook 08): the reference passes and equals torch's GroupNorm,
each known mistake is named.

The buggy forwards are written the way a learner would write them, independently of the
catalogue's variants."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.groupnorm import (
    _GROUPNORM_MISTAKES,
    _groupnorm_cases,
    check_groupnorm_forward,
)


def _learner(x, gamma, beta, num_groups, eps=1e-5, bug=None):
    """A learner's group norm; ``bug`` names the one mistake to make."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    if bug == "strided_groups":
        v = x.reshape(n, c // num_groups, num_groups, *rest)
        axes = (1, *range(3, v.ndim))
    elif bug == "instance":
        v, axes = x, tuple(range(2, x.ndim))
    elif bug == "layer":
        v, axes = x, tuple(range(1, x.ndim))
    else:
        v = x.reshape(n, num_groups, c // num_groups, *rest)
        axes = tuple(range(2, v.ndim))
        if bug == "batch":
            axes = (0, *axes)
    mean = v.mean(axis=axes, keepdims=True)
    var = v.var(axis=axes, keepdims=True, ddof=1 if bug == "unbiased" else 0)
    std = np.sqrt(var) + eps if bug == "eps_outside_root" else np.sqrt(var + eps)
    x_hat = ((v - mean) / std).reshape(x.shape)
    shape = (1, c) + (1,) * len(rest)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape)


def _buggy(bug):
    def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
        return _learner(x, gamma, beta, num_groups, eps, bug=bug)
    return groupnorm_forward


#: mistake key -> a phrase of its diagnosis.
PHRASES = {
    "strided_groups": "groups are strided",
    "instance": "that is instance norm",
    "layer": "that is layer norm",
    "batch": "shared by the whole batch",
    "unbiased": "unbiased",
    "eps_outside_root": "added to the standard deviation",
}


def test_the_reference_passes_with_one_line(capsys):
    check_groupnorm_forward(check_groupnorm_forward.solution)
    assert capsys.readouterr().out == "check_groupnorm_forward: all 4 cases match the reference.\n"


def test_a_correct_learner_solution_passes(capsys):
    check_groupnorm_forward(_buggy(None))
    assert "all 4 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("case", _groupnorm_cases(), ids=lambda c: c.label)
def test_the_reference_equals_torch_group_norm(case):
    x, gamma, beta, groups = case.args
    want = torch.nn.functional.group_norm(torch.from_numpy(x), groups, torch.from_numpy(gamma),
                                          torch.from_numpy(beta), eps=case.kwargs["eps"])
    np.testing.assert_allclose(check_groupnorm_forward.solution(*case.args, **case.kwargs),
                               want.numpy(), rtol=0, atol=1e-12)


def test_a_stub_is_reported_as_not_implemented_yet():
    def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_groupnorm_forward(groupnorm_forward)


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {m.key for m in _GROUPNORM_MISTAKES} == set(PHRASES)


@pytest.mark.parametrize("key", sorted(PHRASES))
def test_each_mistake_is_named_with_its_diagnosis(key):
    with pytest.raises(ExerciseError) as info:
        check_groupnorm_forward(_buggy(key))
    assert info.value.mistakes == (key,)
    assert PHRASES[key] in str(info.value)
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("mistake", _GROUPNORM_MISTAKES, ids=lambda m: m.key)
def test_each_catalogued_variant_is_told_apart_from_the_others(mistake):
    with pytest.raises(ExerciseError) as info:
        check_groupnorm_forward(mistake.fn)
    assert info.value.mistakes == (mistake.key,)


def test_a_missing_return_is_reported():
    with pytest.raises(ExerciseError, match="returned None"):
        check_groupnorm_forward(lambda x, gamma, beta, num_groups, eps=1e-5: None)


def test_the_grouped_view_returned_without_reshaping_back_gets_its_shape():
    def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
        n, c = x.shape[:2]
        return x.reshape(n, num_groups, c // num_groups, *x.shape[2:])

    with pytest.raises(ExerciseError, match="has shape"):
        check_groupnorm_forward(groupnorm_forward)


def test_a_wrong_arity_is_reported():
    with pytest.raises(ExerciseError, match="does your function take these arguments"):
        check_groupnorm_forward(lambda x, num_groups: x)


def test_an_unknown_bug_gets_the_advice():
    with pytest.raises(ExerciseError, match="Hint: split the C channels") as info:
        check_groupnorm_forward(lambda x, gamma, beta, num_groups, eps=1e-5:
                                _learner(x, gamma, beta, num_groups, eps) + 0.1)
    assert info.value.mistakes == ()
