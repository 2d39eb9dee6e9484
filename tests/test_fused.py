"""FusedBatchNorm: compiled kernels with exactly the eager BatchNorm's results (float64), its
bookkeeping, first derivatives only, a backward that keeps only x, and an eager fallback where no
compiler works."""

import warnings

import pytest
import torch

from bncourse.nn import BatchNorm
from bncourse.nn import fused as fused_module
from bncourse.nn.fused import FusedBatchNorm

#: float64: the compiled kernels sum in another order than the eager module
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
    # the rows are summed in blocks of a divisor of the batch size: primes, composites, powers of 2
    torch.manual_seed(batch)
    eager, fused = BatchNorm(5).double(), FusedBatchNorm(5).double()
    x = torch.randn(batch, 5, dtype=torch.float64) * 3 + 1
    dy = torch.randn(batch, 5, dtype=torch.float64)
    assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert torch.allclose(eager.running_var, fused.running_var, atol=FLOAT64_TOL)


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


def test_state_dict_loads_into_torch_batchnorm_and_back():
    fused = FusedBatchNorm(3)
    fused(torch.randn(8, 3, 5))
    native = torch.nn.BatchNorm1d(3)
    native.load_state_dict(fused.state_dict())
    assert torch.equal(native.running_mean, fused.running_mean)
    FusedBatchNorm(3).load_state_dict(native.state_dict())


needs_compiler = pytest.mark.skipif(not fused_module.compiler_available(),
                                    reason="needs a C++ compiler for torch.compile")


@needs_compiler
def test_the_backward_keeps_only_x_and_per_channel_vectors():
    from bncourse.memory import saved_tensor_bytes

    _, fused = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    fused(x).sum().backward()                          # compiled before measuring
    saved, _ = saved_tensor_bytes(lambda: fused(x), exclude=fused.parameters())
    per_channel = SHAPE[1] * x.element_size()
    assert x.numel() * x.element_size() <= saved <= x.numel() * x.element_size() + 4 * per_channel


@needs_compiler
def test_first_derivatives_only_double_backward_raises():
    _, fused = _pair()
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fused(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


@pytest.fixture
def fresh_kernels(monkeypatch):
    kernels = fused_module._Kernels()
    monkeypatch.setattr(fused_module, "KERNELS", kernels)
    return kernels


def test_without_a_compiler_it_warns_once_and_computes_the_same(monkeypatch, fresh_kernels):
    monkeypatch.setattr(fused_module, "compiler_available", lambda: False)
    eager, fused = _pair()
    x, dy = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # said once, not at every call
        _step(fused, x, dy)


def test_a_failing_compiler_falls_back_to_the_same_maths(monkeypatch, fresh_kernels):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no backend")
        return run

    monkeypatch.setattr(fused_module, "compiler_available", lambda: True)
    monkeypatch.setattr(torch, "compile", broken_compile)
    eager, fused = _pair()
    x, dy = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert fresh_kernels.compiled is None


@needs_compiler
def test_more_input_shapes_than_dynamos_recompile_limit_stay_compiled(fresh_kernels):
    # a network's BN layers see many shapes; dynamo stops recompiling one function after a limit
    shapes = [(4, 3, 5), (6, 3, 5), (4, 3, 7), (5, 3)]
    with torch._dynamo.config.patch(recompile_limit=2), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for shape in shapes:
            eager, fused = _pair()
            x, dy = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
            assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert len(fresh_kernels.compiled) == len(shapes)


@needs_compiler
def test_beyond_max_shapes_new_shapes_run_eagerly_said_once(monkeypatch, fresh_kernels):
    monkeypatch.setattr(fused_module, "MAX_SHAPES", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        x, dy = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
        _step(_pair()[1], x, dy)                       # the one shape it compiles
    later = [(5, 3, 5), (6, 3, 5)]
    with pytest.warns(RuntimeWarning, match="compiled 1 input shapes") as caught:
        for shape in later:
            eager, fused = _pair()
            x, dy = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
            assert _max_diff(_step(eager, x, dy), _step(fused, x, dy)) < FLOAT64_TOL
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert len(fresh_kernels.compiled) == 1


def test_bad_input_gets_batchnorms_errors():
    with pytest.raises(ValueError, match="expected"):
        FusedBatchNorm(3)(torch.randn(4, 5))
