r"""Batch norm written for a compiler: :class:`FusedBatchNorm`.

The textbook formula, compiled by ``torch.compile`` (Inductor generates C++ loops on a CPU),
moves each tensor as few times as the maths allows:

* training forward: one pass reads ``x`` for the per-channel mean and variance (fused into one
  reduction), one pass reads ``x`` and writes ``y``;
* backward: derived from the forward by the compiler (AOTAutograd), which keeps only ``x`` and
  two (C,) vectors and recomputes :math:`\hat x` rather than storing it (tested); its passes
  read ``dy`` and ``x`` for :math:`\sum dy` and :math:`\sum dy\,\hat x`, then again to write

  .. math::
      dx = \frac{\gamma}{\sigma} \Big(dy - \frac{1}{m}\sum dy
           - \hat x \frac{1}{m}\sum dy\,\hat x\Big);

* eval: one pass, ``y = x * scale + shift`` per channel.

It is a sibling of :class:`bncourse.nn.BatchNorm` (same arguments, buffers, ``state_dict``,
running-statistics rule and checks) with first derivatives only: a compiled backward is not
itself differentiable (double backward raises). Where no compiler works (no C compiler, or
``torch.compile`` fails), it says so once with a :class:`RuntimeWarning` and runs the same
functions eagerly: same results, no speed-up. The first call of each input shape compiles (a few
seconds on a 2-core CPU). Measured (``bench/bench_roofline.py``): on a (32, 64, 32, 32) batch it
beats PyTorch's native CPU kernel; on a (4096, 1024) matrix, where the statistics reduce over
the outer dim, Inductor's code is several times slower than native.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import Tensor

from bncourse.nn.batchnorm import _accumulation_dtype, _as_channel, _BatchNormBase

__all__ = ["FusedBatchNorm", "compiler_available"]


def _dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """(N, C, *) -> (y like x, mean (C,), biased var (C,)); differentiable in x, weight, bias."""
    acc = _accumulation_dtype(x.dtype)
    xa = x.to(acc)
    var, mean = torch.var_mean(xa, _dims(x), correction=0)              # one pass (Welford)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(acc)
    shift = -mean * scale if bias is None else bias.to(acc) - mean * scale
    y = xa * _as_channel(scale, x.dim()) + _as_channel(shift, x.dim())   # one pass
    return y.to(x.dtype), mean.detach(), var.detach()


def _eval_forward(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    acc = _accumulation_dtype(x.dtype)
    y = x.to(acc) * _as_channel(scale, x.dim()) + _as_channel(shift, x.dim())
    return y.to(x.dtype)


def compiler_available() -> bool:
    """Whether ``torch.compile``'s CPU backend can build kernels here: a C compiler on the path
    (``$CXX``, ``g++``, ``c++``, ``clang++``)."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(shutil.which(n) for n in names if n)


class _Kernels:
    """The three functions, compiled on first use, or eager after a failure (warned once)."""

    def __init__(self) -> None:
        self.compiled = None
        self.eager_reason: str | None = None

    def _get(self):
        if self.compiled is None and self.eager_reason is None:
            if not compiler_available():
                self._fall_back("no C++ compiler found for torch.compile's CPU backend")
            else:
                self.compiled = tuple(torch.compile(f, dynamic=False, fullgraph=True)
                                      for f in (_train, _eval_forward))
        return self.compiled or (_train, _eval_forward)

    def _fall_back(self, reason: str) -> None:
        self.eager_reason, self.compiled = reason, None
        warnings.warn(f"FusedBatchNorm runs eagerly (same results, not faster): {reason}",
                      RuntimeWarning, stacklevel=4)

    def call(self, which: int, *args):
        kernels = self._get()
        try:
            return kernels[which](*args)
        except Exception as exc:  # a compile failure: the eager functions compute the same
            if self.compiled is None:
                raise
            self._fall_back(f"torch.compile failed ({type(exc).__name__}: {exc})"[:300])
            return (_train, _eval_forward)[which](*args)


KERNELS = _Kernels()
_TRAIN, _EVAL = 0, 1


class FusedBatchNorm(_BatchNormBase):
    r"""Batch normalization with compiled, fused kernels: the semantics of
    :class:`bncourse.nn.BatchNorm` (and so of ``torch.nn.BatchNorm1d/2d/3d``), first derivatives
    only. See the module docstring for the passes over memory.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Its arguments, parameters and buffers are those of :class:`bncourse.nn.BatchNorm`.

    Shape:
        Input (N, C) or (N, C, *spatial); output the same.
    """

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        out, mean, var = KERNELS.call(_TRAIN, x, self.weight, self.bias, self.eps)
        return out, mean, var, x.numel() // x.shape[1]

    def _normalize_running(self, x: Tensor) -> Tensor:
        scale, shift = self._running_affine(_accumulation_dtype(x.dtype))
        return KERNELS.call(_EVAL, x, scale, shift)
