"""Adapting BN to shifted data (AdaBN, TENT) and freezing it when fine-tuning."""

import pytest
import torch
import torch.nn.functional as F

from bncourse.adapt import (
    KeepBNFrozen,
    adabn,
    bn_state,
    freeze_bn,
    prediction_entropy,
    tent_online,
    tent_parameters,
    tent_step,
)
from bncourse.models import mlp


def trained_mlp(seed=0):
    torch.manual_seed(seed)
    model = mlp((16,), norm="batch")
    x, y = torch.randn(256, 40), torch.randint(0, 10, (256,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x


def moved(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_adabn_sets_the_running_statistics_to_the_target_datas_and_restores_the_modes():
    model, x = trained_mlp()
    model.eval()
    target = 3 * x + 2                                          # a shifted, scaled domain
    adabn(model, target.split(64))
    bn = model.norm0
    with torch.no_grad():
        z = model.linear0(target)
    torch.testing.assert_close(bn.running_mean, z.mean(0), atol=1e-5, rtol=1e-5)
    assert not bn.training and not model.training


def test_tent_adapts_only_bn_affine_parameters_and_lowers_the_entropy():
    model, x = trained_mlp()
    shifted = 2 * x + 1
    params = tent_parameters(model)
    assert len(params) == 2 and all(p.requires_grad for p in params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(params, lr=0.05)
    entropies = [tent_step(model, shifted, opt) for _ in range(20)]
    assert entropies[-1] < entropies[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"norm0.weight", "norm0.bias"}


def test_requires_grad_false_alone_still_lets_the_running_statistics_move():
    model, x = trained_mlp()
    for p in model.norm0.parameters():
        p.requires_grad_(False)                                 # the common "freeze"
    before = bn_state(model)
    model.train()
    model(x + 1)
    assert moved(before, bn_state(model)) >= {"norm0.running_mean", "norm0.running_var"}


def test_freeze_bn_keeps_every_bn_parameter_and_buffer_while_the_rest_trains():
    model, x = trained_mlp()
    model.train()
    freeze_bn(model)
    before = bn_state(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    y = torch.randint(0, 10, (256,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x + 1), y).backward()
        opt.step()
    assert moved(before, bn_state(model)) == set()
    assert model.linear0.weight.requires_grad


def test_prediction_entropy_is_log_classes_for_uniform_and_zero_for_certain_predictions():
    assert prediction_entropy(torch.zeros(3, 10)).item() == pytest.approx(torch.log(
        torch.tensor(10.0)).item())
    assert prediction_entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0,
                                                                                  abs=1e-6)


def test_models_without_bn_are_refused():
    with pytest.raises(ValueError, match="expected a model with batch norm layers"):
        freeze_bn(mlp((8,)))


def test_keep_bn_frozen_survives_train_calls_and_the_rest_still_trains():
    torch.manual_seed(0)
    model, x = mlp((16,), norm="batch", dropout=0.5), torch.randn(64, 40)
    frozen = KeepBNFrozen(model)
    before = bn_state(model)
    head = model.head.weight.detach().clone()
    opt = torch.optim.SGD([p for p in frozen.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        frozen.train()                  # what a training loop does every epoch
        opt.zero_grad()
        F.cross_entropy(frozen(x), torch.zeros(len(x), dtype=torch.long)).backward()
        opt.step()
    assert moved(before, bn_state(model)) == set()
    assert not torch.equal(head, model.head.weight)
    assert model.drop0.training          # the dropout layer is back in training mode


def test_tent_online_predicts_every_example_and_adapts_only_bn_affine_parameters():
    model, x = trained_mlp()
    linear = model.linear0.weight.detach().clone()
    before = bn_state(model)
    predictions = tent_online(model, x.split(64), lr=1e-2)
    assert predictions.shape == (len(x),)
    assert predictions.dtype == torch.long
    assert torch.equal(linear, model.linear0.weight)
    after = bn_state(model)      # TENT drops the running statistics: batch statistics only
    assert {"norm0.weight", "norm0.bias"} == moved({k: before[k] for k in after}, after)


def test_tent_online_first_batch_is_predicted_before_any_step():
    model, x = trained_mlp()
    reference, _ = trained_mlp()
    tent_parameters(reference)
    with torch.no_grad():
        expected = reference(x[:64]).argmax(1)
    assert torch.equal(tent_online(model, x.split(64), lr=1.0)[:64], expected)
