"""InPlaceABN: BN + LeakyReLU with a backward from the output alone; equal to the two layers in
float64 (autograd as the oracle), and lighter by exactly the size of BN's input."""

import pytest
import torch
import torch.nn.functional as F

from bncourse.memory import saved_tensor_bytes
from bncourse.nn import BatchNorm
from bncourse.nn.inplace_abn import InPlaceABN

FLOAT64_TOL = 1e-12
SLOPE = 0.1
SHAPE = (8, 4, 6)


def _pair():
    torch.manual_seed(0)
    abn = InPlaceABN(SHAPE[1], negative_slope=SLOPE).double()
    bn = BatchNorm(SHAPE[1]).double()
    with torch.no_grad():
        for m in (abn, bn):
            m.weight.copy_(torch.tensor([0.5, -1.5, 2.0, 1.0]))   # a negative gamma included
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    return abn, lambda x: F.leaky_relu(bn(x), SLOPE), bn


def _grads(forward, params, x, dout):
    x = x.clone().requires_grad_()
    out = forward(x)
    grads = torch.autograd.grad(out, [x, *params], dout)
    return [out.detach(), *grads]


def test_outputs_and_gradients_equal_bn_then_leaky_relu_in_float64():
    abn, reference, bn = _pair()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 2 + 1
        dout = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        ours = _grads(abn, list(abn.parameters()), x, dout)
        theirs = _grads(reference, list(bn.parameters()), x, dout)
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) \
            < FLOAT64_TOL
    assert torch.allclose(abn.running_var, bn.running_var, atol=FLOAT64_TOL, rtol=0)
    abn.eval(), bn.eval()
    assert torch.allclose(abn(x), reference(x), atol=FLOAT64_TOL, rtol=0)


def test_gradcheck():
    abn, _, _ = _pair()
    x = torch.randn(4, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: abn(t), (x,))


def test_the_block_saves_the_size_of_bns_input_less():
    abn, reference, bn = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    plain, _ = saved_tensor_bytes(lambda: reference(x), exclude=bn.parameters())
    inplace, count = saved_tensor_bytes(lambda: abn(x), exclude=abn.parameters())
    per_channel = SHAPE[1] * x.element_size()          # one (C,) vector
    # the activation-sized tensors: BN's input and the LeakyReLU's input against the output
    # alone; the rest are (C,) vectors (BatchNorm keeps one more than InPlaceABN)
    assert 0 <= plain - inplace - x.numel() * x.element_size() <= 2 * per_channel
    assert count == 2                                   # the output and the (C,) 1/sigma


def test_a_zero_gamma_is_refused_in_training():
    abn, _, _ = _pair()
    with torch.no_grad():
        abn.weight[0] = 0.0
    with pytest.raises(ValueError, match="nonzero"):
        abn(torch.randn(SHAPE, dtype=torch.float64))


@pytest.mark.parametrize("slope", [0.0, -0.1])
def test_a_non_invertible_activation_is_refused(slope):
    with pytest.raises(ValueError, match="negative_slope > 0"):
        InPlaceABN(4, negative_slope=slope)


def test_first_derivatives_only():
    abn, _, _ = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(abn(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_folding_keeps_the_activation():
    from bncourse.nn import fold_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), InPlaceABN(4, negative_slope=SLOPE)).double()
    model(torch.randn(16, 5, dtype=torch.float64))          # running statistics
    model.eval()
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], torch.nn.LeakyReLU)
    x = torch.randn(8, 5, dtype=torch.float64)
    assert torch.allclose(folded(x), model(x), atol=FLOAT64_TOL, rtol=0)
