"""bncourse.nn.BatchNorm against torch.nn.BatchNorm1d/2d/3d (the oracle) and gradcheck."""

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bncourse.nn import (
    BatchNorm,
    BatchRenorm,
    GhostBatchNorm,
    NoisyBatchNorm,
    SyncBatchNorm,
    batch_norm_train,
)

FLOAT64_ATOL = 1e-12   # same maths in float64: only round-off differs
SECOND_ORDER_ATOL = 1e-9   # second derivatives sum over many more terms: more round-off
FLOAT32_ATOL = 1e-5
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
SHAPES = [(8, 4), (6, 4, 5), (3, 4, 5, 2), (2, 4, 3, 2, 2)]


def make_pair(ndim, seed=0, **kwargs):
    """A torch reference module and ours, with equal random parameters, in float64."""
    torch.manual_seed(seed)
    ref = TORCH_BN[ndim](4, **kwargs).double()
    if ref.affine:
        with torch.no_grad():
            ref.weight.normal_(1.0, 0.5)
            ref.bias.normal_()
    ours = BatchNorm(4, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def random_input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=g, dtype=torch.float64)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1) * (scale + 0.1)


def assert_same_step(ref, ours, x, seed=0):
    """One forward/backward with a random upstream gradient: outputs, gradients, buffers."""
    dout = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    outs, grads = [], []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        params = [xi] + ([module.weight, module.bias] if module.affine else [])
        grads.append(torch.autograd.grad(out, params, dout))
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], atol=FLOAT64_ATOL, rtol=0)
    for g_ours, g_ref in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)
    for (name, b_ref), (_, b_ours) in zip(ref.named_buffers(), ours.named_buffers(),
                                          strict=True):
        torch.testing.assert_close(b_ours, b_ref, atol=FLOAT64_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_training_steps_match_torch(shape, momentum):
    ref, ours = make_pair(len(shape), momentum=momentum)
    for step in range(3):
        assert_same_step(ref, ours, random_input(shape, step), seed=step)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_eval_after_training_matches_torch(shape, momentum):
    ref, ours = make_pair(len(shape), momentum=momentum)
    for step in range(3):
        ref(random_input(shape, step))
        ours(random_input(shape, step))
    ref.eval()
    ours.eval()
    assert_same_step(ref, ours, random_input(shape, 99))


@pytest.mark.parametrize("shape", SHAPES)
def test_affine_off_matches_torch(shape):
    ref, ours = make_pair(len(shape), affine=False)
    assert ours.weight is None and ours.bias is None
    assert_same_step(ref, ours, random_input(shape, 1))
    ref.eval()
    ours.eval()
    assert_same_step(ref, ours, random_input(shape, 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_tracking_off_uses_batch_statistics_in_eval_like_torch(shape):
    ref, ours = make_pair(len(shape), track_running_stats=False)
    assert ours.running_mean is None and ours.num_batches_tracked is None
    ref.eval()
    ours.eval()
    assert_same_step(ref, ours, random_input(shape, 3))


def test_momentum_none_is_cumulative_average_of_batches():
    bn = BatchNorm(3, momentum=None).double()
    xs = [random_input((10, 3), seed) for seed in range(4)]
    for x in xs:
        bn(x)
    expected_mean = torch.stack([x.mean(0) for x in xs]).mean(0)
    expected_var = torch.stack([x.var(0, unbiased=True) for x in xs]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean, atol=FLOAT64_ATOL, rtol=0)
    torch.testing.assert_close(bn.running_var, expected_var, atol=FLOAT64_ATOL, rtol=0)
    assert bn.num_batches_tracked.item() == 4


def test_running_var_is_unbiased_while_normalization_is_biased():
    bn = BatchNorm(2, momentum=1.0, affine=False).double()
    x = random_input((5, 2), 0)
    out = bn(x)
    torch.testing.assert_close(bn.running_var, x.var(0, unbiased=True), atol=FLOAT64_ATOL, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(2, dtype=torch.float64),
                               atol=1e-4, rtol=0)  # 1 - eps / var


def test_eval_does_not_change_buffers():
    bn = BatchNorm(3)
    bn(torch.randn(8, 3))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.eval()
    bn(torch.randn(8, 3))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
def test_state_dict_loads_into_torch_and_back(ndim):
    ref, ours = make_pair(ndim)
    shape = SHAPES[ndim - 2]
    for step in range(2):
        ours(random_input(shape, step))
    other = TORCH_BN[ndim](4).double()
    other.load_state_dict(ours.state_dict())
    back = BatchNorm(4).double()
    back.load_state_dict(other.state_dict())
    assert set(ours.state_dict()) == set(other.state_dict())
    for k in ours.state_dict():
        assert torch.equal(back.state_dict()[k], ours.state_dict()[k]), k
    other.eval()
    back.eval()
    x = random_input(shape, 9)
    torch.testing.assert_close(back(x), other(x), atol=FLOAT64_ATOL, rtol=0)


def test_old_checkpoint_without_num_batches_tracked_loads():
    state = BatchNorm(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    bn = BatchNorm(3)
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("shape", [(4, 3), (3, 3, 4), (2, 3, 2, 3)])
def test_gradcheck_training_mode(shape):
    bn = BatchNorm(3).double()
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    x = random_input(shape, 0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x_, w, b: batch_norm_train(x_, w, b, 1e-5)[0],
                                    (x, bn.weight, bn.bias))


def test_gradcheck_eval_mode():
    bn = BatchNorm(3).double()
    bn(random_input((6, 3), 0))
    bn.eval()
    x = random_input((4, 3, 2), 1).requires_grad_(True)
    assert torch.autograd.gradcheck(bn, (x,))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradgradcheck_in_float64(train):
    bn = BatchNorm(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    bn(random_input((6, 3, 2), 0))
    bn.train(train)
    x = random_input((4, 3, 2), 1).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: bn(x), (x,))
    assert torch.autograd.gradgradcheck(lambda w, b: torch.func.functional_call(
        bn, {"weight": w, "bias": b}, (x.detach(),)), (bn.weight.detach().clone().requires_grad_(),
                                                     bn.bias.detach().clone().requires_grad_()))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_second_derivatives_equal_torchs(train):
    ref, ours = make_pair(3)
    ref.train(train), ours.train(train)
    x = random_input((6, 4, 5), 0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    second = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        (dx,) = torch.autograd.grad((module(xi) * g).sum(), xi, create_graph=True)
        second.append(torch.autograd.grad(dx.pow(2).sum(), (xi, module.weight),
                                          allow_unused=True))    # eval: dx does not depend on x
    for a, b in zip(*second, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, atol=SECOND_ORDER_ATOL, rtol=0)


def test_vmap_over_independent_batches_equals_a_loop():
    bn = BatchNorm(4, track_running_stats=False).double()
    xs = random_input((5, 6, 4, 3), 0)                     # 5 independent batches
    looped = torch.stack([bn(x) for x in xs])
    torch.testing.assert_close(torch.func.vmap(bn)(xs), looped, atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("vectorize", [True, False])
def test_jacobians_equal_torchs(vectorize):
    ref, ours = make_pair(2, track_running_stats=False)
    x = random_input((5, 4), 0)
    j_ref = torch.autograd.functional.jacobian(ref, x, vectorize=vectorize)
    j_ours = torch.autograd.functional.jacobian(ours, x, vectorize=vectorize)
    torch.testing.assert_close(j_ours, j_ref, atol=FLOAT64_ATOL, rtol=0)
    torch.testing.assert_close(torch.func.jacrev(ours)(x), j_ref, atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_forward_mode_jvp_equals_torchs(train):
    # training without running statistics: their in-place update cannot run under a transform
    ref, ours = make_pair(3, track_running_stats=not train)
    ref.train(train), ours.train(train)
    x, t = random_input((6, 4, 5), 0), random_input((6, 4, 5), 1)
    params = {n: p.detach() for n, p in ref.named_parameters()}
    tangents = {n: torch.randn_like(p) for n, p in params.items()}
    out = []
    for module in (ref, ours):
        def f(x, p, module=module):
            return torch.func.functional_call(module, p, (x,))
        out.append(torch.func.jvp(f, (x, params), (t, tangents)))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(b, a, atol=FLOAT64_ATOL, rtol=0)


def test_forward_tangent_on_running_statistics_raises_in_training_like_torch():
    ref, ours = make_pair(2)
    x, t = random_input((6, 4), 0), torch.ones(4, dtype=torch.float64)
    for module in (ref, ours):
        def f(r, module=module):
            return torch.func.functional_call(module, {"running_mean": r}, (x,))
        with pytest.raises(RuntimeError, match="in-place"):
            torch.func.jvp(f, (module.running_mean.clone(),), (t,))


def test_float32_forward_and_backward_close_to_torch():
    torch.manual_seed(0)
    ref, ours = nn.BatchNorm1d(16), BatchNorm(16)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(64, 16, 10) * 5 + 3
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    dout = torch.randn_like(x)
    ref(xa).backward(dout)
    out = ours(xb)
    out.backward(dout)
    torch.testing.assert_close(out, ref(x), atol=FLOAT32_ATOL, rtol=0)
    torch.testing.assert_close(xb.grad, xa.grad, atol=FLOAT32_ATOL, rtol=0)
    assert out.dtype == torch.float32


@given(
    n=st.integers(2, 5), spatial=st.lists(st.integers(1, 3), max_size=3),
    momentum=st.sampled_from([0.1, 0.5, None, 0.0, 1.0]), affine=st.booleans(),
    track=st.booleans(), training=st.booleans(), seed=st.integers(0, 2**16),
)
def test_matches_torch_for_any_shape_and_mode(n, spatial, momentum, affine, track, training, seed):
    shape = (n, 4, *spatial)
    ref, ours = make_pair(len(shape), seed=seed, momentum=momentum, affine=affine,
                          track_running_stats=track)
    ref.train(training)
    ours.train(training)
    assert_same_step(ref, ours, random_input(shape, seed), seed=seed)


@pytest.mark.parametrize(
    ("x", "error", "phrase"),
    [
        (torch.randn(4), ValueError, "expected 2D or higher input"),
        (torch.randn(4, 5), ValueError, "expected input with 3 channels in dim 1 (got 5"),
        (torch.randn(1, 3), ValueError, "expected more than 1 value per channel when training"),
        (torch.randn(1, 3, 1), ValueError, "expected more than 1 value per channel"),
        (torch.ones(4, 3, dtype=torch.long), TypeError, "expected a floating-point input"),
        ([[1.0, 2.0, 3.0]], TypeError, "expected a torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_error(x, error, phrase):
    with pytest.raises(error, match=re.escape(phrase)):
        BatchNorm(3)(x)


def test_one_value_per_channel_is_fine_in_eval_mode():
    bn = BatchNorm(3).eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        (dict(eps="1e-5"), TypeError, "expected eps to be a float"),
        (dict(momentum=1.5), ValueError, "expected momentum in [0, 1] (got momentum=1.5)"),
        (dict(momentum=-0.1), ValueError, "expected momentum in [0, 1]"),
        (dict(num_features=0), ValueError, "expected num_features >= 1 (got num_features=0)"),
        (dict(num_features=2.0), TypeError, "expected num_features to be an int"),
    ],
)
def test_bad_construction_arguments_raise(kwargs, error, phrase):
    args = dict(num_features=3)
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(phrase)):
        BatchNorm(**args)


def test_nan_input_propagates_to_its_channel_like_torch():
    # Documented choice: like torch, NaN is propagated (never silently replaced) rather than
    # reported; it poisons that channel's batch statistics and running statistics.
    ref, ours = make_pair(2)
    x = random_input((6, 4), 0)
    x[1, 2] = float("nan")
    out_ref, out_ours = ref(x), ours(x)
    assert torch.isnan(out_ours[:, 2]).all() and torch.isnan(out_ref[:, 2]).all()
    assert torch.isnan(ours.running_mean[2]) and torch.isnan(ref.running_mean[2])
    keep = [0, 1, 3]
    torch.testing.assert_close(out_ours[:, keep], out_ref[:, keep], atol=FLOAT64_ATOL, rtol=0)


def test_repr_names_the_arguments():
    assert repr(BatchNorm(3, momentum=None)) == (
        "BatchNorm(3, eps=1e-05, momentum=None, affine=True, track_running_stats=True)")


def test_parameters_and_buffers_have_torch_names_and_roles():
    bn = BatchNorm(5)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == [
        "running_mean", "running_var", "num_batches_tracked"]


# --- behaviour matched to torch 2.13 (issue 13, items 1-5) ----------------------------------


def test_bias_false_keeps_the_weight_and_drops_the_bias_like_torch():
    ours, ref = BatchNorm(4, bias=False).double(), nn.BatchNorm1d(4, bias=False).double()
    assert ours.bias is None and ours.weight.shape == (4,)
    assert list(ours.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
    ref.load_state_dict(ours.state_dict())
    x = random_input((16, 4, 3), 0)
    torch.testing.assert_close(ours(x), ref(x), atol=FLOAT64_ATOL, rtol=0)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=FLOAT64_ATOL, rtol=0)


def test_bias_is_keyword_only_like_torch():
    with pytest.raises(TypeError):
        BatchNorm(4, 1e-5, 0.1, True, True, None, None, False)


def test_empty_batch_in_training_counts_the_step_and_keeps_the_running_statistics():
    ref, ours = make_pair(2)
    x_ours = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    x_ref = x_ours.detach().clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    assert out_ours.shape == out_ref.shape == (0, 4)
    out_ours.sum().backward()
    out_ref.sum().backward()
    assert x_ours.grad.shape == (0, 4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    assert int(ours.num_batches_tracked) == 1


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_eps_is_accepted_at_construction_and_checked_in_training_like_torch(eps):
    ours, ref = BatchNorm(3, eps=eps), nn.BatchNorm1d(3, eps=eps)
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match="eps"):
        ref(x)
    with pytest.raises(ValueError, match=re.escape(f"expected eps > 0 when normalizing with "
                                                   f"batch statistics (got eps={eps})")):
        ours(x)


def test_eval_mode_allows_eps_zero_and_rejects_a_negative_eps_like_torch():
    ours, ref = BatchNorm(3, eps=0.0).eval(), nn.BatchNorm1d(3, eps=0.0).eval()
    x = torch.randn(8, 3)
    torch.testing.assert_close(ours(x), ref(x))
    negative = BatchNorm(3, eps=-1.0).eval()
    with pytest.raises(ValueError, match=re.escape("expected eps >= 0 (got eps=-1.0)")):
        negative(x)
    with pytest.raises(ValueError, match="non-negative"):
        nn.BatchNorm1d(3, eps=-1.0).eval()(x)


def test_eval_without_running_statistics_needs_more_than_one_value_like_torch():
    ours = BatchNorm(3, track_running_stats=False).eval()
    ref = nn.BatchNorm1d(3, track_running_stats=False).eval()
    x = torch.randn(1, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ref(x)
    with pytest.raises(ValueError, match="expected more than 1 value per channel"):
        ours(x)


def test_loading_without_the_counter_non_strictly_keeps_the_counter_like_torch():
    ref, ours = make_pair(2)
    for module in (ours, ref):
        module.num_batches_tracked.fill_(7)
    state = {k: v for k, v in BatchNorm(4).double().state_dict().items()
             if k != "num_batches_tracked"}
    ours.load_state_dict(state, strict=False)
    ref.load_state_dict(state, strict=False)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 7


@pytest.mark.parametrize("make", [
    lambda: GhostBatchNorm(4, 2, bias=False),
    lambda: NoisyBatchNorm(4, bias=False),
    lambda: BatchRenorm(4, bias=False),
    lambda: SyncBatchNorm(4, bias=False),
])
def test_every_variant_takes_bias_false(make):
    bn = make().double()
    assert bn.bias is None and bn.weight is not None
    x = random_input((8, 4, 3), 0).requires_grad_()
    bn(x).sum().backward()
    assert bn.weight.grad is not None and x.grad.shape == x.shape
    bn.eval()
    assert bn(x).shape == x.shape


def test_eval_mode_propagates_a_running_mean_tangent_where_torch_drops_it():
    # Documented difference: torch's eval kernel returns a zero tangent for a tangent on
    # running_mean; ours differentiates the affine map, d out / d running_mean = -gamma / std.
    ref, ours = make_pair(2)
    ref.eval(), ours.eval()
    x, t = random_input((5, 4), 0), torch.ones(4, dtype=torch.float64)
    tangents = []
    for module in (ref, ours):
        def f(r, module=module):
            return torch.func.functional_call(module, {"running_mean": r}, (x,))
        tangents.append(torch.func.jvp(f, (module.running_mean.clone(),), (t,))[1])
    assert torch.count_nonzero(tangents[0]) == 0
    expected = -ours.weight.detach() / torch.sqrt(ours.running_var + ours.eps)
    torch.testing.assert_close(tangents[1], expected.expand(5, 4), atol=FLOAT64_ATOL, rtol=0)


# --- half precision (issue 13, item 9) -------------------------------------------------------

HALF_SLACK_EPS = 0.25   # ours may be worse than torch's kernel by at most a quarter of an eps


def _half_error(module, x):
    """Largest error of module(x) against float64 BN of the same (rounded) input, in eps."""
    exact = nn.BatchNorm1d(x.shape[1]).double()(x.double())
    return ((module(x).double() - exact).abs().max() / torch.finfo(x.dtype).eps).item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mixed", [False, True], ids=["half module", "float32 module"])
def test_half_inputs_accumulate_in_float32_as_accurately_as_torch(dtype, mixed):
    # 70000 values per channel: a float16 sum of squares overflows (65504) without float32
    torch.manual_seed(0)
    x = (torch.randn(70000, 2) * 3 + 5).to(dtype)
    ours, ref = BatchNorm(2), nn.BatchNorm1d(2)
    if not mixed:
        ours, ref = ours.to(dtype), ref.to(dtype)
    err_ours, err_ref = _half_error(ours, x), _half_error(ref, x)
    assert err_ours <= err_ref + HALF_SLACK_EPS, (err_ours, err_ref)


def test_mixed_precision_returns_the_input_dtype_and_keeps_float32_statistics():
    bn = BatchNorm(3)
    x = torch.randn(16, 3, 4).to(torch.bfloat16).requires_grad_()
    out = bn(x)
    out.float().sum().backward()
    assert out.dtype == x.grad.dtype == torch.bfloat16
    assert bn.weight.grad.dtype == bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    bn.eval()
    assert bn(x).dtype == torch.bfloat16


# --- more of torch's test_nn BatchNorm cases (test_batchnorm_non_contig, _nhwc, _large_batch,
# the grad_output contract) ------------------------------------------------------------------

@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
def test_non_contiguous_input_matches_torch_and_keeps_channels_last(train, layout):
    ref, ours = make_pair(4)
    for _ in range(2):                       # some running statistics for eval mode
        x_warm = random_input((4, 4, 3, 5), seed=3)
        ref(x_warm), ours(x_warm)
    ref.train(train), ours.train(train)
    x = random_input((4, 4, 3, 5), seed=4)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)   # same shape, other strides
    assert not x.is_contiguous()
    assert_same_step(ref, ours, x)
    if layout == "channels_last":
        assert ours(x).is_contiguous(memory_format=torch.channels_last) == \
            ref(x).is_contiguous(memory_format=torch.channels_last)


LARGE_BATCH_ATOL = 1e-4  # float32 over 2**18 values per channel, relative to a float64 oracle


def test_large_float32_batch_is_as_accurate_as_torch():
    # torch's test_batchnorm_large_batch: many values per channel stress the float32 sums
    torch.manual_seed(0)
    x = torch.randn(2 ** 16, 2, 4) * 2 + 10
    expected = nn.BatchNorm1d(2).double()(x.double())
    ours = BatchNorm(2)(x)
    torch_error = (nn.BatchNorm1d(2)(x).double() - expected).abs().max().item()
    our_error = (ours.double() - expected).abs().max().item()
    assert our_error < LARGE_BATCH_ATOL
    assert our_error <= 2 * torch_error + 1e-6, (our_error, torch_error)


@pytest.mark.parametrize("train", [True, False])
def test_backward_does_not_modify_the_upstream_gradient(train):
    bn = BatchNorm(3).double().train(train)
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(5, 3, 2, dtype=torch.float64)
    kept = dout.clone()
    bn(x).backward(dout)
    torch.testing.assert_close(dout, kept, atol=0, rtol=0)


def test_track_running_stats_false_has_no_buffers_to_update_like_torch():
    # torch's test_batchnorm_buffer_update_when_stats_are_not_tracked
    ours = BatchNorm(3, track_running_stats=False)
    ref = nn.BatchNorm1d(3, track_running_stats=False)
    for module in (ours, ref):
        module(torch.randn(4, 3))
        assert module.running_mean is None and module.running_var is None
        assert module.num_batches_tracked is None
    assert dict(ours.named_buffers()) == dict(ref.named_buffers()) == {}
