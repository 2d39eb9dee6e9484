"""check_ghost_batchnorm (notebook 04): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.ghost import _GHOST_MISTAKES, _ghost_cases, check_ghost_batchnorm
from bncourse.nn import GhostBatchNorm


def _axes(x):
    return (0, *range(2, x.ndim))


def _bn(chunk, gamma, beta, eps, ddof=0):
    shape = (1, -1, *[1] * (chunk.ndim - 2))
    mu = chunk.mean(axis=_axes(chunk), keepdims=True)
    var = chunk.var(axis=_axes(chunk), keepdims=True, ddof=ddof)
    return gamma.reshape(shape) * (chunk - mu) / np.sqrt(var + eps) + beta.reshape(shape)


def _learner(x, gamma, beta, ghost_batch_size, eps=1e-5):
    """A correct learner: consecutive chunks, the last one possibly smaller."""
    return np.concatenate([_bn(x[s:s + ghost_batch_size], gamma, beta, eps)
                           for s in range(0, len(x), ghost_batch_size)])


def _whole_batch(x, gamma, beta, ghost_batch_size, eps=1e-5):
    return _bn(x, gamma, beta, eps)


def _strided(x, gamma, beta, ghost_batch_size, eps=1e-5):
    ghosts = -(-len(x) // ghost_batch_size)
    out = np.empty_like(x)
    for k in range(ghosts):
        out[k::ghosts] = _bn(x[k::ghosts], gamma, beta, eps)
    return out


def _wrong_axis(x, gamma, beta, ghost_batch_size, eps=1e-5):
    out = np.empty_like(x)
    for j in range(min(ghost_batch_size, len(x))):
        part = x[j::ghost_batch_size]
        out[j::ghost_batch_size] = (_bn(part, gamma, beta, eps) if len(part) > 1
                                    else np.broadcast_to(beta.reshape(1, -1, *[1] * (x.ndim - 2)),
                                                         part.shape))
    return out


def _array_split(x, gamma, beta, ghost_batch_size, eps=1e-5):
    parts = np.array_split(x, -(-len(x) // ghost_batch_size))
    return np.concatenate([_bn(p, gamma, beta, eps) for p in parts])


def _merged(x, gamma, beta, ghost_batch_size, eps=1e-5):
    full = len(x) // ghost_batch_size
    bounds = [i * ghost_batch_size for i in range(max(full, 1))] + [len(x)]
    return np.concatenate([_bn(x[a:b], gamma, beta, eps)
                           for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def _unbiased(x, gamma, beta, ghost_batch_size, eps=1e-5):
    return np.concatenate([_bn(x[s:s + ghost_batch_size], gamma, beta, eps, ddof=1)
                           for s in range(0, len(x), ghost_batch_size)])


LEARNER_MISTAKES = [
    (_whole_batch, "whole_batch", "plain BN"),
    (_strided, "strided", "strided"),
    (_wrong_axis, "wrong_axis", "wrong axis"),
    (_array_split, "array_split", "np.array_split"),
    (_merged, "merged_remainder", "merged into the ghost batch before it"),
    (_unbiased, "unbiased_var", "unbiased variance"),
]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_ghost_batchnorm(fn)
    return info.value


def test_ghost_reference_solution_passes_with_one_line(capsys):
    check_ghost_batchnorm(check_ghost_batchnorm.solution)
    assert capsys.readouterr().out == "check_ghost_batchnorm: all 4 cases match the reference.\n"


def test_ghost_correct_learner_passes(capsys):
    check_ghost_batchnorm(_learner)
    assert "all 4 cases match" in capsys.readouterr().out


def test_ghost_reference_equals_the_package_ghost_batchnorm():
    for case in _ghost_cases():
        x, gamma, beta, g = case.args
        module = GhostBatchNorm(x.shape[1], g, eps=case.kwargs["eps"]).double()
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
        out = module(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(check_ghost_batchnorm.solution(x, gamma, beta, g,
                                                                  **case.kwargs), out, atol=1e-12)


def test_ghost_stub_is_not_implemented_yet():
    def ghost_batchnorm(x, gamma, beta, ghost_batch_size, eps=1e-5):
        raise NotImplementedError
    assert "not implemented yet" in str(_diagnosis(ghost_batchnorm))


@pytest.mark.parametrize(("fn", "key", "phrase"), LEARNER_MISTAKES,
                         ids=[key for _, key, _ in LEARNER_MISTAKES])
def test_ghost_learner_mistake_is_named(fn, key, phrase):
    err = _diagnosis(fn)
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_ghost_learner_mistakes_cover_the_catalogue():
    assert {key for _, key, _ in LEARNER_MISTAKES} == {m.key for m in _GHOST_MISTAKES}


@pytest.mark.parametrize("mistake", _GHOST_MISTAKES, ids=[m.key for m in _GHOST_MISTAKES])
def test_ghost_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(mistake.fn).mistakes == (mistake.key,)


def test_ghost_reshape_without_a_short_last_chunk_gets_the_exception_and_its_case():
    def reshaping(x, gamma, beta, ghost_batch_size, eps=1e-5):
        chunks = x.reshape(len(x) // ghost_batch_size, ghost_batch_size, *x.shape[1:])
        return np.concatenate([_bn(c, gamma, beta, eps) for c in chunks])
    msg = str(_diagnosis(reshaping))
    assert "raised ValueError" in msg and "ghost_batch_size=6" in msg


def test_ghost_returning_none_is_explained():
    assert "returned None" in str(_diagnosis(lambda x, gamma, beta, ghost_batch_size, eps=1e-5:
                                             None))


def test_ghost_wrong_shape_is_reported():
    def first_ghost_only(x, gamma, beta, ghost_batch_size, eps=1e-5):
        return _bn(x[:ghost_batch_size], gamma, beta, eps)
    assert "has shape" in str(_diagnosis(first_ghost_only))


def test_ghost_wrong_arity_is_explained():
    def no_ghost_size(x, gamma, beta):
        return _bn(x, gamma, beta, 1e-5)
    assert "does your function take these arguments" in str(_diagnosis(no_ghost_size))
