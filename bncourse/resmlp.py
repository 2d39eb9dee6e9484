"""A deep residual MLP with four ways to keep it trainable (notebook 08: training without BN).

Each block adds a branch to its input, ``x + alpha * f(x)`` with
``f = Linear -> norm -> ReLU -> Linear -> norm``, and the ``variant`` picks what tames the
residual stream as the depth grows:

* ``"batch"``: BN in the branch (the ResNet recipe); ``alpha = 1``.
* ``"none"``: no normalization, PyTorch's default initialization; ``alpha = 1``. The variance of
  the stream grows with every block.
* ``"skipinit"``: no normalization, a learned scalar ``alpha`` initialized to 0 (De & Smith
  2020; Fixup's idea): at initialization every block is the identity.
* ``"ws_group"``: weight-standardized linear layers and GroupNorm in the branch (Qiao et al.
  2019): no batch statistics, so it behaves the same at batch 2 as at batch 64.

The head sees ``ReLU(norm(x))`` of the final stream for the normalized variants and ``ReLU(x)``
otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bncourse.nn import weight_standardization

__all__ = ["RESIDUAL_VARIANTS", "ResidualBlock", "residual_mlp"]

RESIDUAL_VARIANTS = ("batch", "none", "skipinit", "ws_group")
GROUPS = 8


def _norm(variant: str, width: int) -> nn.Module:
    if variant == "batch":
        return nn.BatchNorm1d(width)
    if variant == "ws_group":
        return nn.GroupNorm(GROUPS if width % GROUPS == 0 else 1, width)
    return nn.Identity()


def _linear(variant: str, width: int) -> nn.Module:
    layer = nn.Linear(width, width)
    return weight_standardization(layer) if variant == "ws_group" else layer


class ResidualBlock(nn.Module):
    """``x + alpha * f(x)``; see the module docstring for ``variant``."""

    def __init__(self, width: int, variant: str) -> None:
        super().__init__()
        if variant not in RESIDUAL_VARIANTS:
            raise ValueError(f"expected variant to be one of {RESIDUAL_VARIANTS} "
                             f"(got {variant!r})")
        self.branch = nn.Sequential(_linear(variant, width), _norm(variant, width), nn.ReLU(),
                                    _linear(variant, width), _norm(variant, width))
        if variant == "skipinit":
            self.alpha = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("alpha", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.alpha * self.branch(x)


def residual_mlp(depth: int = 16, width: int = 64, *, variant: str = "batch",
                 in_features: int = 40, classes: int = 10) -> nn.Sequential:
    """``stem -> depth x ResidualBlock -> [norm] -> ReLU -> head`` for (N, in_features) inputs."""
    if depth < 1 or width < 1:
        raise ValueError(f"expected depth >= 1 and width >= 1 (got depth={depth}, "
                         f"width={width})")
    stem = nn.Linear(in_features, width)                 # first: its init does not depend on depth
    blocks = [ResidualBlock(width, variant) for _ in range(depth)]
    return nn.Sequential(stem, *blocks, _norm(variant, width), nn.ReLU(),
                         nn.Linear(width, classes))
