"""check_tent_step (notebook 09): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import pytest
import torch
import torch.nn.functional as F

import bncourse.adapt
from bncourse.checks.engine import ExerciseError
from bncourse.checks.tent import _TENT_MISTAKES, _tent_variant, check_tent_step


def _learner(model, x, optimizer, *, bug=None):
    """A learner's TENT step, correct unless ``bug`` is set."""
    logits = model(x)
    if bug == "pseudo_label_ce":
        loss = F.nll_loss(F.log_softmax(logits, 1), logits.argmax(dim=1))
    else:
        probs = torch.softmax(logits, dim=0 if bug == "softmax_over_batch" else 1)
        log = torch.log2 if bug == "bits" else torch.log
        entropy = (probs * log(probs)).sum(dim=1)
        entropy = entropy if bug == "sign_dropped" else -entropy
        loss = entropy.sum() if bug == "summed" else entropy.mean()
    if bug != "no_zero_grad":
        optimizer.zero_grad()
    if bug != "step_without_gradients":        # backward forgotten
        loss.backward()
    optimizer.step()
    if bug == "returns_after_step":
        probs = torch.softmax(model(x), dim=1)
        return -(probs * torch.log(probs)).sum(dim=1).mean().item()
    if bug == "returns_tensor":
        return loss
    return None if bug == "returns_none" else loss.item()


def _with(bug):
    def tent_step(model, x, optimizer):
        return _learner(model, x, optimizer, bug=bug)
    return tent_step


LEARNER_MISTAKES = [
    ("pseudo_label_ce", "pseudo-labels"),
    ("summed", "summed over the batch instead of averaged"),
    ("sign_dropped", "minus sign of the entropy is missing"),
    ("softmax_over_batch", "softmax runs over the batch (dim=0)"),
    ("bits", "in bits"),
    ("no_zero_grad", "gradients are not zeroed"),
    ("step_without_gradients", "parameters never move"),
    ("returns_after_step", "entropy after the step"),
    ("returns_tensor", "`return loss.item()`"),
    ("returns_none", "returns None"),
]
IDS = [key for key, _ in LEARNER_MISTAKES]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_tent_step(fn)
    return info.value


def test_tent_reference_solution_passes_with_one_line(capsys):
    check_tent_step(check_tent_step.solution)
    assert capsys.readouterr().out == "check_tent_step: the case matches the reference.\n"


def test_tent_solution_is_the_package_tent_step():
    assert check_tent_step.solution is bncourse.adapt.tent_step


def test_tent_log_of_softmax_variant_is_not_a_mistake(capsys):
    check_tent_step(_with(None))                   # torch.log(torch.softmax(...)), not log_softmax
    assert "the case matches" in capsys.readouterr().out


def test_tent_stub_is_not_implemented_yet():
    def tent_step(model, x, optimizer):
        raise NotImplementedError
    assert "`tent_step` is not implemented yet" in str(_diagnosis(tent_step))


@pytest.mark.parametrize(("key", "phrase"), LEARNER_MISTAKES, ids=IDS)
def test_tent_learner_mistake_is_named(key, phrase):
    err = _diagnosis(_with(key))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_tent_learner_mistakes_cover_the_catalogue():
    assert set(IDS) == {m.key for m in _TENT_MISTAKES}


@pytest.mark.parametrize("mistake", _TENT_MISTAKES, ids=[m.key for m in _TENT_MISTAKES])
def test_tent_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(_tent_variant(mistake.key)).mistakes == (mistake.key,)


def test_tent_tensor_return_is_the_only_problem_reported():
    msg = str(_diagnosis(_with("returns_tensor")))
    assert "`returned_type`" in msg and "`entropy`" not in msg and "`weight`" not in msg


def test_tent_zero_grad_after_backward_is_a_step_without_gradients():
    def tent_step(model, x, optimizer):
        loss = bncourse.adapt.prediction_entropy(model(x))
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        return loss.item()

    assert _diagnosis(tent_step).mistakes == ("step_without_gradients",)


def test_tent_wrong_arity_shows_how_the_checker_calls_it():
    def tent_step(model, x):
        return 0.0
    assert "calls `tent_step(model, x, optimizer)`" in str(_diagnosis(tent_step))


def test_tent_unknown_bug_gets_the_advice():
    def tent_step(model, x, optimizer):
        loss = bncourse.adapt.prediction_entropy(model(x)) ** 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    err = _diagnosis(tent_step)
    assert err.mistakes == ()
    assert "not by a mistake this checker knows" in str(err) and "Hint: check your loss" in str(err)
