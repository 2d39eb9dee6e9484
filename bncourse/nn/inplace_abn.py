r"""In-place activated batch norm (Rota Bulò, Porzi and Kontschieder 2018): BN followed by a
LeakyReLU whose backward needs only the block's *output*.

A plain ``BN -> LeakyReLU`` block keeps two tensors of the activation's size for the backward
pass: BN's input ``x`` (to form :math:`\hat x`) and the activation's input or output. The
activation is invertible (a LeakyReLU with slope :math:`a > 0`; a ReLU is not: it loses the
values it zeroes), and so is BN's affine map when :math:`\gamma \ne 0`, so the backward can
recompute what it needs from the output :math:`o` alone:

.. math::
    y = \begin{cases} o & o \ge 0 \\ o / a & o < 0 \end{cases}, \qquad
    \hat x = \frac{y - \beta}{\gamma}, \qquad
    dy = \begin{cases} do & o \ge 0 \\ a\, do & o < 0 \end{cases}

    dx = \frac{\gamma}{\sigma}\Big(dy - \frac1m \sum dy - \hat x\,\frac1m \sum dy\,\hat x\Big),
    \quad d\gamma = \sum dy\,\hat x, \quad d\beta = \sum dy .

The block then saves one activation-sized tensor instead of two: its activation memory falls by
the size of BN's input. Training mode uses batch statistics (eval mode is BN then LeakyReLU,
nothing saved beyond what autograd needs). First derivatives only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from bncourse.nn.batchnorm import _as_channel, _BatchNormBase

__all__ = ["InPlaceABN"]


def _dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


class _InPlaceABNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, slope: float):
        nd = x.dim()
        var, mean = torch.var_mean(x, _dims(x), correction=0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd * weight
        out = x * _as_channel(scale, nd) + _as_channel(bias - mean * scale, nd)
        F.leaky_relu_(out, slope)                        # in place: no second tensor
        ctx.save_for_backward(out, weight, bias, invstd)  # the output only (and (C,) vectors)
        ctx.slope = slope
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor, _dmean, _dvar):
        out, weight, bias, invstd = ctx.saved_tensors
        nd, slope, dims = out.dim(), ctx.slope, _dims(out)
        negative = out < 0
        y = torch.where(negative, out / slope, out)                  # invert the LeakyReLU
        dy = torch.where(negative, dout * slope, dout)
        x_hat = (y - _as_channel(bias, nd)) / _as_channel(weight, nd)  # invert the affine map
        dbias = dy.sum(dims)
        dweight = (dy * x_hat).sum(dims)
        m = out.numel() // out.shape[1]
        dx = _as_channel(weight * invstd, nd) * (dy - _as_channel(dbias / m, nd)
                                                  - x_hat * _as_channel(dweight / m, nd))
        return dx, dweight, dbias, None, None


class InPlaceABN(_BatchNormBase):
    r"""``BatchNorm`` then ``LeakyReLU(negative_slope)``, whose training backward recomputes
    :math:`\hat x` from the block's output (see the module docstring): the block keeps only its
    output for the backward pass.

    Args:
        num_features, eps, momentum, track_running_stats: as :class:`bncourse.nn.BatchNorm`
            (always affine: the backward divides by :math:`\gamma`).
        negative_slope: the LeakyReLU's slope for negative inputs, > 0 (a ReLU's 0 would lose
            the values it zeroes). Default: 0.01, as ``nn.LeakyReLU``.

    Shape:
        Input (N, C) or (N, C, *spatial); output the same.

    Raises:
        ValueError: in training, if a :math:`\gamma` is 0 (:math:`\hat x` cannot be recovered).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 track_running_stats: bool = True, negative_slope: float = 0.01,
                 device=None, dtype=None) -> None:
        if not negative_slope > 0:
            raise ValueError(f"expected negative_slope > 0, an invertible activation "
                             f"(got {negative_slope})")
        super().__init__(num_features, eps, momentum, True, track_running_stats, device, dtype)
        self.negative_slope = negative_slope

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        if bool((self.weight == 0).any()):
            raise ValueError("expected every weight (gamma) to be nonzero: InPlaceABN's backward "
                             "divides by it (got a zero)")
        out, mean, var = _InPlaceABNFunction.apply(x, self.weight, self.bias, self.eps,
                                                   self.negative_slope)
        return out, mean, var, x.numel() // x.shape[1]

    def after_folding(self) -> torch.nn.Module:
        """What remains of the block once :func:`bncourse.nn.fold_batchnorm` has folded its
        affine map into the layer before it: the LeakyReLU."""
        return torch.nn.LeakyReLU(self.negative_slope)

    def _normalize_running(self, x: Tensor) -> Tensor:
        return F.leaky_relu(super()._normalize_running(x), self.negative_slope)

    def _empty_batch(self, x: Tensor) -> Tensor:
        return F.leaky_relu(super()._empty_batch(x), self.negative_slope)
