"""FusedBatchNorm: hand-fused C kernels with exactly the eager BatchNorm's results (float64), its
bookkeeping, first derivatives only, a backward that keeps only x, and an eager fallback where no
compiler works."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bncourse.nn import BatchNorm, ckernel
from bncourse.nn import fused as fused_module
from bncourse.nn.fused import FusedBatchNorm, _FusedFunction

#: float64: the kernels sum in another order than the eager module
FLOAT64_TOL = 1e-12
#: float32 against torch's native kernel on 5 * 8 * 3 values per channel
FLOAT32_TOL = 1e-5
SHAPE = (8, 3, 5)
STEPS = 3


def _pair(**kwargs):
    torch.manual_seed(0)
    eager = BatchNorm(SHAPE[1], **kwargs).double()
    fused = FusedBatchNorm(SHAPE[1], **kwargs).double()
    if eager.weight is not None:
        with torch.no_grad():
            for module in (eager, fused):
                module.weight.copy_(torch.linspace(0.5, 2.0, SHAPE[1]))
                if module.bias is not None:
                    module.bias.copy_(torch.linspace(-1.0, 1.0, SHAPE[1]))
    return eager, fused


def _step(module, x, dy):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(dy)
    grads = [x.grad] + [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    return [y.detach(), *grads]


def _max_diff(a, b):
    return max((u - v).abs().max().item() for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"bias": False}, {"momentum": None}],
                         ids=["affine", "no-affine", "no-bias", "cumulative"])
def test_training_steps_equal_the_eager_module_in_float64(kwargs):
    eager, fused = _pair(**kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 3 + 1
        dy = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    for name, buffer in eager.named_buffers():
        assert torch.allclose(buffer, dict(fused.named_buffers())[name], atol=FLOAT64_TOL, rtol=0)


def test_eval_mode_equals_the_eager_module_with_and_without_gradients():
    eager, fused = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64)
    for module in (eager, fused):
        module(x * 2 + 1)
        module.eval()
    with torch.no_grad():
        assert (eager(x) - fused(x)).abs().max().item() < FLOAT64_TOL
    dy = torch.randn(SHAPE, dtype=torch.float64)
    assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL


@pytest.mark.parametrize("batch", [2, 7, 12, 64])
def test_2d_batches_of_any_size_equal_the_eager_module_in_float64(batch):
    # each thread sums a block of rows: odd and even batches, fewer rows than CENTRE_ROWS and more
    torch.manual_seed(batch)
    eager, fused = BatchNorm(5).double(), FusedBatchNorm(5).double()
    x = torch.randn(batch, 5, dtype=torch.float64) * 3 + 1
    dy = torch.randn(batch, 5, dtype=torch.float64)
    assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert torch.allclose(eager.running_var, fused.running_var, atol=FLOAT64_TOL)


@given(batch=st.integers(2, 9), channels=st.integers(1, 5), length=st.sampled_from([1, 3, 64, 70]),
       seed=st.integers(0, 2**16))
def test_any_shape_equals_the_eager_module_in_float64(batch, channels, length, seed):
    # rows of L >= 64 values take the channel path, shorter ones the rows path
    torch.manual_seed(seed)
    eager, fused = BatchNorm(channels).double(), FusedBatchNorm(channels).double()
    shape = (batch, channels) if length == 1 else (batch, channels, length)
    x = torch.randn(shape, dtype=torch.float64) * 2 - 1
    dy = torch.randn(shape, dtype=torch.float64)
    assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL


@pytest.mark.parametrize("shape", [(6, 3, 70), (9, 4)], ids=["channel-path", "rows-path"])
def test_gradients_pass_gradcheck_in_float64(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.rand(shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _FusedFunction.apply(*a, 1e-5, None, None, 0.0),
                                    (x, weight, bias))


def test_float64_cpu_input_runs_the_c_kernels_not_the_fallback():
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    assert type(_pair()[1](x).grad_fn).__name__ == "_FusedFunctionBackward"


def test_the_number_of_threads_does_not_change_the_result():
    torch.manual_seed(0)
    x, dy = torch.randn(64, 8), torch.randn(64, 8)
    threads = torch.get_num_threads()
    results = []
    for n in (1, 3):
        torch.set_num_threads(n)
        try:
            results.append(_step(FusedBatchNorm(8), x, dy))
        finally:
            torch.set_num_threads(threads)
    assert _max_diff(*results) < FLOAT32_TOL


def test_a_channels_last_input_equals_the_eager_module():
    eager, fused = _pair()
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
    dy = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL


def test_half_precision_runs_the_eager_modules_maths():
    eager, fused = BatchNorm(3), FusedBatchNorm(3)
    x = torch.randn(8, 3, 5).half()
    assert torch.equal(eager(x), fused(x))


def test_float32_2d_input_matches_torch_native_batchnorm():
    torch.manual_seed(0)
    native, fused = torch.nn.BatchNorm1d(6), FusedBatchNorm(6)
    x = torch.randn(32, 6) * 2 + 3
    dy = torch.randn(32, 6)
    assert _max_diff(_step(native, x, dy), _step(fused, x, dy)) < FLOAT32_TOL
    assert torch.allclose(native.running_var, fused.running_var, atol=FLOAT32_TOL)


#: float32 output and variance against float64 with a mean 1000 standard deviations away from 0
OFFSET_TOL = 1e-4


def test_a_large_mean_does_not_cancel_the_float32_variance():
    # E[x^2] - E[x]^2 in float32 loses about 6% of this variance; centring first keeps it
    torch.manual_seed(0)
    x = torch.randn(16, 4, 8, 8) + 1000.0
    fused = FusedBatchNorm(4, affine=False, momentum=None)
    y = fused(x)
    x64 = x.double()
    expected = torch.nn.functional.batch_norm(x64, None, None, training=True)
    assert (y.double() - expected).abs().max().item() < OFFSET_TOL * 10
    unbiased = x64.var(dim=(0, 2, 3))
    assert ((fused.running_var.double() - unbiased).abs() / unbiased).max().item() < OFFSET_TOL


def _far_out_batch(shape, rows):
    """float32 values ~ N(0, 1), the given rows' at 1e4: the centre the one-pass statistics take
    (the first values of the batch) lies many stds from the mean."""
    torch.manual_seed(0)
    x = torch.randn(shape)
    x[rows] = 1e4
    return x


@pytest.mark.parametrize("shape, rows", [((4096, 2), slice(0, 16)),
                                         ((16, 2, 1024), (slice(None), slice(None), 0))],
                         ids=["rows-path", "channel-path"])
def test_a_centre_far_from_the_mean_still_gives_the_float32_variance(shape, rows):
    # one pass from that centre loses about N / 16 (rows) or L (channel) times float32's rounding
    # error; the second pass from the mean keeps it
    x = _far_out_batch(shape, rows)
    fused = FusedBatchNorm(2, affine=False, momentum=None)
    fused(x)
    dims = [d for d in range(x.dim()) if d != 1]
    unbiased = x.double().var(dim=dims)
    assert ((fused.running_var.double() - unbiased).abs() / unbiased).max().item() < 1e-6


def test_state_dict_loads_into_torch_batchnorm_and_back():
    fused = FusedBatchNorm(3)
    fused(torch.randn(8, 3, 5))
    native = torch.nn.BatchNorm1d(3)
    native.load_state_dict(fused.state_dict())
    assert torch.equal(native.running_mean, fused.running_mean)
    FusedBatchNorm(3).load_state_dict(native.state_dict())


def test_the_backward_keeps_only_x_and_per_channel_vectors():
    from bncourse.memory import saved_tensor_bytes

    _, fused = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    saved, _ = saved_tensor_bytes(lambda: fused(x), exclude=fused.parameters())
    per_channel = SHAPE[1] * x.element_size()
    assert x.numel() * x.element_size() <= saved <= x.numel() * x.element_size() + 4 * per_channel


def test_first_derivatives_only_double_backward_raises():
    _, fused = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fused(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """No library loaded or cached yet, a private cache dir, and the fallback not yet taken."""
    monkeypatch.setattr(ckernel, "_LIBRARIES", {})
    monkeypatch.setenv("BNCOURSE_CACHE_DIR", str(tmp_path))
    kernels = fused_module._Kernels()
    monkeypatch.setattr(fused_module, "KERNELS", kernels)
    return kernels


def test_without_a_compiler_it_warns_once_and_computes_the_same(monkeypatch, fresh_kernels):
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr(ckernel.shutil, "which", lambda name: None)
    eager, fused = _pair()
    x, dy = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # said once, not at every call
        _step(fused, x, dy)


def test_a_failing_build_falls_back_to_the_same_maths(monkeypatch, fresh_kernels, tmp_path):
    broken = tmp_path / "bn_kernel.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(ckernel, "SOURCE", broken)
    eager, fused = _pair()
    x, dy = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="could not build bn_kernel.c"):
        assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert fresh_kernels.eager_reason is not None


def test_bad_input_gets_batchnorms_errors():
    with pytest.raises(ValueError, match="expected"):
        FusedBatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        FusedBatchNorm(3)([[1.0, 2.0, 3.0]])


def test_a_rejected_batch_does_not_count_a_step():
    fused = FusedBatchNorm(3)
    with pytest.raises(ValueError, match="expected"):
        fused(torch.randn(4, 5))
    assert fused.num_batches_tracked.item() == 0


def test_float32_input_with_float64_buffers_steps_like_the_eager_module():
    eager, fused = BatchNorm(3).double(), FusedBatchNorm(3).double()
    x = torch.randn(8, 3, 5) * 2 + 1
    assert torch.allclose(eager(x), fused(x), atol=FLOAT32_TOL, rtol=0)
    for name, buffer in eager.named_buffers():
        assert torch.allclose(buffer, dict(fused.named_buffers())[name], atol=FLOAT32_TOL, rtol=0)
