"""Dynamic Tanh (Zhu et al. 2025): a normalization layer without statistics.

Layer norm in a trained transformer maps most of its inputs almost linearly and squashes a few
extreme ones, like an S-shaped curve. DyT replaces it by exactly such a curve with a learned
steepness, element-wise::

    y = weight * tanh(alpha * x) + bias          # alpha: one learned scalar, weight/bias: (C,)

No mean, no variance, no batch: an example's output depends only on itself, in training and
eval mode alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DyT"]


class DyT(nn.Module):
    """``weight * tanh(alpha * x) + bias`` over the last dim.

    Args:
        num_features: C, the size of the last dim.
        alpha_init: the initial steepness (the paper's default for non-LLM models: 0.5).

    Shape:
        Input (*, C); output the same.

    Examples::

        >>> dyt = DyT(4)
        >>> dyt(torch.zeros(2, 4)).abs().max().item()
        0.0
    """

    def __init__(self, num_features: int, alpha_init: float = 0.5) -> None:
        super().__init__()
        if not (isinstance(num_features, int) and num_features >= 1):
            raise ValueError(f"expected num_features >= 1 (got {num_features!r})")
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha={self.alpha.item():.3g}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.num_features:
            raise ValueError(f"expected an input of shape (*, {self.num_features}) "
                             f"(got {tuple(x.shape)})")
        return torch.tanh(self.alpha * x) * self.weight + self.bias
