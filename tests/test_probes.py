"""bncourse.probes on tiny networks whose answers are known in closed form."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bncourse.models import mlp
from bncourse.probes import (
    gradient_change,
    gradient_variance,
    ics_gradient_change,
    loss_landscape_along_gradient,
    percentiles,
    record_gradients,
    record_percentiles,
    restored,
)

EXACT = 1e-12        # float64 arithmetic on a handful of numbers
ROUND_OFF = 1e-9     # float64 after a few matrix products


class Boom(Exception):
    pass


def known_linear():
    """y = 2 x + 1 elementwise on unit 0, y = -x on unit 1 (float64)."""
    layer = nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        layer.bias.copy_(torch.tensor([1.0, 0.0]))
    return layer


def ramp(n=101):
    """(n, 2): both columns 0, 1, ..., n - 1, so the p-th percentile of a column is p."""
    return torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 2)


def tiny_model(norm="none", seed=0):
    torch.manual_seed(seed)
    return mlp((5, 4), in_features=3, num_classes=2, norm=norm, activation="sigmoid").double()


def tiny_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,),
                                                                               generator=g)


def hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_state_equal(model, before):
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ---------------------------------------------------------------------------------------------
# percentiles and record_percentiles
# ---------------------------------------------------------------------------------------------


def test_percentiles_of_a_ramp_are_the_percentile_values():
    out = percentiles(ramp(), q=(15, 50, 85), unit=None)
    torch.testing.assert_close(out, torch.tensor([[15.0, 15.0], [50.0, 50.0], [85.0, 85.0]],
                                                 dtype=torch.float64), atol=EXACT, rtol=0)


def test_percentiles_match_numpy_interpolation():
    x = torch.randn(37, 4, dtype=torch.float64)
    expected = np.percentile(x.numpy(), [15, 50, 85], axis=0)
    np.testing.assert_allclose(percentiles(x, unit=None).numpy(), expected, atol=EXACT)


def test_percentiles_pool_spatial_positions_per_channel():
    x = torch.arange(2 * 3 * 5, dtype=torch.float64).reshape(2, 3, 5)
    expected = np.percentile(x.transpose(0, 1).reshape(3, -1).numpy(), [50], axis=1)
    np.testing.assert_allclose(percentiles(x, q=(50,), unit=None).numpy(), expected, atol=EXACT)


def test_record_percentiles_sees_the_known_linear_output():
    layer = known_linear()
    with record_percentiles(layer, q=(15, 50, 85), unit=0, where="output") as rec:
        layer(ramp())
    np.testing.assert_allclose(rec.as_array(), [[31.0, 101.0, 171.0]], atol=EXACT)  # 2 p + 1


def test_record_percentiles_of_input_and_several_units():
    layer = known_linear()
    with record_percentiles(layer, q=(50,), unit=[0, 1], where="input") as rec:
        layer(ramp())
        layer(2 * ramp())
    np.testing.assert_allclose(rec.as_array(), [[[50.0, 50.0]], [[100.0, 100.0]]], atol=EXACT)


def test_record_percentiles_removes_its_hook_on_exit():
    layer = known_linear()
    with record_percentiles(layer) as rec:
        layer(ramp())
    layer(ramp())
    assert len(rec) == 1 and hook_count(layer) == 0


def test_record_percentiles_removes_its_hook_when_the_body_raises():
    layer = known_linear()
    with pytest.raises(Boom), record_percentiles(layer):
        raise Boom
    assert hook_count(layer) == 0


@pytest.mark.parametrize("kwargs, error", [
    ({"q": (15, 150)}, ValueError),
    ({"q": "abc"}, TypeError),
    ({"unit": 0.5}, TypeError),
    ({"where": "middle"}, ValueError),
])
def test_record_percentiles_rejects_bad_arguments(kwargs, error):
    layer = known_linear()
    with pytest.raises(error), record_percentiles(layer, **kwargs):
        pass
    assert hook_count(layer) == 0


def test_percentiles_rejects_out_of_range_unit():
    with pytest.raises(ValueError, match="unit indices"):
        percentiles(ramp(), unit=2)


# ---------------------------------------------------------------------------------------------
# record_gradients
# ---------------------------------------------------------------------------------------------


def test_record_gradients_records_the_known_linear_gradient():
    layer = known_linear()
    x = ramp(3)
    with record_gradients(layer) as rec:
        layer(x).sum().backward()
    # d(sum)/dW[i, j] = sum_n x[n, j]; d(sum)/db[i] = N
    torch.testing.assert_close(rec.grads["weight"][0], torch.full((2, 2), 3.0,
                                                                  dtype=torch.float64))
    torch.testing.assert_close(rec.grads["bias"][0], torch.full((2,), 3.0, dtype=torch.float64))
    assert rec.flat().shape == (1, 6)


def test_record_gradients_removes_hooks_after_exit_and_after_an_exception():
    layer = known_linear()
    with pytest.raises(Boom), record_gradients(layer) as rec:
        layer(ramp(3)).sum().backward()
        raise Boom
    layer(ramp(3)).sum().backward()
    assert len(rec) == 1
    assert all(not p._backward_hooks for p in layer.parameters())


# ---------------------------------------------------------------------------------------------
# gradient_change
# ---------------------------------------------------------------------------------------------


def test_gradient_change_of_known_vectors():
    before = [torch.tensor([3.0, 0.0]), torch.tensor([0.0])]
    after = [torch.tensor([0.0, 0.0]), torch.tensor([4.0])]
    change = gradient_change(before, after)
    assert change.l2 == pytest.approx(5.0, abs=EXACT)
    assert change.cosine == pytest.approx(0.0, abs=EXACT)
    assert change.relative == pytest.approx(5.0 / 3.0, abs=EXACT)


def test_gradient_change_concatenates_before_the_cosine():
    # per-tensor cosines are 1 and -1 (mean 0); over the concatenated vector it is 8 / 10
    before = [torch.tensor([3.0]), torch.tensor([1.0])]
    after = [torch.tensor([3.0]), torch.tensor([-1.0])]
    assert gradient_change(before, after).cosine == pytest.approx(0.8, abs=EXACT)


def test_gradient_change_of_zero_gradient_has_nan_cosine():
    assert math.isnan(gradient_change([torch.zeros(2)], [torch.ones(2)]).cosine)


@pytest.mark.parametrize("before, after, error", [
    ([], [], ValueError),
    ([torch.zeros(2)], [torch.zeros(3)], ValueError),
    ([np.zeros(2)], [np.zeros(2)], TypeError),
])
def test_gradient_change_rejects_bad_input(before, after, error):
    with pytest.raises(error):
        gradient_change(before, after)


# ---------------------------------------------------------------------------------------------
# ics_gradient_change
# ---------------------------------------------------------------------------------------------


class TwoScalars(nn.Module):
    """f(x) = b * (a * x): the loss 0.5 * mean((f - y)^2) has gradients known by hand."""

    def __init__(self, a, b):
        super().__init__()
        self.first = nn.Linear(1, 1, bias=False).double()
        self.second = nn.Linear(1, 1, bias=False).double()
        with torch.no_grad():
            self.first.weight.fill_(a)
            self.second.weight.fill_(b)

    def forward(self, x):
        return self.second(self.first(x))


def half_mse(out, y):
    return 0.5 * ((out - y) ** 2).mean()


def test_ics_gradient_change_matches_hand_computation():
    a, b, lr = 1.0, 2.0, 0.1
    x, y = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[0.0]], dtype=torch.float64)
    model = TwoScalars(a, b)
    # r = a b x - y; dL/da = r b x, dL/db = r a x
    r = a * b - 0.0
    a_new = a - lr * r * b
    g_before, g_after = r * a, (a_new * b) * a_new
    change = ics_gradient_change(model, model.second, x, y, half_mse, lr)
    assert change.l2 == pytest.approx(abs(g_before - g_after), abs=EXACT)
    assert change.cosine == pytest.approx(1.0, abs=EXACT)  # scalars of the same sign


def test_ics_gradient_change_is_zero_without_earlier_update_effect():
    # a first layer with zero gradient (y equals the output) does not move: no shift at all
    model = TwoScalars(1.0, 2.0)
    x = torch.tensor([[1.0]], dtype=torch.float64)
    change = ics_gradient_change(model, "second", x, model(x).detach(), half_mse, 0.5)
    assert change.l2 == pytest.approx(0.0, abs=EXACT)


def test_ics_gradient_change_restores_parameters_buffers_and_grads():
    model = tiny_model("scratch")
    x, y = tiny_batch()
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    before = snapshot(model)
    ics_gradient_change(model, model.linear1, x, y, nn.functional.cross_entropy, 0.5)
    assert_state_equal(model, before)
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def test_ics_gradient_change_rejects_bad_input():
    model = tiny_model()
    x, y = tiny_batch()
    ce = nn.functional.cross_entropy
    with pytest.raises(ValueError, match="earlier layers"):
        ics_gradient_change(model, model.linear0, x, y, ce, 0.1)
    with pytest.raises(ValueError, match="lr > 0"):
        ics_gradient_change(model, model.linear1, x, y, ce, -0.1)
    with pytest.raises(ValueError, match="submodule"):
        ics_gradient_change(model, nn.Linear(2, 2), x, y, ce, 0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        ics_gradient_change(model, 3, x, y, ce, 0.1)
    with pytest.raises(ValueError, match="same N"):
        ics_gradient_change(model, model.linear1, x, y[:-1], ce, 0.1)


# ---------------------------------------------------------------------------------------------
# gradient_variance
# ---------------------------------------------------------------------------------------------


def test_gradient_variance_of_known_batches():
    # model f = w x with w = 0; loss = -mean(f * y) gives gradient -mean(x * y) per batch
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    xs = torch.tensor([[[1.0]], [[3.0]]], dtype=torch.float64)               # (B=2, n=1, 1)
    ys = torch.ones(2, 1, 1, dtype=torch.float64)
    result = gradient_variance(model, xs, ys, lambda out, y: -(out * y).mean())
    # gradients -1 and -3: mean -2, variance 1, relative 1 / 4
    assert result.variance == pytest.approx(1.0, abs=EXACT)
    assert result.mean_sq_norm == pytest.approx(4.0, abs=EXACT)
    assert result.relative == pytest.approx(0.25, abs=EXACT)


def test_gradient_variance_restores_the_model():
    model = tiny_model("scratch")
    xs, ys = tiny_batch(16)
    before = snapshot(model)
    gradient_variance(model, xs.reshape(2, 8, 3), ys.reshape(2, 8), nn.functional.cross_entropy,
                      layer="linear1")
    assert_state_equal(model, before)


# ---------------------------------------------------------------------------------------------
# loss_landscape_along_gradient
# ---------------------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """Holds w; with ``quadratic_loss`` the loss is 0.5 w^T A w, beta-smooth with beta = max eig."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def forward(self, x):
        return self.w


A = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))


def quadratic_loss(w, _y):
    return 0.5 * w @ A @ w


def test_landscape_of_a_quadratic_along_an_eigenvector():
    model = Quadratic([1.0, 0.0])                     # g = A w = 4 w, an eigenvector
    etas = [0.05, 0.1, 0.2]
    out = loss_landscape_along_gradient(model, torch.zeros(1), torch.zeros(1), quadratic_loss,
                                        etas)
    expected_losses = [0.5 * 4 * (1 - 4 * e) ** 2 for e in etas]       # w -> (1 - 4 eta) w
    np.testing.assert_allclose(out.losses, expected_losses, atol=EXACT)
    np.testing.assert_allclose(out.grad_changes, [16 * e for e in etas], atol=EXACT)  # eta A g
    assert out.beta == pytest.approx(4.0, abs=EXACT)
    assert out.grad_norm == pytest.approx(4.0, abs=EXACT)
    assert out.loss_range == pytest.approx(max(expected_losses) - min(expected_losses), abs=EXACT)


def test_effective_beta_of_a_quadratic_is_at_most_the_largest_eigenvalue():
    out = loss_landscape_along_gradient(Quadratic([1.0, 1.0]), torch.zeros(1), torch.zeros(1),
                                        quadratic_loss, [0.1])
    # g = (4, 1): ||A g|| / ||g|| = sqrt(257 / 17)
    assert out.beta == pytest.approx(math.sqrt(257 / 17), abs=EXACT)
    assert out.beta < 4.0


