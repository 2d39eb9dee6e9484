r"""Batch norm written for a compiler: :class:`FusedBatchNorm`.

The textbook formula, compiled by ``torch.compile`` (Inductor generates C++ loops on a CPU),
moves each tensor as few times as the maths allows:

* training forward: two passes read ``x`` for the per-channel statistics (the mean, then the sum
  of squared deviations from it: no cancellation), each summing every contiguous spatial row
  first; one pass reads ``x`` and writes ``y``. A one-pass ``torch.var_mean`` (Welford) moves
  fewer bytes but ran at half the speed: its per-element division makes it compute-bound (bench,
  2026-12-03, (32, 64, 32, 32));
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
the outer dim, it is slower: Inductor's loops walk down the columns, 16 at a time, while PyTorch's
kernel streams the rows into per-thread sums.
"""

from __future__ import annotations

import os
import shutil
import types
import warnings

import torch
from torch import Tensor

from bncourse.nn.batchnorm import _accumulation_dtype, _as_channel, _BatchNormBase

__all__ = ["FusedBatchNorm", "compiler_available"]


#: rows per block when a (N, C) batch is summed over N: Inductor's code for one sum down a whole
#: column walks all N rows for every 16 columns; blocks of 8 rows, then the blocks, ran the
#: training forward on (4096, 1024) twice as fast (probe, 2026-12-03: 4 rows no faster than
#: none, 32 or 128 rows slower than 8)
ROW_BLOCK = 8


def _rows(x: Tensor) -> tuple[Tensor, int]:
    """A view whose per-channel sums run in two levels, and the dim the first level reduces:
    (N, C, *) -> (N, C, L), each contiguous spatial row first, then the batch (twice as fast
    under Inductor as one sum over (0, 2, 3), bench 2026-12-03); (N, C) -> (N / R, R, C), blocks
    of R rows first (R the largest divisor of N up to :data:`ROW_BLOCK`)."""
    if x.dim() > 2:
        return x.reshape(x.shape[0], x.shape[1], -1), 2
    rows = max(r for r in range(1, min(ROW_BLOCK, x.shape[0]) + 1) if x.shape[0] % r == 0)
    return x.reshape(x.shape[0] // rows, rows, x.shape[1]), 1


def _channel_mean(t: Tensor, first: int, count: int) -> Tensor:
    """Per-channel mean of a :func:`_rows` view, keeping its dims (C in place, 1 elsewhere)."""
    return t.sum(first, keepdim=True).sum(0, keepdim=True) / count


def _train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """(N, C, *) -> (y like x, mean (C,), biased var (C,), 1 / sqrt(var + eps) (C,));
    differentiable in x, weight, bias. The backward needs ``1 / sqrt(var + eps)``: returned, it is
    saved as an output rather than as an intermediate buffer that AOTAutograd donates to the
    backward (a donated buffer turns ``create_graph=True`` into an internal error)."""
    xv, first = _rows(x.to(_accumulation_dtype(x.dtype)))
    count = x.numel() // x.shape[1]
    mean = _channel_mean(xv, first, count)                               # pass 1: read x
    centred = xv - mean
    var = _channel_mean(centred * centred, first, count)               # pass 2: read x
    inv_std = torch.rsqrt(var + eps)
    scale = inv_std
    if weight is not None:
        scale = inv_std * weight.to(scale.dtype).view(scale.shape)
    shift = -mean * scale if bias is None else bias.to(scale.dtype).view(scale.shape) - mean * scale
    y = xv * scale + shift                                             # pass 3: read x, write y
    return (y.reshape(x.shape).to(x.dtype), mean.flatten().detach(), var.flatten().detach(),
            inv_std.flatten().detach())


def _eval_forward(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    acc = _accumulation_dtype(x.dtype)
    y = x.to(acc) * _as_channel(scale, x.dim()) + _as_channel(shift, x.dim())
    return y.to(x.dtype)


def compiler_available() -> bool:
    """Whether ``torch.compile``'s CPU backend can build kernels here: a C compiler on the path
    (``$CXX``, ``g++``, ``c++``, ``clang++``)."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(shutil.which(n) for n in names if n)


_FUNCTIONS = (_train, _eval_forward)


def _fresh_copy(fn):
    """``fn`` with its own code object. Dynamo keeps the compiled variants of a function on its
    code object and stops compiling after ``torch._dynamo.config.recompile_limit`` (8) of them:
    the BN layers of one network easily have more input shapes than that."""
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


#: distinct (function, shape, dtype) compiled at most, each about a second; inputs of yet other
#: shapes (sequences of every length, say) then run eagerly, said once
MAX_SHAPES = 64


class _Kernels:
    """The two functions compiled once per input shape and dtype on first use, or eager after a
    failure (warned once)."""

    def __init__(self) -> None:
        self.compiled: dict | None = None
        self.eager_reason: str | None = None
        self.full = False

    def _get(self, which: int, x: Tensor):
        if self.compiled is None and self.eager_reason is None:       # the first call
            if compiler_available():
                self.compiled = {}
            else:
                self._fall_back("no C++ compiler found for torch.compile's CPU backend")
        if self.compiled is None:
            return _FUNCTIONS[which]
        key = (which, tuple(x.shape), x.dtype)
        if key not in self.compiled and len(self.compiled) >= MAX_SHAPES:
            if not self.full:
                self.full = True
                warnings.warn(f"FusedBatchNorm has compiled {MAX_SHAPES} input shapes; inputs of "
                              "other shapes run eagerly (same results, not faster)",
                              RuntimeWarning, stacklevel=4)
            return _FUNCTIONS[which]
        if key not in self.compiled:
            self.compiled[key] = torch.compile(_fresh_copy(_FUNCTIONS[which]), dynamic=False,
                                               fullgraph=True)
        return self.compiled[key]

    def _fall_back(self, reason: str) -> None:
        self.eager_reason, self.compiled = reason, None
        warnings.warn(f"FusedBatchNorm runs eagerly (same results, not faster): {reason}",
                      RuntimeWarning, stacklevel=4)

    def call(self, which: int, x: Tensor, *args):
        kernel = self._get(which, x)
        try:
            return kernel(x, *args)
        except Exception as exc:  # a compile failure: the eager functions compute the same
            if kernel is _FUNCTIONS[which]:
                raise
            self._fall_back(f"torch.compile failed ({type(exc).__name__}: {exc})"[:300])
            return _FUNCTIONS[which](x, *args)


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
        out, mean, var, _ = KERNELS.call(_TRAIN, x, self.weight, self.bias, self.eps)
        return out, mean, var, x.numel() // x.shape[1]

    def _normalize_running(self, x: Tensor) -> Tensor:
        scale, shift = self._running_affine(_accumulation_dtype(x.dtype))
        return KERNELS.call(_EVAL, x, scale, shift)
