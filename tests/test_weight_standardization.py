"""Weight standardization: standardized weights per output channel, a layer invariant to the
scale and shift of each channel's weights, gradients by gradcheck, and its state_dict."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.nn import StandardizedWeight, WSConv1d, WSConv2d, weight_standardization

FLOAT64_ATOL = 1e-12


def standardized(weight, eps=1e-5):
    """The paper's formula, written independently: per output channel over its fan-in."""
    flat = weight.reshape(weight.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    var = ((flat - mean) ** 2).mean(1, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps)).reshape(weight.shape)


@pytest.mark.parametrize("make", [lambda: WSConv1d(3, 4, 5, padding=2),
                                  lambda: WSConv2d(3, 4, 3, padding=1)])
def test_the_layer_convolves_with_the_standardized_weight(make):
    torch.manual_seed(0)
    conv = make().double()
    raw = conv.parametrizations.weight.original
    x = torch.randn(2, 3, *([7] * (raw.dim() - 2)), dtype=torch.float64)
    conv_fn = F.conv1d if raw.dim() == 3 else F.conv2d
    want = conv_fn(x, standardized(raw), conv.bias, padding=conv.padding)
    torch.testing.assert_close(conv(x), want, atol=FLOAT64_ATOL, rtol=0)


def test_each_output_channels_weights_have_zero_mean_and_unit_variance():
    conv = WSConv1d(6, 5, 3, ws_eps=0.0).double()
    w = conv.weight.reshape(5, -1)
    torch.testing.assert_close(w.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(w.var(1, correction=0), torch.ones(5, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_output_ignores_the_scale_and_shift_of_each_channels_weights():
    torch.manual_seed(1)
    conv = WSConv1d(3, 4, 5, ws_eps=0.0).double()
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    before = conv(x)
    with torch.no_grad():
        original = conv.parametrizations.weight.original
        original.mul_(torch.tensor([0.1, 2.0, 7.0, 0.5], dtype=torch.float64).view(4, 1, 1))
        original.add_(3.0)
    torch.testing.assert_close(conv(x), before, atol=1e-10, rtol=0)


def test_gradients_pass_gradcheck_in_float64():
    param = StandardizedWeight(1e-5)
    w = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(param, (w,))
    assert torch.autograd.gradgradcheck(param, (w,))


def test_the_optimizer_updates_the_raw_weight_kept_in_the_state_dict():
    conv = weight_standardization(nn.Conv1d(2, 3, 3))
    keys = set(conv.state_dict())
    assert "parametrizations.weight.original" in keys and "weight" not in keys
    assert any(p is conv.parametrizations.weight.original for p in conv.parameters())


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda: StandardizedWeight(-1.0), "expected eps >= 0"),
    (lambda: StandardizedWeight()(torch.randn(5)), "expected a weight of shape"),
])
def test_bad_arguments_raise_clear_errors(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()
