"""PopulationStatistics: BN whose training statistics cover the batch plus a fixed reference."""

import copy

import pytest
import torch
from torch import nn

from bncourse.nn import BatchNorm, PopulationStatistics

FLOAT64_ATOL = 1e-12
IN, HIDDEN, OUT = 5, 4, 3
BATCH, REFERENCE = 6, 20


def network(norm=nn.BatchNorm1d, **norm_kwargs) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), norm(HIDDEN, **norm_kwargs), nn.ReLU(),
                         nn.Linear(HIDDEN, OUT)).double()


def inputs(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN, generator=g, dtype=torch.float64) * 2 + shift


@pytest.fixture
def reference() -> torch.Tensor:
    return inputs(REFERENCE, seed=1)


@pytest.fixture
def batch() -> torch.Tensor:
    return inputs(BATCH, seed=2, shift=3.0)   # far from the reference: statistics differ


def test_eval_mode_equals_the_wrapped_network(reference, batch):
    net = network()
    net.train()(inputs(32, seed=3))             # non-trivial running statistics
    wrapped = PopulationStatistics(net, reference).eval()
    expected = copy.deepcopy(net).eval()(batch)
    torch.testing.assert_close(wrapped(batch), expected, atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("norm", [nn.BatchNorm1d, BatchNorm])
def test_training_output_is_the_batch_rows_of_the_network_on_batch_plus_reference(
    reference, batch, norm
):
    net = network(norm)
    plain = copy.deepcopy(net).train()
    out = PopulationStatistics(net, reference).train()(batch)
    expected = plain(torch.cat([batch, reference]))[:BATCH]
    assert out.shape == (BATCH, OUT)
    torch.testing.assert_close(out, expected, atol=FLOAT64_ATOL, rtol=0)


def test_bn_statistics_are_taken_over_batch_plus_reference(reference, batch):
    net = network(momentum=1.0)                 # running mean = the last step's mean
    PopulationStatistics(net, reference).train()(batch)
    linear, bn = net[0], net[1]
    with torch.no_grad():
        batch_sum, reference_sum = linear(batch).sum(0), linear(reference).sum(0)
        expected = (batch_sum + reference_sum) / (BATCH + REFERENCE)
        batch_only = batch_sum / BATCH
    torch.testing.assert_close(bn.running_mean, expected, atol=FLOAT64_ATOL, rtol=0)
    assert not torch.allclose(bn.running_mean, batch_only)


def test_reference_is_a_non_persistent_buffer(reference):
    wrapped = PopulationStatistics(network(), reference)
    assert "reference" in dict(wrapped.named_buffers())
    assert not any(k.endswith("reference") for k in wrapped.state_dict())
    assert set(wrapped.state_dict()) == {f"net.{k}" for k in network().state_dict()}


def test_reference_moves_with_to(reference):
    wrapped = PopulationStatistics(network().float(), reference.float()).to(torch.float64)
    assert wrapped.reference.dtype == torch.float64


def test_reference_is_a_copy_of_the_given_tensor(reference):
    wrapped = PopulationStatistics(network(), reference)
    before = wrapped.reference.clone()
    reference.add_(1.0)
    assert torch.equal(wrapped.reference, before)


@pytest.mark.parametrize(
    "bad",
    [[[0.0] * IN], torch.tensor(1.0), torch.zeros(0, IN)],
    ids=["list", "scalar", "empty"],
)
def test_bad_reference_raises(bad):
    with pytest.raises(ValueError, match="reference"):
        PopulationStatistics(network(), bad)


def test_training_input_shaped_unlike_the_reference_raises(reference):
    wrapped = PopulationStatistics(network(), reference).train()
    with pytest.raises(ValueError, match=r"like the reference \(got \(2, 7\)\)"):
        wrapped(torch.zeros(2, IN + 2, dtype=torch.float64))
