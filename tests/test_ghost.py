"""GhostBatchNorm: plain BN when one ghost batch covers the batch, else per-ghost statistics."""


import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bncourse.nn import BatchNorm, GhostBatchNorm

FLOAT64_ATOL = 1e-12


def pair(num_features=3, ghost=4, **kwargs):
    torch.manual_seed(0)
    plain = BatchNorm(num_features, **kwargs).double()
    ghost_bn = GhostBatchNorm(num_features, ghost, **kwargs).double()
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    ghost_bn.load_state_dict(plain.state_dict())
    return plain, ghost_bn


def step(module, x, dout):
    x = x.clone().requires_grad_(True)
    out = module(x)
    grads = torch.autograd.grad(out, [x, module.weight, module.bias], dout)
    return out, grads


@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 5)])
def test_equals_batchnorm_when_ghost_size_covers_the_batch(shape):
    plain, ghost = pair(ghost=shape[0])
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
        dout = torch.randn(shape, generator=g, dtype=torch.float64)
        (out_p, grads_p), (out_g, grads_g) = step(plain, x, dout), step(ghost, x, dout)
        torch.testing.assert_close(out_g, out_p, atol=FLOAT64_ATOL, rtol=0)
        for a, b in zip(grads_g, grads_p, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(ghost.state_dict()[k], v, atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("sizes", [(4, 4, 4), (4, 4, 2)])
def test_each_ghost_batch_is_normalized_with_its_own_statistics(sizes):
    plain, ghost = pair(ghost=sizes[0])
    x = torch.randn(sum(sizes), 3, dtype=torch.float64) * 3 + 2
    out = ghost(x)
    expected = torch.cat([plain(chunk) for chunk in x.split(sizes[0])])
    torch.testing.assert_close(out, expected, atol=FLOAT64_ATOL, rtol=0)


def test_running_statistics_come_from_the_whole_batch():
    _, ghost = pair(ghost=3, momentum=1.0)
    x = torch.randn(11, 3, dtype=torch.float64) * 2 + 5  # ghost batches of 3, 3, 3, 2
    ghost(x)
    torch.testing.assert_close(ghost.running_mean, x.mean(0), atol=FLOAT64_ATOL, rtol=0)
    torch.testing.assert_close(ghost.running_var, x.var(0, unbiased=True), atol=1e-10, rtol=0)


def test_ghost_noise_grows_as_ghost_batches_shrink():
    x = torch.randn(256, 1, dtype=torch.float64)
    probe = x[:1]
    spreads = []
    for ghost_size in (4, 64):
        bn = GhostBatchNorm(1, ghost_size, affine=False).double()
        outs = []
        for seed in range(200):  # the same example with different batch mates
            mates = x[1 + torch.randperm(255, generator=torch.Generator().manual_seed(seed))[:63]]
            outs.append(bn(torch.cat([probe, mates]))[0, 0])
        spreads.append(torch.stack(outs).std().item())
    assert spreads[0] > 3 * spreads[1]


def test_eval_mode_equals_batchnorm():
    plain, ghost = pair(ghost=2)
    x = torch.randn(6, 3, dtype=torch.float64)
    plain(x)
    ghost(x)
    plain.eval()
    ghost.eval()
    torch.testing.assert_close(ghost(x), plain(x), atol=FLOAT64_ATOL, rtol=0)


def test_ghost_batch_with_one_value_per_channel_raises():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        GhostBatchNorm(3, 4)(torch.randn(9, 3))  # last ghost batch: 1 example


@pytest.mark.parametrize("bad", [0, -2])
def test_a_ghost_batch_size_below_one_raises_value_error(bad):
    message = f"expected ghost_batch_size >= 1 (got ghost_batch_size={bad})"
    with pytest.raises(ValueError, match=re.escape(message)):
        GhostBatchNorm(3, bad)


@pytest.mark.parametrize("bad", [2.5, True, "2"])
def test_a_ghost_batch_size_that_is_not_an_int_raises_type_error(bad):
    with pytest.raises(TypeError, match="expected ghost_batch_size to be an int"):
        GhostBatchNorm(3, bad)


def test_state_dict_matches_torch_batchnorm():
    assert set(GhostBatchNorm(4, 2).state_dict()) == set(torch.nn.BatchNorm1d(4).state_dict())
    GhostBatchNorm(4, 2).load_state_dict(torch.nn.BatchNorm1d(4).state_dict())


@given(n=st.integers(2, 12), ghost_size=st.integers(2, 12), length=st.integers(1, 3))
def test_output_shape_and_per_ghost_zero_mean_for_any_split(n, ghost_size, length):
    bn = GhostBatchNorm(2, ghost_size, affine=False).double()
    x = torch.randn(n, 2, length, dtype=torch.float64) + 3
    chunks = x.split(ghost_size)
    if any(c.shape[0] * length < 2 for c in chunks):
        with pytest.raises(ValueError):
            bn(x)
        return
    out = bn(x)
    assert out.shape == x.shape
    for chunk in out.split(ghost_size):
        torch.testing.assert_close(chunk.mean((0, 2)), torch.zeros(2, dtype=torch.float64),
                                   atol=1e-9, rtol=0)


@pytest.mark.parametrize("shape", [(12, 3), (12, 3, 4)])
def test_vectorized_even_split_equals_ghost_by_ghost(shape):
    _, ghost = pair(ghost=4)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    dout = torch.randn(shape, dtype=torch.float64)
    results = []
    for normalize in (ghost._normalize_even_ghosts, ghost._normalize_chunks):
        out, means, variances = normalize(x)[:3]
        grads = torch.autograd.grad(out, [x, ghost.weight, ghost.bias], dout)
        results.append((out, means, variances, *grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
