"""The numpy reference against PyTorch (oracle), numerical gradients, and its input checks."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from bncourse.functional import (
    batchnorm_backward,
    batchnorm_backward_compact,
    batchnorm_forward,
    groupnorm_backward,
    groupnorm_forward,
    layernorm_backward,
    layernorm_forward,
    norm_axes,
    normalize,
    normalize_backward,
    update_running_average,
)
from bncourse.gradcheck import numerical_gradient, rel_error

FLOAT64_ATOL = 1e-12          # numpy vs torch, both float64: differences are round-off only
NUMERICAL_GRAD_ATOL = 1e-8    # central differences in float64 with h=1e-5
SHAPES = [(8, 3), (5, 3, 7), (4, 3, 2, 5)]


def make_case(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    channel_scale = rng.uniform(0.1, 5.0, size=(1, c) + (1,) * (len(shape) - 2))
    x = rng.normal(2.0, 3.0, size=shape) * channel_scale
    gamma = rng.normal(1.0, 0.5, size=c)
    beta = rng.normal(0.0, 1.0, size=c)
    dout = rng.normal(size=shape)
    return x, gamma, beta, dout


def torch_bn(x, gamma, beta, rm=None, rv=None, *, training, momentum=0.1, eps=1e-5):
    t = {k: None if v is None else torch.from_numpy(v) for k, v in
         dict(x=x, gamma=gamma, beta=beta, rm=rm, rv=rv).items()}
    out = F.batch_norm(t["x"], t["rm"], t["rv"], t["gamma"], t["beta"],
                       training=training, momentum=momentum, eps=eps)
    return out.numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_matches_torch(shape):
    x, gamma, beta, _ = make_case(shape)
    out, _ = batchnorm_forward(x, gamma, beta, training=True)
    np.testing.assert_allclose(out, torch_bn(x, gamma, beta, training=True), atol=FLOAT64_ATOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
def test_running_statistics_follow_torch_rule(shape, momentum):
    x, gamma, beta, _ = make_case(shape)
    rng = np.random.default_rng(1)
    rm, rv = rng.normal(size=shape[1]), rng.uniform(0.5, 2.0, size=shape[1])
    rm_t, rv_t = rm.copy(), rv.copy()
    batchnorm_forward(x, gamma, beta, training=True, running_mean=rm, running_var=rv,
                      momentum=momentum)
    torch_bn(x, gamma, beta, rm_t, rv_t, training=True, momentum=momentum)  # updates in place
    np.testing.assert_allclose(rm, rm_t, atol=FLOAT64_ATOL)
    np.testing.assert_allclose(rv, rv_t, atol=FLOAT64_ATOL)


def test_running_var_stores_unbiased_batch_variance():
    x, gamma, beta, _ = make_case((6, 2))
    rm, rv = np.zeros(2), np.ones(2)
    batchnorm_forward(x, gamma, beta, training=True, running_mean=rm, running_var=rv, momentum=1.0)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), atol=FLOAT64_ATOL)


def test_training_normalizes_with_biased_variance():
    x, _, _, _ = make_case((6, 2))
    out, cache = batchnorm_forward(x, None, None, training=True, eps=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1.0, atol=1e-9)  # ddof=0: exactly 1
    np.testing.assert_allclose(cache["var"].ravel(), x.var(axis=0), atol=FLOAT64_ATOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_forward_uses_running_statistics_like_torch(shape):
    x, gamma, beta, _ = make_case(shape)
    rng = np.random.default_rng(2)
    rm, rv = rng.normal(size=shape[1]), rng.uniform(0.5, 2.0, size=shape[1])
    out, _ = batchnorm_forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv)
    np.testing.assert_allclose(out, torch_bn(x, gamma, beta, rm, rv, training=False),
                               atol=FLOAT64_ATOL)


def test_eval_forward_leaves_running_statistics_unchanged():
    x, gamma, beta, _ = make_case((5, 3))
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    batchnorm_forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_compact])
def test_backward_matches_torch_autograd(shape, backward):
    x, gamma, beta, dout = make_case(shape)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    F.batch_norm(xt, None, None, gt, bt, training=True).backward(torch.from_numpy(dout))
    _, cache = batchnorm_forward(x, gamma, beta, training=True)
    dx, dgamma, dbeta = backward(dout, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("shape", [(4, 2), (3, 2, 3)])
@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_compact])
def test_backward_matches_numerical_gradient_with_random_upstream(shape, backward):
    x, gamma, beta, dout = make_case(shape, seed=3)
    _, cache = batchnorm_forward(x, gamma, beta, training=True)
    dx, dgamma, dbeta = backward(dout, cache)

    def out_of(x_=x, g=gamma, b=beta):
        return batchnorm_forward(x_, g, b, training=True)[0]

    num_dx = numerical_gradient(lambda v: out_of(x_=v), x.copy(), dout)
    num_dgamma = numerical_gradient(lambda v: out_of(g=v), gamma.copy(), dout)
    num_dbeta = numerical_gradient(lambda v: out_of(b=v), beta.copy(), dout)
    np.testing.assert_allclose(dx, num_dx, atol=NUMERICAL_GRAD_ATOL)
    np.testing.assert_allclose(dgamma, num_dgamma, atol=NUMERICAL_GRAD_ATOL)
    np.testing.assert_allclose(dbeta, num_dbeta, atol=NUMERICAL_GRAD_ATOL)


@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_compact])
def test_eval_backward_treats_statistics_as_constants(backward):
    x, gamma, beta, dout = make_case((5, 3, 2))
    rm, rv = np.zeros(3), np.full(3, 4.0)
    _, cache = batchnorm_forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv)
    dx, _, _ = backward(dout, cache)
    expected = dout * (gamma / np.sqrt(4.0 + 1e-5)).reshape(1, 3, 1)
    np.testing.assert_allclose(dx, expected, atol=FLOAT64_ATOL)


def test_dx_sums_to_zero_per_channel_in_training():
    # Why an all-ones upstream gradient hides bugs: the true dx is then exactly zero.
    x, gamma, beta, dout = make_case((6, 3, 4))
    _, cache = batchnorm_forward(x, gamma, beta, training=True)
    dx, _, _ = batchnorm_backward_compact(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=(0, 2)), 0.0, atol=1e-10)
    dx_ones, _, _ = batchnorm_backward_compact(np.ones_like(dout), cache)
    np.testing.assert_allclose(dx_ones, 0.0, atol=1e-10)


def test_staged_and_compact_backward_agree_to_round_off():
    x, gamma, beta, dout = make_case((64, 5, 3), seed=7)
    _, cache = batchnorm_forward(x, gamma, beta, training=True)
    for a, b in zip(batchnorm_backward(dout, cache), batchnorm_backward_compact(dout, cache),
                    strict=True):
        assert rel_error(a, b) < 1e-9


def test_nan_input_propagates_to_its_channel_only_like_torch():
    x, gamma, beta, _ = make_case((6, 3))
    x[2, 1] = np.nan
    out, _ = batchnorm_forward(x, gamma, beta, training=True)
    expected = torch_bn(x, gamma, beta, training=True)
    assert np.isnan(out[:, 1]).all() and np.isnan(expected[:, 1]).all()
    np.testing.assert_allclose(out[:, [0, 2]], expected[:, [0, 2]], atol=FLOAT64_ATOL)


@given(
    n=st.integers(2, 6), c=st.integers(1, 4), spatial=st.lists(st.integers(1, 3), max_size=2),
    training=st.booleans(), affine=st.booleans(), seed=st.integers(0, 2**16),
)
def test_forward_and_backward_agree_with_torch_for_any_shape_and_mode(
    n, c, spatial, training, affine, seed
):
    shape = (n, c, *spatial)
    x, gamma, beta, dout = make_case(shape, seed)
    if not affine:
        gamma = beta = None
    rng = np.random.default_rng(seed)
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)
    rm_t, rv_t = rm.copy(), rv.copy()
    out, cache = batchnorm_forward(x, gamma, beta, training=training, running_mean=rm,
                                   running_var=rv)
    np.testing.assert_allclose(out, torch_bn(x, gamma, beta, rm_t, rv_t, training=training),
                               atol=1e-10)
    np.testing.assert_allclose(rv, rv_t, atol=1e-10)
    staged, compact = batchnorm_backward(dout, cache), batchnorm_backward_compact(dout, cache)
    for a, b in zip(staged, compact, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        (dict(x=np.ones(4)), ValueError, "expected 2D or higher input"),
        (dict(x=np.ones((1, 3))), ValueError, "more than 1 value per channel"),
        (dict(x=np.ones((4, 3), dtype=np.int64)), TypeError, "floating dtype"),
        (dict(x=[[1.0, 2.0]]), TypeError, "numpy array"),
        (dict(gamma=np.ones(2)), ValueError, "expected gamma of shape (3,)"),
        (dict(eps=0.0), ValueError, "expected eps > 0"),
        (dict(eps=-1e-5), ValueError, "expected eps > 0"),
        (dict(momentum=1.5), ValueError, "expected momentum in [0, 1]"),
        (dict(momentum=-0.1), ValueError, "expected momentum in [0, 1]"),
        (dict(momentum=None), TypeError, "got None"),
        (dict(training=False), ValueError, "running_mean and running_var in eval mode"),
        (dict(running_mean=np.zeros(3)), ValueError, "both given or both None"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, error, phrase):
    args = dict(x=np.random.default_rng(0).normal(size=(4, 3)), gamma=np.ones(3),
                beta=np.zeros(3), training=True)
    args.update(kwargs)
    x, gamma, beta = args.pop("x"), args.pop("gamma"), args.pop("beta")
    with pytest.raises(error, match=re.escape(phrase)):
        batchnorm_forward(x, gamma, beta, **args)


def test_one_value_per_channel_is_fine_in_eval_mode():
    out, _ = batchnorm_forward(np.ones((1, 3)), None, None, training=False,
                               running_mean=np.zeros(3), running_var=np.ones(3))
    assert out.shape == (1, 3)


def test_update_running_average_is_torchs_rule_in_place():
    running = np.array([1.0, -2.0])
    out = update_running_average(running, np.array([3.0, 4.0]), 0.25)
    assert out is running
    np.testing.assert_allclose(running, [0.75 * 1.0 + 0.25 * 3.0, 0.75 * -2.0 + 0.25 * 4.0])



# --- the normalization family: layer, group and instance norm against PyTorch ---------------


def torch_grads(fn, x, params, dout):
    """Output and gradients of ``fn(x, *params)`` by torch autograd, float64, as numpy."""
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, *params)]
    out = fn(*tensors)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize(("shape", "normalized_ndim"),
                         [(s, k) for s in SHAPES for k in (1, 2) if k < len(s)])
def test_layernorm_forward_and_backward_equal_torch(shape, normalized_ndim):
    rng = np.random.default_rng(1)
    x, _, _, dout = make_case(shape)
    param_shape = shape[len(shape) - normalized_ndim:]
    gamma, beta = rng.normal(1, 0.5, param_shape), rng.normal(0, 1, param_shape)
    out, cache = layernorm_forward(x, gamma, beta, normalized_ndim)
    want, grads = torch_grads(lambda t, g, b: F.layer_norm(t, param_shape, g, b), x,
                              (gamma, beta), dout)
    np.testing.assert_allclose(out, want, atol=FLOAT64_ATOL)
    for got, expected in zip(layernorm_backward(dout, cache), grads, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", ["one", "all"])
def test_groupnorm_forward_and_backward_equal_torch(shape, groups):
    x, gamma, beta, dout = make_case((shape[0], 6, *shape[2:]))
    num_groups = {"one": 1, "all": 6}[groups]
    out, cache = groupnorm_forward(x, gamma, beta, num_groups)
    want, grads = torch_grads(lambda t, g, b: F.group_norm(t, num_groups, g, b), x,
                              (gamma, beta), dout)
    np.testing.assert_allclose(out, want, atol=FLOAT64_ATOL)
    for got, expected in zip(groupnorm_backward(dout, cache), grads, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-10)


def test_groupnorm_with_one_group_per_channel_is_instance_norm():
    x, gamma, beta, _ = make_case((4, 3, 9))
    out, _ = groupnorm_forward(x, gamma, beta, num_groups=3)
    want = F.instance_norm(torch.from_numpy(x), weight=torch.from_numpy(gamma),
                           bias=torch.from_numpy(beta)).numpy()
    np.testing.assert_allclose(out, want, atol=FLOAT64_ATOL)


@pytest.mark.parametrize(("kind", "torch_fn"), [
    ("batch", lambda t: F.batch_norm(t, None, None, training=True)),
    ("layer", lambda t: F.layer_norm(t, t.shape[1:])),
    ("instance", lambda t: F.instance_norm(t)),
])
def test_one_standardization_over_different_axes_is_each_norm(kind, torch_fn):
    x, *_ = make_case((5, 4, 6))
    x_hat, _ = normalize(x, norm_axes(kind, x.ndim))
    np.testing.assert_allclose(x_hat, torch_fn(torch.from_numpy(x)).numpy(), atol=FLOAT64_ATOL)


def test_group_axes_normalize_the_grouped_view():
    x, *_ = make_case((5, 4, 6))
    grouped = x.reshape(5, 2, 2, 6)
    x_hat, _ = normalize(grouped, norm_axes("group", grouped.ndim))
    want = F.group_norm(torch.from_numpy(x), 2).numpy()
    np.testing.assert_allclose(x_hat.reshape(x.shape), want, atol=FLOAT64_ATOL)


@given(n=st.integers(1, 4), c=st.integers(1, 4), length=st.integers(2, 6),
       seed=st.integers(0, 2**16))
def test_normalize_backward_matches_numerical_gradients(n, c, length, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, (n, c, length))
    dx_hat = rng.normal(size=x.shape)
    axes = (1, 2)
    _, cache = normalize(x, axes)
    numeric = numerical_gradient(lambda v: normalize(v, axes)[0], x.copy(), dx_hat)
    np.testing.assert_allclose(normalize_backward(dx_hat, cache), numeric, rtol=1e-5,
                               atol=NUMERICAL_GRAD_ATOL)


def test_layernorm_without_affine_returns_no_gamma_gradient():
    x, _, _, dout = make_case((4, 5))
    out, cache = layernorm_forward(x, None, None)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    assert dgamma is None and dbeta.shape == (5,) and dx.shape == x.shape


@pytest.mark.parametrize(("call", "error", "phrase"), [
    (lambda x: groupnorm_forward(x, None, None, num_groups=4), ValueError,
     "expected num_groups >= 1 dividing the 6 channels (got 4)"),
    (lambda x: groupnorm_forward(x, np.ones(5), None, num_groups=2), ValueError,
     "expected gamma of shape (6,) (got (5,))"),
    (lambda x: layernorm_forward(x, np.ones(3), None), ValueError,
     "expected gamma of shape (7,) (got (3,))"),
    (lambda x: layernorm_forward(x, None, None, normalized_ndim=4), ValueError,
     "expected 1 <= normalized_ndim <= x.ndim = 3 (got 4)"),
    (lambda x: norm_axes("weight", 3), ValueError, "expected kind to be one of"),
    (lambda x: layernorm_forward(x.astype(int), None, None), TypeError, "floating dtype"),
])
def test_bad_normalization_arguments_raise_clear_errors(call, error, phrase):
    with pytest.raises(error, match=re.escape(phrase)):
        call(make_case((2, 6, 7))[0])
