"""bncourse.nn.RMSNorm against torch.nn.RMSNorm (the oracle), float64, and its input checks."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bncourse.nn import RMSNorm

FLOAT64_ATOL = 1e-12
FLOAT32_ATOL = 1e-6


def pair(normalized_shape, **kwargs):
    torch.manual_seed(0)
    ref = nn.RMSNorm(normalized_shape, **kwargs).double()
    ours = RMSNorm(normalized_shape, **kwargs).double()
    if ref.weight is not None:
        with torch.no_grad():
            ref.weight.normal_(1.0, 0.5)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize(("shape", "normalized_shape"), [
    ((4, 8), 8), ((3, 5, 8), (8,)), ((2, 3, 4, 5), (4, 5)), ((6,), 6)])
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_gradients_equal_torch(shape, normalized_shape, eps, affine):
    ref, ours = pair(normalized_shape, eps=eps, elementwise_affine=affine)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    dout = torch.randn(shape, dtype=torch.float64)
    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        params = [xi] + ([module.weight] if affine else [])
        results.append((out, torch.autograd.grad(out, params, dout)))
    torch.testing.assert_close(results[1][0], results[0][0], atol=FLOAT64_ATOL, rtol=0)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@given(batch=st.integers(1, 4), width=st.integers(1, 6), scale=st.floats(1e-3, 1e3),
       seed=st.integers(0, 2**16))
def test_float32_matches_torch_for_any_shape_and_scale(batch, width, scale, seed):
    ref, ours = nn.RMSNorm(width), RMSNorm(width)
    x = torch.randn(batch, 3, width, generator=torch.Generator().manual_seed(seed)) * scale
    torch.testing.assert_close(ours(x), ref(x), atol=FLOAT32_ATOL, rtol=1e-5)


def test_output_is_invariant_to_the_scale_of_its_input_but_not_to_a_shift():
    norm = RMSNorm(6).double()
    x = torch.randn(4, 6, dtype=torch.float64) + 2
    torch.testing.assert_close(norm(5 * x), norm(x), atol=1e-9, rtol=0)
    assert (norm(x + 1) - norm(x)).abs().max() > 1e-3      # no centring, unlike layer norm


def test_state_dict_interchanges_with_torch_and_names_the_weight():
    ref, ours = pair((3, 4))
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"]
    again = nn.RMSNorm((3, 4)).double()
    again.load_state_dict(ours.state_dict())
    torch.testing.assert_close(again.weight, ref.weight)


def test_half_input_is_computed_in_float32_and_returned_in_half():
    x = torch.randn(4, 16).to(torch.bfloat16)
    out = RMSNorm(16)(x)
    assert out.dtype == torch.bfloat16
    want = RMSNorm(16)(x.float())
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=1e-2)


def test_repr_names_the_arguments():
    assert repr(RMSNorm(8)) == "RMSNorm((8,), eps=None, elementwise_affine=True)"


@pytest.mark.parametrize(("call", "error", "phrase"), [
    (lambda: RMSNorm(8)(torch.randn(3, 7)), ValueError, "expected an input of shape (*, 8)"),
    (lambda: RMSNorm(8)(torch.ones(3, 8, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: RMSNorm(()), ValueError, "non-empty normalized_shape"),
    (lambda: RMSNorm(8, eps=-1.0), ValueError, "expected eps >= 0"),
])
def test_bad_input_raises_clear_errors(call, error, phrase):
    with pytest.raises(error, match=phrase.replace("(", r"\(").replace(")", r"\)").replace(
            "*", r"\*")):
        call()
