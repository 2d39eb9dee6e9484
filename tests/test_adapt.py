"""Adapting BN to shifted data (AdaBN, TENT) and freezing it when fine-tuning."""

import pytest
import torch
import torch.nn.functional as F

from bncourse.adapt import (
    adabn,
    bn_state,
    freeze_bn,
    prediction_entropy,
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
