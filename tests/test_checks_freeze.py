"""check_freeze_bn (notebook 09): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import pytest
from torch import nn

import bncourse.adapt
from bncourse.checks.engine import ExerciseError
from bncourse.checks.freeze import _FREEZE_MISTAKES, _freeze_variant, check_freeze_bn
from bncourse.nn import is_batchnorm


def _learner(model, *, bug=None):
    """A learner's freeze_bn, correct unless ``bug`` is set."""
    if bug == "bn1d_only":
        layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    elif bug == "torch_bn_only":
        layers = [m for m in model.modules()
                  if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    elif bug == "children_only":
        layers = [m for m in model.children() if is_batchnorm(m)]
    else:
        layers = [m for m in model.modules() if is_batchnorm(m)]
    if bug == "whole_model_eval":
        model.eval()
    if bug == "all_parameters_frozen":
        for p in model.parameters():
            p.requires_grad = False
    for layer in layers:
        if bug not in ("requires_grad_only", "whole_model_eval"):
            layer.train(False)
        if bug != "eval_only":
            layer.weight.requires_grad = False
            layer.bias.requires_grad = bug == "bias_not_frozen"
    return None if bug == "returns_none" else model


def _with(bug):
    def freeze_bn(model):
        return _learner(model, bug=bug)
    return freeze_bn


LEARNER_MISTAKES = [
    ("requires_grad_only", "`requires_grad_(False)` on weight and bias alone"),
    ("eval_only", "still get gradients and train"),
    ("bias_not_frozen", "bias still trains"),
    ("whole_model_eval", "dropout is switched off"),
    ("all_parameters_frozen", "the other layers cannot learn"),
    ("bn1d_only", "`isinstance(m, nn.BatchNorm1d)`"),
    ("torch_bn_only", "not the course's BatchNorm"),
    ("children_only", "`model.children()` does not look inside submodules"),
    ("returns_none", "returns None"),
]
IDS = [key for key, _ in LEARNER_MISTAKES]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_freeze_bn(fn)
    return info.value


def test_freeze_reference_solution_passes_with_one_line(capsys):
    check_freeze_bn(check_freeze_bn.solution)
    assert capsys.readouterr().out == "check_freeze_bn: the case matches the reference.\n"


def test_freeze_solution_is_the_package_freeze_bn(capsys):
    assert check_freeze_bn.solution is bncourse.adapt.freeze_bn
    check_freeze_bn(bncourse.adapt.freeze_bn)
    assert "the case matches" in capsys.readouterr().out


def test_freeze_correct_learner_passes(capsys):
    check_freeze_bn(_with(None))
    assert "the case matches" in capsys.readouterr().out


def test_freeze_stub_is_not_implemented_yet():
    def freeze_bn(model):
        raise NotImplementedError
    assert "`freeze_bn` is not implemented yet" in str(_diagnosis(freeze_bn))


@pytest.mark.parametrize(("key", "phrase"), LEARNER_MISTAKES, ids=IDS)
def test_freeze_learner_mistake_is_named(key, phrase):
    err = _diagnosis(_with(key))
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_freeze_learner_mistakes_cover_the_catalogue():
    assert set(IDS) == {m.key for m in _FREEZE_MISTAKES}


@pytest.mark.parametrize("mistake", _FREEZE_MISTAKES, ids=[m.key for m in _FREEZE_MISTAKES])
def test_freeze_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(_freeze_variant(mistake.key)).mistakes == (mistake.key,)


def test_freeze_bn1d_only_names_the_fix():
    msg = str(_diagnosis(_with("bn1d_only")))
    assert "bncourse.nn.is_batchnorm(m)" in msg and "nn.modules.batchnorm._BatchNorm" in msg


def test_freeze_doing_nothing_is_told_both_halves_of_freezing():
    err = _diagnosis(lambda model: model)
    assert err.mistakes == ("requires_grad_only", "eval_only")
    assert "`bn_training` and `bn_statistics_moved`" in str(err) and "`bn_affine_moved`" in str(err)
    assert "`other_parameters_moved`" not in str(err)


def test_freeze_wrong_arity_shows_how_the_checker_calls_it():
    def freeze_bn(model, layers):
        return model
    assert "calls `freeze_bn(model)`" in str(_diagnosis(freeze_bn))


def test_freeze_unknown_bug_gets_the_advice():
    def freeze_bn(model):
        bncourse.adapt.freeze_bn(model)
        model[-1].weight.requires_grad_(False)       # the head stops learning
        return model

    err = _diagnosis(freeze_bn)
    assert err.mistakes == ()
    assert "`other_parameters_moved`" in str(err) and "Hint: after your function" in str(err)
