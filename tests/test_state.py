"""bncourse.state: one snapshot/restore helper for every "leave the model as it was"."""

import pytest
import torch
from torch import nn

from bncourse.state import ModelState, restored


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model(torch.randn(8, 3)).sum().backward()          # grads and moved statistics
    return model


def _snapshot(model):
    return ([p.detach().clone() for p in model.parameters()],
            [p.grad.clone() for p in model.parameters()],
            [b.clone() for b in model.buffers()],
            [m.training for m in model.modules()])


def _assert_same(a, b):
    for xs, ys in zip(a[:3], b[:3], strict=True):
        for x, y in zip(xs, ys, strict=True):
            torch.testing.assert_close(x, y, atol=0, rtol=0)
    assert a[3] == b[3]


def test_restored_puts_back_parameters_grads_buffers_and_modes():
    model = _model()
    before = _snapshot(model)
    with restored(model):
        model.eval()
        model[0].weight.data.add_(1.0)
        model[0].weight.grad = None
        model(torch.randn(5, 3))
        model[1].train()
        model(torch.randn(5, 3))                        # moves the running statistics
    _assert_same(_snapshot(model), before)


def test_restored_restores_when_the_block_raises():
    model = _model()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), restored(model):
        model[1].running_mean.fill_(7.0)
        raise RuntimeError("boom")
    _assert_same(_snapshot(model), before)


def test_without_parameters_only_buffers_and_modes_are_restored():
    model = _model()
    with restored(model, parameters=False):
        model[0].bias.data.fill_(2.0)
        model[1].running_var.fill_(5.0)
        model.eval()
    assert torch.all(model[0].bias == 2.0)
    assert torch.all(model[1].running_var != 5.0) and model.training


def test_restore_can_put_back_values_or_modes_alone():
    model = _model()
    state = ModelState(model, parameters=False)
    model.eval()
    model[1].running_mean.fill_(3.0)
    state.restore(modes=False)
    assert not model.training and torch.all(model[1].running_mean != 3.0)
    state.restore(values=False)
    assert model.training


def test_model_state_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        ModelState(torch.zeros(3))
