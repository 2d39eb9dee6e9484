"""BN at initialization: gradient explosion with depth, and no rank collapse, with margins
measured over seeds (Yang et al. 2019; Daneshmand et al. 2020)."""

import math

import pytest
import torch

from bncourse.at_init import batch_stable_rank, deep_mlp, gradient_ratio, stable_rank

SEEDS = range(3)


def test_bn_gradients_grow_geometrically_with_depth():
    # measured (3 seeds): ~4 at depth 8, ~400 at depth 32: about 1.2x per layer
    for seed in SEEDS:
        shallow = gradient_ratio(8, norm=True, seed=seed)
        deep = gradient_ratio(32, norm=True, seed=seed)
        assert deep / shallow > 20
        assert math.log(deep / shallow) / 24 > math.log(1.1)


def test_without_bn_he_init_keeps_the_gradients_balanced():
    for seed in SEEDS:
        assert 0.3 < gradient_ratio(32, norm=False, seed=seed) < 3


@pytest.mark.parametrize(("linear", "with_bn_above", "without_bn_below"),
                         [(False, 2.5, 1.2), (True, 4.0, 3.0)])
def test_bn_keeps_a_deep_batch_from_collapsing_to_rank_one(linear, with_bn_above,
                                                           without_bn_below):
    # measured at depth 64: ReLU 3.0 with BN vs 1.01 without; linear ~6 vs ~1.6
    for seed in SEEDS:
        assert batch_stable_rank(64, norm=True, seed=seed, linear=linear) > with_bn_above
        assert batch_stable_rank(64, norm=False, seed=seed, linear=linear) < without_bn_below


def test_stable_rank_is_one_for_parallel_rows_and_the_rank_for_orthonormal_ones():
    assert stable_rank(torch.outer(torch.arange(1.0, 5.0), torch.ones(3))) == pytest.approx(1.0)
    assert stable_rank(torch.eye(4)) == pytest.approx(4.0)


def test_deep_mlp_layers_and_he_scale():
    net = deep_mlp(3, 64, norm=True, generator=torch.Generator().manual_seed(0))
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 3
    std = net[0].weight.std().item()
    assert abs(std - math.sqrt(2 / 64)) < 0.02


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda: deep_mlp(0, norm=True), "expected depth >= 1"),
    (lambda: stable_rank(torch.zeros(3, 2)), "non-zero matrix"),
    (lambda: stable_rank(torch.ones(3)), r"expected a non-empty \(B, D\) matrix"),
])
def test_bad_arguments_raise_clear_errors(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()
