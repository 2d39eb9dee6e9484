"""precise_bn: re-estimated statistics recover a known population; the model is left as found."""

import pytest
import torch
from torch import nn

from bncourse.nn import BatchNorm, precise_bn

TRUE_MEAN = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
TRUE_STD = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
NUM_BATCHES, BATCH = 200, 64
STANDARD_ERRORS = 5  # tolerance, in standard errors of the estimate


def population_batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(NUM_BATCHES, BATCH, 3, generator=g, dtype=torch.float64)
    return noise * TRUE_STD + TRUE_MEAN


@pytest.mark.parametrize("make", [lambda: BatchNorm(3), lambda: nn.BatchNorm1d(3)])
def test_recovers_population_statistics_of_a_known_distribution(make):
    bn = make().double()
    model = nn.Sequential(bn).eval()
    precise_bn(model, population_batches())
    n = NUM_BATCHES * BATCH
    mean_error = STANDARD_ERRORS * TRUE_STD / n**0.5
    var_error = STANDARD_ERRORS * TRUE_STD**2 * (2 / (n - 1)) ** 0.5
    assert torch.all((bn.running_mean - TRUE_MEAN).abs() < mean_error)
    assert torch.all((bn.running_var - TRUE_STD**2).abs() < var_error)


def test_beats_the_moving_average_after_a_distribution_shift():
    bn = BatchNorm(3, momentum=0.01).double()
    model = nn.Sequential(bn)
    for xb in population_batches(1)[:50]:  # training saw shifted data first
        model(xb + 5)
    precise_bn(model, population_batches(2))
    assert torch.all((bn.running_mean - TRUE_MEAN).abs() < 0.05)


def test_restores_momentum_and_modes_and_turns_dropout_off():
    bn = BatchNorm(3, momentum=0.3).double()
    dropout = nn.Dropout(0.9)
    model = nn.Sequential(dropout, bn).eval()
    precise_bn(model, population_batches())
    assert bn.momentum == 0.3 and not model.training and not bn.training
    # with dropout on, the variance would be inflated about 10x
    assert torch.all(bn.running_var < 1.5 * TRUE_STD**2)


def test_leaves_buffers_unchanged_when_it_fails():
    bn = BatchNorm(3).double()
    model = nn.Sequential(bn)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with pytest.raises(ValueError, match="at least one batch"):
        precise_bn(model, [])
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_requires_a_batchnorm_with_running_statistics():
    with pytest.raises(ValueError, match="expected a model with batch norm"):
        precise_bn(nn.Sequential(nn.Linear(2, 2)), [torch.randn(4, 2)])
