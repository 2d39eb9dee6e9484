"""DyT: the paper's formula, its learned parameters, no dependence on batch mates."""

import pytest
import torch

from bncourse.nn import DyT


def test_output_is_weight_times_tanh_of_alpha_x_plus_bias():
    torch.manual_seed(0)
    dyt = DyT(3, alpha_init=0.7).double()
    with torch.no_grad():
        dyt.weight.normal_()
        dyt.bias.normal_()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert abs(dyt.alpha.item() - 0.7) < 1e-7
    want = torch.tanh(dyt.alpha * x) * dyt.weight + dyt.bias
    torch.testing.assert_close(dyt(x), want, atol=1e-15, rtol=0)


def test_an_examples_output_does_not_depend_on_its_batch_mates():
    dyt = DyT(4)
    x = torch.randn(8, 4)
    torch.testing.assert_close(dyt(x)[:1], dyt(x[:1]))


def test_alpha_weight_and_bias_are_learned_and_pass_gradcheck():
    dyt = DyT(3).double()
    assert {n for n, _ in dyt.named_parameters()} == {"alpha", "weight", "bias"}
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dyt(t), (x,))


@pytest.mark.parametrize(("call", "phrase"), [
    (lambda: DyT(0), "expected num_features >= 1"),
    (lambda: DyT(3)(torch.randn(2, 4)), r"expected an input of shape \(\*, 3\)"),
])
def test_bad_arguments_raise_clear_errors(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()
