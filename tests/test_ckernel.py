"""bncourse.nn.ckernel: builds bn_kernel.c once per dtype into the cache, atomically, rebuilds when
the source changes, falls back through its flag sets, and its kernels compute BN (float64 oracle:
torch.nn.functional.batch_norm)."""

import subprocess

import pytest
import torch

from bncourse.nn import ckernel

FLOAT64_TOL = 1e-12


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    """An empty cache dir and no library loaded yet."""
    monkeypatch.setattr(ckernel, "_LIBRARIES", {})
    monkeypatch.setenv("BNCOURSE_CACHE_DIR", str(tmp_path))
    return tmp_path / "kernels"


def _compiles(monkeypatch) -> list:
    """Records each compiler call that builds a library."""
    calls, run = [], subprocess.run

    def recording_run(args, **kwargs):
        if "-o" in args:
            calls.append(args)
        return run(args, **kwargs)

    monkeypatch.setattr(ckernel.subprocess, "run", recording_run)
    return calls


def test_the_first_use_builds_into_the_cache_and_later_ones_reuse_it(monkeypatch, private_cache):
    calls = _compiles(monkeypatch)
    ckernel.library(torch.float64)
    monkeypatch.setattr(ckernel, "_LIBRARIES", {})          # a new process: only the file remains
    ckernel.library(torch.float64)
    assert len(calls) == 1
    assert [p.suffix for p in private_cache.iterdir()] == [".so"]   # no temporary file left


def test_each_dtype_gets_its_own_library(private_cache):
    ckernel.library(torch.float32)
    ckernel.library(torch.float64)
    names = sorted(p.name for p in private_cache.iterdir())
    assert len(names) == 2 and names[0].startswith("bn_kernel_double")


def test_a_changed_source_builds_a_new_library(monkeypatch, private_cache, tmp_path):
    ckernel.library(torch.float64)
    changed = tmp_path / "bn_kernel.c"
    changed.write_text(ckernel.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(ckernel, "SOURCE", changed)
    monkeypatch.setattr(ckernel, "_LIBRARIES", {})
    ckernel.library(torch.float64)
    assert len(list(private_cache.iterdir())) == 2


def test_a_flag_set_the_compiler_rejects_falls_back_to_the_next(monkeypatch, private_cache):
    monkeypatch.setattr(ckernel, "FLAG_SETS", (("-fno-such-flag-at-all",), ("-O2",)))
    lib = ckernel.library(torch.float64)
    assert lib.bn_train is not None


def test_a_failed_build_says_why_and_leaves_no_file(monkeypatch, private_cache, tmp_path):
    broken = tmp_path / "bn_kernel.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(ckernel, "SOURCE", broken)
    with pytest.raises(ckernel.KernelUnavailable, match="could not build bn_kernel.c"):
        ckernel.library(torch.float64)
    assert list(private_cache.iterdir()) == []


def test_no_compiler_is_kernel_unavailable(monkeypatch, private_cache):
    monkeypatch.setattr(ckernel.shutil, "which", lambda name: None)
    with pytest.raises(ckernel.KernelUnavailable, match="no C compiler found"):
        ckernel.library(torch.float64)


SHAPES = pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2), (3, 2, 80)],
                                 ids=["2d", "short-rows", "long-rows"])


@SHAPES
def test_train_and_backward_compute_batch_norm(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.rand(2, shape[1], dtype=torch.float64)
    dy = torch.randn(shape, dtype=torch.float64)
    y, mean, var, invstd = ckernel.train(x.detach(), weight, bias, 1e-5)
    expected = torch.nn.functional.batch_norm(x, None, None, weight, bias, True, 0.0, 1e-5)
    (dx_expected,) = torch.autograd.grad(expected, x, dy)
    dx, sum_dy, _ = ckernel.backward(dy, x.detach(), mean, invstd, weight, need_dx=True)
    dims = [d for d in range(x.dim()) if d != 1]
    assert (y - expected).abs().max().item() < FLOAT64_TOL
    assert (dx - dx_expected).abs().max().item() < FLOAT64_TOL
    assert torch.allclose(var, x.detach().var(dim=dims, unbiased=False), atol=FLOAT64_TOL, rtol=0)
    assert torch.allclose(sum_dy, dy.sum(dims), atol=FLOAT64_TOL, rtol=0)


def test_backward_without_dx_returns_only_the_sums():
    x, dy = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    _, mean, _, invstd = ckernel.train(x, None, None, 1e-5)
    dx, sum_dy, _ = ckernel.backward(dy, x, mean, invstd, None, need_dx=False)
    assert dx is None and torch.allclose(sum_dy, dy.sum(0), atol=FLOAT64_TOL, rtol=0)


def _blended(running, batch, factor):
    return running + factor * (batch - running)


@SHAPES
def test_train_blends_the_batch_into_running_statistics_of_its_dtype(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    running_mean, running_var = torch.rand(2, shape[1], dtype=torch.float64)
    expected_mean = _blended(running_mean, x.mean([d for d in range(x.dim()) if d != 1]), 0.3)
    expected_var = _blended(running_var, x.var([d for d in range(x.dim()) if d != 1]), 0.3)
    ckernel.train(x, None, None, 1e-5, running_mean, running_var, 0.3)
    assert torch.allclose(running_mean, expected_mean, atol=FLOAT64_TOL, rtol=0)
    assert torch.allclose(running_var, expected_var, atol=FLOAT64_TOL, rtol=0)


@pytest.mark.parametrize("running", [torch.zeros(3), torch.zeros(3, 2, dtype=torch.float64)[:, 0],
                                     torch.zeros(4, dtype=torch.float64)],
                         ids=["other-dtype", "strided", "wrong-length"])
def test_running_statistics_the_kernel_cannot_write_are_rejected(running):
    x = torch.randn(16, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected running_mean to be a contiguous"):
        ckernel.train(x, None, None, 1e-5, running, torch.ones(3, dtype=torch.float64), 0.5)


@SHAPES
def test_affine_is_x_times_scale_plus_shift_per_channel(shape):
    x = torch.randn(shape, dtype=torch.float64)
    scale, shift = torch.randn(2, shape[1], dtype=torch.float64)
    view = (1, -1) + (1,) * (len(shape) - 2)
    expected = x * scale.view(view) + shift.view(view)
    assert (ckernel.affine(x, scale, shift) - expected).abs().max().item() < FLOAT64_TOL


@pytest.mark.parametrize("x, supported", [
    (torch.zeros(2, 3), True), (torch.zeros(2, 3, dtype=torch.float64), True),
    (torch.zeros(2, 3, dtype=torch.float16), False), (torch.zeros(3), False)])
def test_supports_float32_and_float64_batches(x, supported):
    assert ckernel.supports(x) is supported
