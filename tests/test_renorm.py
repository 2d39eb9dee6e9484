"""BatchRenorm: BN when r_max=1 and d_max=0; r and d are constants in the backward pass."""

import re

import pytest
import torch

from bncourse.nn import BatchNorm, BatchRenorm

FLOAT64_ATOL = 1e-12


def pair(**kwargs):
    torch.manual_seed(0)
    plain = BatchNorm(3, momentum=0.1).double()
    renorm = BatchRenorm(3, momentum=0.1, **kwargs).double()
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    renorm.load_state_dict(plain.state_dict())
    return plain, renorm


def batch(seed, shape=(8, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 3,
            torch.randn(shape, generator=g, dtype=torch.float64))


def test_reduces_to_batchnorm_when_r_max_is_1_and_d_max_is_0():
    plain, renorm = pair(r_max=1.0, d_max=0.0)
    for seed in range(4):
        x, dout = batch(seed)
        outs, grads = [], []
        for module in (plain, renorm):
            xi = x.clone().requires_grad_(True)
            out = module(xi)
            grads.append(torch.autograd.grad(out, [xi, module.weight, module.bias], dout))
            outs.append(out)
        torch.testing.assert_close(outs[1], outs[0], atol=FLOAT64_ATOL, rtol=0)
        for a, b in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(renorm.state_dict()[k], v, atol=FLOAT64_ATOL, rtol=0)


def test_unclipped_training_output_equals_eval_output_with_the_old_running_stats():
    _, renorm = pair(r_max=1e6, d_max=1e6)
    renorm(batch(0)[0])  # move the running statistics away from (0, 1)
    x, _ = batch(1)
    renorm.eval()
    expected = renorm(x)
    renorm.train()
    torch.testing.assert_close(renorm(x), expected, atol=1e-10, rtol=0)


def test_r_and_d_are_constants_in_the_backward_pass():
    _, renorm = pair(r_max=10.0, d_max=10.0)
    renorm(batch(0)[0])
    x, dout = batch(1)
    running_mean = renorm.running_mean.reshape(1, 3, 1).clone()
    std = torch.sqrt(renorm.running_var + 1e-5).reshape(1, 3, 1)
    x1 = x.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(renorm(x1), x1, dout)
    # The same computation by autograd, r and d from the statistics before the step, detached:
    x2 = x.clone().requires_grad_(True)
    mean, var = x2.mean((0, 2), keepdim=True), x2.var((0, 2), unbiased=False, keepdim=True)
    std_b = torch.sqrt(var + 1e-5)
    r = (std_b / std).clamp(0.1, 10.0).detach()
    d = ((mean - running_mean) / std).clamp(-10, 10).detach()
    weight, bias = renorm.weight.reshape(1, 3, 1), renorm.bias.reshape(1, 3, 1)
    y = ((x2 - mean) / std_b * r + d) * weight + bias
    (dx_ref,) = torch.autograd.grad(y, x2, dout)
    torch.testing.assert_close(dx, dx_ref, atol=1e-10, rtol=0)


def test_limits_follow_the_warmup_schedule():
    renorm = BatchRenorm(2, r_max=3.0, d_max=5.0, warmup_steps=2, ramp_steps=4)
    limits = []
    for _ in range(8):
        limits.append(renorm.current_limits())
        renorm(torch.randn(4, 2))
    assert limits[:3] == [(1.0, 0.0)] * 3
    assert limits[4] == pytest.approx((2.0, 2.5))
    assert limits[6:] == [(3.0, 5.0)] * 2


def test_eval_mode_equals_batchnorm():
    plain, renorm = pair()
    x, _ = batch(0)
    plain(x)
    renorm(x)
    plain.eval()
    renorm.eval()
    torch.testing.assert_close(renorm(x), plain(x), atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [(dict(r_max=0.5), "expected r_max >= 1"), (dict(d_max=-1.0), "expected d_max >= 0"),
     (dict(warmup_steps=-1), "expected warmup_steps >= 0")],
)
def test_bad_limits_raise(kwargs, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        BatchRenorm(3, **kwargs)
