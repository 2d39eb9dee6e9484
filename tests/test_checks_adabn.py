"""check_adabn (notebook 09): the reference passes, and each known mistake is named.

The buggy learner functions are written the way a learner would write them, independently of
the checker's catalogue, so a test fails if a catalogue entry drifts from its mistake."""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

import bncourse.adapt
from bncourse.checks.adabn import _ADABN_MISTAKES, _adabn_variant, check_adabn
from bncourse.checks.engine import ExerciseError


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _learner(model, target_batches, *, bug=None):
    """A learner's AdaBN through BN's own update, correct unless ``bug`` is set."""
    was_training = {m: m.training for m in model.modules()}
    layers = _bn_layers(model)
    if bug == "first_bn_only":
        layers = [model[1]]
    old_momentum = [layer.momentum for layer in layers]
    model.train() if bug in ("dropout_on", "train_forward") else model.eval()
    for layer in layers:
        if bug == "count_not_reset":
            layer.running_mean.fill_(0.0)
            layer.running_var.fill_(1.0)
        elif bug not in ("not_reset", "train_forward"):
            layer.reset_running_stats()
        if bug == "last_batch_only":
            layer.momentum = 1.0
        elif bug not in ("ema_momentum", "train_forward"):
            layer.momentum = None
        layer.train()
    with torch.no_grad():
        if bug == "one_big_batch":
            model(target_batches.reshape(-1, target_batches.shape[-1]))
        else:
            for batch in target_batches:
                model(batch)
    if bug != "momentum_not_restored":
        for layer, momentum in zip(layers, old_momentum, strict=True):
            layer.momentum = momentum
    if bug == "left_in_eval":
        model.eval()
    elif bug == "left_in_train":
        model.train()
    elif bug != "modes_not_restored":
        for m, flag in was_training.items():
            m.training = flag
    if bug == "parameters_changed":                # a stray optimizer step on the head
        loss = model(target_batches[0]).pow(2).mean()
        loss.backward()
        torch.optim.SGD(model[-1].parameters(), lr=0.1).step()
    return None if bug == "returns_none" else model


def _hooks_learner(model, target_batches, *, unbiased=True, bns_train=True):
    """A learner's AdaBN that records each BN's inputs with hooks and averages their statistics."""
    modes = [(m, m.training) for m in model.modules()]
    layers = _bn_layers(model)
    stats = {layer: [] for layer in layers}

    def record(layer, args):
        x = args[0]
        stats[layer].append((x.mean(0), x.var(0, unbiased=unbiased)))

    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    model.eval()
    for layer in layers:
        layer.train(bns_train)
    with torch.no_grad():
        for batch in target_batches:
            model(batch)
        for layer in layers:
            layer.running_mean.copy_(sum(m for m, _ in stats[layer]) / len(stats[layer]))
            layer.running_var.copy_(sum(v for _, v in stats[layer]) / len(stats[layer]))
    for handle in handles:
        handle.remove()
    for m, flag in modes:
        m.training = flag
    return model


def _with(bug):
    def adabn(model, target_batches):
        if bug == "returns_copy":                   # keeps the caller's model as it was
            model = copy.deepcopy(model)
            _learner(model, target_batches)
            return model
        return _learner(model, target_batches, bug=bug)
    return adabn


def _hooks(**kw):
    def adabn(model, target_batches):
        return _hooks_learner(model, target_batches, **kw)
    return adabn


def _update_bn(model, target_batches):
    update_bn(target_batches, model)
    return model