def test_landscape_restores_the_model():
    model = tiny_model("scratch")
    x, y = tiny_batch()
    before = snapshot(model)
    loss_landscape_along_gradient(model, x, y, nn.functional.cross_entropy, [0.1, 1.0])
    assert_state_equal(model, before)


def test_landscape_rejects_bad_step_sizes():
    model = Quadratic([1.0, 0.0])
    with pytest.raises(ValueError, match="step_sizes"):
        loss_landscape_along_gradient(model, torch.zeros(1), torch.zeros(1), quadratic_loss,
                                      [0.1, -0.1])
    with pytest.raises(ValueError, match="at least one"):
        loss_landscape_along_gradient(model, torch.zeros(1), torch.zeros(1), quadratic_loss, [])


def test_restored_restores_after_an_exception():
    model = tiny_model("scratch")
    before = snapshot(model)
    with pytest.raises(Boom), restored(model):
        with torch.no_grad():
            model.linear0.weight.add_(1.0)
        model(tiny_batch()[0])          # moves BN's running statistics
        model.eval()
        raise Boom
    assert_state_equal(model, before)
    assert model.training and model.norm0.training


def test_record_percentiles_filters_calls_by_batch_size():
    layer = known_linear()
    with record_percentiles(layer, q=(50,), unit=0, where="input") as rec:
        layer(ramp())
        layer(ramp(3))
    np.testing.assert_allclose(rec.as_array(batch_size=3), [[1.0]], atol=EXACT)
    assert rec.batch_sizes == [101, 3]


def test_record_percentiles_with_batch_size_skips_other_calls():
    layer = known_linear()
    with record_percentiles(layer, q=(50,), unit=0, batch_size=3) as rec:
        layer(ramp())
        layer(ramp(3))
    np.testing.assert_allclose(rec.as_array(), [[1.0]], atol=EXACT)
    assert rec.batch_sizes == [3]


def test_record_percentiles_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"), record_percentiles(known_linear(),
                                                                            batch_size=0):
        pass
