"""RMSNorm (Zhang & Sennrich 2019), from scratch, equal to ``torch.nn.RMSNorm``.

Layer norm without the centring: each example is divided by the root mean square of its last
``len(normalized_shape)`` dims, then scaled element-wise::

    y = x / sqrt(mean(x ** 2) + eps) * weight

Used in most recent transformers (LLaMA, T5), where the mean subtraction of layer norm buys
little. Like layer norm it has no running statistics: training and eval mode agree, and an
example's output never depends on its batch mates.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from bncourse.nn.batchnorm import _accumulation_dtype

__all__ = ["RMSNorm"]


class RMSNorm(nn.Module):
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims.

    Args:
        normalized_shape: an int or tuple: the shape of the trailing dims normalized together.
        eps: added to the mean square; ``None`` (default) uses the input dtype's machine
            epsilon, ``torch.finfo(x.dtype).eps``, as PyTorch does.
        elementwise_affine: learn a ``weight`` of ``normalized_shape``, initialized to ones.

    Shape:
        Input (*, *normalized_shape); output the same.

    Examples::

        >>> norm = RMSNorm(8)
        >>> norm(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, normalized_shape, eps: float | None = None,
                 elementwise_affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(d) for d in normalized_shape)
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ValueError(f"expected a non-empty normalized_shape of positive sizes "
                             f"(got {normalized_shape})")
        if eps is not None and not eps >= 0:
            raise ValueError(f"expected eps >= 0 or None (got eps={eps})")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device,
                                                   dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"expected a floating-point tensor (got {what})")
        k = len(self.normalized_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k:]) != self.normalized_shape:
            trailing = ", ".join(map(str, self.normalized_shape))
            raise ValueError(f"expected an input of shape (*, {trailing}) "
                             f"(got {tuple(x.shape)})")
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        acc = _accumulation_dtype(x.dtype)                   # half inputs: float32 maths
        xa = x.to(acc)
        dims = tuple(range(x.dim() - k, x.dim()))
        out = xa * torch.rsqrt(xa.pow(2).mean(dims, keepdim=True) + eps)   # (*, *shape)
        if self.weight is not None:
            out = out * self.weight.to(acc)
        return out.to(x.dtype)