LEARNER_MISTAKES = [
    (_with("not_reset"), "not_reset", "not reset first"),
    (_with("count_not_reset"), "count_not_reset", "but not num_batches_tracked"),
    (_with("ema_momentum"), "ema_momentum", "exponential moving average"),
    (_with("train_forward"), "train_forward", "only run the target batches"),
    (_update_bn, "dropout_on", "Dropout is on"),
    (_hooks(bns_train=False), "bns_in_eval", "normalized with the earlier layers' old"),
    (_with("modes_not_restored"), "modes_not_restored", "modes of the collection are left"),
    (_with("left_in_eval"), "left_in_eval", "left in eval mode"),
    (_with("left_in_train"), "left_in_train", "left in training mode"),
    (_with("momentum_not_restored"), "momentum_not_restored", "keep momentum=None"),
    (_with("parameters_changed"), "parameters_changed", "parameters changed"),
    (_with("first_bn_only"), "first_bn_only", "Only the first BN layer"),
    (_with("last_batch_only"), "last_batch_only", "last batch only"),
    (_hooks(unbiased=False), "biased_var", "biased batch variances"),
    (_with("one_big_batch"), "one_big_batch", "one big batch"),
    (_with("returns_none"), "returns_none", "returns None"),
    (_with("returns_copy"), "returns_copy", "return a copy"),
]
IDS = [key for _, key, _ in LEARNER_MISTAKES]


def _diagnosis(fn):
    with pytest.raises(ExerciseError) as info:
        check_adabn(fn)
    return info.value


def test_adabn_reference_solution_passes_with_one_line(capsys):
    check_adabn(check_adabn.solution)
    assert capsys.readouterr().out == "check_adabn: all 2 cases match the reference.\n"


def test_adabn_solution_is_the_package_adabn(capsys):
    assert check_adabn.solution is bncourse.adapt.adabn
    check_adabn(bncourse.adapt.adabn)
    assert "all 2 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("fn", [_with(None), _hooks()], ids=["bn_update", "hooks"])
def test_adabn_correct_learners_pass(fn, capsys):
    check_adabn(fn)
    assert "all 2 cases match" in capsys.readouterr().out


def test_adabn_stub_is_not_implemented_yet():
    def adabn(model, target_batches):
        raise NotImplementedError
    assert "`adabn` is not implemented yet" in str(_diagnosis(adabn))


@pytest.mark.parametrize(("fn", "key", "phrase"), LEARNER_MISTAKES, ids=IDS)
def test_adabn_learner_mistake_is_named(fn, key, phrase):
    err = _diagnosis(fn)
    assert err.mistakes == (key,)
    assert phrase in str(err)


def test_adabn_learner_mistakes_cover_the_catalogue():
    assert set(IDS) == {m.key for m in _ADABN_MISTAKES}


@pytest.mark.parametrize("mistake", _ADABN_MISTAKES, ids=[m.key for m in _ADABN_MISTAKES])
def test_adabn_catalogued_mistake_is_told_apart_from_the_others(mistake):
    assert _diagnosis(_adabn_variant(mistake.key)).mistakes == (mistake.key,)


def test_adabn_naive_train_mode_forward_gets_both_of_its_mistakes():
    def adabn(model, target_batches):
        model.train()
        with torch.no_grad():
            for batch in target_batches:
                model(batch)
        return model

    err = _diagnosis(adabn)
    assert err.mistakes == ("train_forward", "left_in_train")
    assert "`running_mean` and `running_var`" in str(err) and "`modes`" in str(err)


def test_adabn_wrong_arity_shows_how_the_checker_calls_it():
    def adabn(model):
        return model
    assert "calls `adabn(model, target_batches)`" in str(_diagnosis(adabn))


def test_adabn_unknown_bug_gets_the_advice():
    def adabn(model, target_batches):
        bncourse.adapt.adabn(model, target_batches)
        with torch.no_grad():
            model[1].running_mean.add_(1.0)
        return model

    err = _diagnosis(adabn)
    assert err.mistakes == ()
    assert "not by a mistake this checker knows" in str(err) and "Hint: compare" in str(err)


def test_adabn_messages_are_deterministic():
    fn = _with("ema_momentum")
    assert str(_diagnosis(fn)) == str(_diagnosis(fn))
