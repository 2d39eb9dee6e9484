r"""Batch norm fused by hand: :class:`FusedBatchNorm`.

Its kernels (``bn_kernel.c``, compiled on first use by :mod:`bncourse.nn.ckernel`) move each
tensor as few times as the maths allows:

* training forward: one pass reads ``x`` for the per-channel statistics (sums of the deviations
  from a centre near the mean, so the variance does not cancel; a second pass from the mean
  itself only where that centre was more than a std away), one pass reads ``x`` and writes ``y``;
* backward: it keeps only ``x`` and (C,) vectors, and recomputes :math:`\hat x` rather than
  storing it; one pass reads ``dy`` and ``x`` for :math:`\sum dy` and :math:`\sum dy\,\hat x`, one
  reads them again to write

  .. math::
      dx = \frac{\gamma}{\sigma} \Big(dy - \frac{1}{m}\sum dy
           - \hat x \frac{1}{m}\sum dy\,\hat x\Big);

* eval: one pass, ``y = x * scale + shift`` per channel.

A (N, C, L) batch with rows of L >= 64 values is worked a channel at a time; shorter rows
(L = 1 for a (N, C) batch) a block of whole rows per thread, as PyTorch's kernel does.

Why by hand: the same formula compiled by ``torch.compile`` (Inductor) fused the passes and beat
PyTorch's native kernel on (32, 64, 32, 32), but its loops for a (N, C) batch walk down the
columns, and it stayed about twice as slow as native on (4096, 1024) and at twice the memory-bound
limit of the training forward (bench, 2026-12-03; see ``bench/bench_roofline.py``).

It is a sibling of :class:`bncourse.nn.BatchNorm` (same arguments, buffers, ``state_dict``,
running-statistics rule and checks) with first derivatives only (double backward raises).
float32 and float64 CPU inputs use the kernels (any layout: made contiguous), which also
update the running statistics in the same call; others (half precision, GPU tensors, an input
whose dtype differs from the running statistics'), and every input where no C compiler builds the
kernels (said once with a :class:`RuntimeWarning`), run :class:`bncourse.nn.BatchNorm`'s own maths:
same results, no speed-up.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bncourse.nn import ckernel
from bncourse.nn.batchnorm import _accumulation_dtype, _BatchNormBase

__all__ = ["FusedBatchNorm"]


class _FusedFunction(torch.autograd.Function):
    """The kernels under autograd: (x, weight, bias, eps, running_mean, running_var, factor) -> y;
    the running statistics (or None) are updated in place by the forward kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, running_mean, running_var, factor):
        y, mean, _, invstd = ckernel.train(x, weight, bias, eps, running_mean, running_var, factor)
        ctx.save_for_backward(x, mean, invstd, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, mean, invstd, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        dx, sum_dy, sum_dy_xmu = ckernel.backward(dy, x, mean, invstd, weight, need_x)
        dweight = (sum_dy_xmu * invstd).to(weight.dtype) if need_weight else None
        dbias = sum_dy.to(dy.dtype) if need_bias else None
        return dx, dweight, dbias, None, None, None, None


class _Kernels:
    """Whether the C kernels are in use: checked at the first supported input; after a failure
    (no compiler, a failed build) the eager formula, said once."""

    def __init__(self) -> None:
        self.eager_reason: str | None = None

    def usable(self, x: Tensor) -> bool:
        if self.eager_reason is not None or not ckernel.supports(x):
            return False
        try:
            ckernel.library(x.dtype)
        except ckernel.KernelUnavailable as exc:
            self.eager_reason = str(exc)[:400]
            warnings.warn(f"FusedBatchNorm runs eagerly (same results, not faster): "
                          f"{self.eager_reason}", RuntimeWarning, stacklevel=4)
            return False
        return True


KERNELS = _Kernels()


class FusedBatchNorm(_BatchNormBase):
    r"""Batch normalization with hand-fused C kernels: the semantics of
    :class:`bncourse.nn.BatchNorm` (and so of ``torch.nn.BatchNorm1d/2d/3d``), first derivatives
    only. See the module docstring for the passes over memory.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Its arguments, parameters and buffers are those of :class:`bncourse.nn.BatchNorm`.

    Shape:
        Input (N, C) or (N, C, *spatial); output the same.
    """

    def forward(self, x: Tensor) -> Tensor:
        update = self.training and self.track_running_stats
        if not (isinstance(x, Tensor) and self._uses_batch_stats() and x.numel() > 0
                and KERNELS.usable(x) and (not update or self._kernel_can_update(x))):
            return super().forward(x)      # eval, empty batches, bad input, no kernels
        self._check_input(x)
        # one call normalizes and updates the running statistics: fewer small ops per step
        factor = self._running_average_factor() if update else 0.0
        return _FusedFunction.apply(x, self.weight, self.bias, self.eps,
                                    self.running_mean if update else None,
                                    self.running_var if update else None, factor)

    def _kernel_can_update(self, x: Tensor) -> bool:
        """Whether the kernel can write the running statistics: contiguous, of ``x``'s dtype
        (else, a module in another dtype than its input, the eager maths)."""
        return all(r.dtype == x.dtype and r.is_contiguous()
                   for r in (self.running_mean, self.running_var))

    def _normalize_running(self, x: Tensor) -> Tensor:
        scale, shift = self._running_affine(_accumulation_dtype(x.dtype))
        if scale.requires_grad or x.requires_grad or not KERNELS.usable(x):
            return super()._normalize_running(x)           # differentiable: PyTorch's ops
        return ckernel.affine(x, scale, shift)
