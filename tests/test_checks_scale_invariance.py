"""check_direction_step (notebook 04): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.scale_invariance import (
    _DIRECTION_MISTAKES,
    _direction_cases,
    check_direction_step,
)
from bncourse.nn import BatchNorm


def _learner(weight, grad, lr, weight_decay=0.0, *, step="ok", angle="ok", eff="ok"):
    """A learner's step, correct unless one keyword names a bug."""
    new = {"ok": weight - lr * (grad + weight_decay * weight),
           "decay_not_times_lr": weight - lr * grad - weight_decay * weight,
           "decay_sign": weight - lr * grad + lr * weight_decay * weight,
           "no_decay": weight - lr * grad}[step]
    norm = np.linalg.norm(weight, axis=1)
    cos = (weight * new).sum(1) / (norm * np.linalg.norm(new, axis=1))
    whole_cos = (weight * new).sum() / (np.linalg.norm(weight) * np.linalg.norm(new))
    turned = {"ok": np.arccos(np.clip(cos, -1, 1)),
              "degrees": np.degrees(np.arccos(np.clip(cos, -1, 1))),
              "whole": np.arccos(np.clip(whole_cos, -1, 1)),       # one number
              "first_order": lr * np.linalg.norm(grad, axis=1) / norm}[angle]
    shrink = 1 - lr * weight_decay
    rate = {"ok": lr / (shrink * norm**2),
            "not_squared": lr / (shrink * norm),
            "inverted": lr * norm**2 / shrink,
            "ignores_decay": lr / norm**2,
            "decay_sign": lr / ((1 + lr * weight_decay) * norm**2),
            "new_norm": lr / (shrink * np.linalg.norm(new, axis=1) ** 2),
            "whole": lr / (shrink * np.linalg.norm(weight) ** 2)}[eff]   # one number
    return new, turned, rate


def _with(**bug):
    def direction_step(weight, grad, lr, weight_decay=0.0):
        return _learner(weight, grad, lr, weight_decay, **bug)
    return direction_step


LEARNER_MISTAKES = [
    (dict(step="decay_not_times_lr"), "decay_not_times_lr", "not multiplied by the learning"),
    (dict(step="decay_sign"), "decay_sign", "grows the weight"),
    (dict(step="no_decay"), "no_decay_step", "leaves weight decay out"),
    (dict(angle="degrees"), "angle_degrees", "in degrees"),
    (dict(angle="whole"), "angle_whole_matrix", "between the whole matrices"),
    (dict(angle="first_order"), "angle_first_order", "first-order estimate"),
    (dict(eff="not_squared"), "eff_not_squared", "not ||w||^2"),
    (dict(eff="inverted"), "eff_inverted", "grows with ||w||"),
    (dict(eff="ignores_decay"), "eff_ignores_decay", "without the weight decay's factor"),
    (dict(eff="decay_sign"), "eff_decay_sign", "(1 + lr lam)"),
    (dict(eff="new_norm"), "eff_new_norm", "norm after the step"),
    (dict(eff="whole"), "eff_whole_matrix", "norm of the whole matrix"),
]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_direction_step(fn)
    return info.value


def test_direction_reference_solution_passes_with_one_line(capsys):
    check_direction_step(check_direction_step.solution)
    assert capsys.readouterr().out == "check_direction_step: all 3 cases match the reference.\n"


def test_direction_correct_learner_passes(capsys):
    check_direction_step(_with())
    assert "all 3 cases match" in capsys.readouterr().out


def test_direction_cases_have_gradients_orthogonal_to_their_rows():
    for case in _direction_cases():
        weight, grad, _ = case.args
        assert np.abs((weight * grad).sum(1)).max() < 1e-12


def test_direction_effective_lr_is_the_rate_of_a_plain_step_on_the_direction():
    """A Linear row in front of BN: the step SGD takes on w turns it as a step of rate
    effective_lr on u = w / ||w||, with the gradient at u, would."""
    torch.manual_seed(0)
    x = torch.randn(32, 5, dtype=torch.float64)
    bn = BatchNorm(3, eps=1e-12).double()          # eps would break the invariance slightly
    target = torch.randn(32, 3, dtype=torch.float64)

    def grad_at(w):
        w = w.clone().requires_grad_(True)
        loss = ((bn(x @ w.T) - target) ** 2).mean()
        return torch.autograd.grad(loss, w)[0]

    w = torch.randn(3, 5, dtype=torch.float64) * torch.tensor([[0.5], [2.0], [4.0]])
    lr, wd = 0.3, 0.05
    new, _, eff = check_direction_step.solution(w.numpy(), grad_at(w).numpy(), lr, wd)
    u = w / w.norm(dim=1, keepdim=True)
    moved = u.numpy() - eff[:, None] * grad_at(u).numpy()
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)   # noqa: E731
    np.testing.assert_allclose(unit(moved), unit(new), atol=1e-9)


def test_direction_stub_is_not_implemented_yet():
    def direction_step(weight, grad, lr, weight_decay=0.0):
        raise NotImplementedError
    assert "not implemented yet" in str(_diagnosis(direction_step))


@pytest.mark.parametrize(("bug", "key", "phrase"), LEARNER_MISTAKES,
                         ids=[key for _, key, _ in LEARNER_MISTAKES])
def test_direction_learner_mistake_is_named(bug, key, phrase):
    err = _diagnosis(_with(**bug))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_direction_learner_mistakes_cover_the_catalogue():
    assert {key for _, key, _ in LEARNER_MISTAKES} == {m.key for m in _DIRECTION_MISTAKES}


@pytest.mark.parametrize("mistake", _DIRECTION_MISTAKES, ids=[m.key for m in _DIRECTION_MISTAKES])
def test_direction_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(mistake.fn).mistakes == (mistake.key,)


def test_direction_two_values_instead_of_three_are_explained():
    def direction_step(weight, grad, lr, weight_decay=0.0):
        return _learner(weight, grad, lr, weight_decay)[:2]
    assert "expected the 3 values `new_weight, angle, effective_lr`" in str(
        _diagnosis(direction_step))


def test_direction_returning_none_is_explained():
    assert "returned None" in str(_diagnosis(lambda weight, grad, lr, weight_decay=0.0: None))


def test_direction_wrong_shape_is_reported():
    def direction_step(weight, grad, lr, weight_decay=0.0):
        new, angle, eff = _learner(weight, grad, lr, weight_decay)
        return new, angle[:, None], eff
    assert "`angle` has shape" in str(_diagnosis(direction_step))
