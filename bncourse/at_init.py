"""Two properties of deep BN networks at initialization, measured (notebook 08).

* **Gradients explode with depth** (Yang et al. 2019, "A mean field theory of batch
  normalization"): in a plain (no skip connections) ReLU network with BN after every linear
  layer, the gradient of the first layer's weights grows geometrically with depth relative to the
  last layer's, even at He initialization, where the same network without BN keeps them equal.
  :func:`gradient_ratio` measures ``||dL/dW_1|| / ||dL/dW_L||``.
* **BN prevents rank collapse** (Daneshmand et al. 2020): without normalization, the
  representations of a batch in a deep linear or ReLU network become almost parallel (rank one);
  with BN their rank stays high. :func:`batch_stable_rank` measures the stable rank
  ``||H||_F^2 / ||H||_2^2`` (between 1 and rank(H)) of the batch's last-layer representations.

Both networks are :func:`deep_mlp`: ``depth`` bias-free linear layers, He-initialized (gain 1
for a linear network), each followed by BN (``norm=True``) and then ReLU (unless ``linear``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deep_mlp", "gradient_ratio", "stable_rank", "batch_stable_rank"]


def deep_mlp(depth: int, width: int = 128, *, norm: bool, linear: bool = False,
             generator: torch.Generator | None = None) -> nn.Sequential:
    """``depth`` x (Linear(width, width, bias=False) [-> BN] [-> ReLU]), He-initialized from
    ``generator``; in training mode."""
    if depth < 1 or width < 1:
        raise ValueError(f"expected depth >= 1 and width >= 1 (got depth={depth}, "
                         f"width={width})")
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear_layer = nn.Linear(width, width, bias=False)
        nn.init.kaiming_normal_(linear_layer.weight, nonlinearity="linear" if linear else "relu",
                                generator=generator)
        layers.append(linear_layer)
        if norm:
            layers.append(nn.BatchNorm1d(width))
        if not linear:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gradient_ratio(depth: int, *, norm: bool, seed: int, width: int = 128,
                   batch: int = 64, classes: int = 10) -> float:
    """``||dL/dW_1|| / ||dL/dW_depth||`` at initialization: cross-entropy of a linear head on
    random labels, a standard normal input batch of ``batch`` examples."""
    g = torch.Generator().manual_seed(seed)
    net = deep_mlp(depth, width, norm=norm, generator=g)
    head = nn.Linear(width, classes)
    x = torch.randn(batch, width, generator=g)                      # (B, width)
    y = torch.randint(0, classes, (batch,), generator=g)
    F.cross_entropy(head(net(x)), y).backward()
    weights = [m.weight for m in net if isinstance(m, nn.Linear)]
    return (weights[0].grad.norm() / weights[-1].grad.norm()).item()


def stable_rank(h: Tensor) -> float:
    """``||h||_F^2 / ||h||_2^2`` of a (B, D) matrix: 1 when its rows are parallel, up to
    ``min(B, D)`` when its singular values are equal. Robust to tiny singular values, unlike the
    rank."""
    if h.dim() != 2 or h.numel() == 0:
        raise ValueError(f"expected a non-empty (B, D) matrix (got shape {tuple(h.shape)})")
    s = torch.linalg.svdvals(h.double())
    if s[0] == 0:
        raise ValueError("expected a non-zero matrix (got all zeros)")
    return ((s**2).sum() / s[0] ** 2).item()


@torch.no_grad()
def batch_stable_rank(depth: int, *, norm: bool, seed: int, linear: bool = False,
                      width: int = 128, batch: int = 32) -> float:
    """Stable rank of the (batch, width) output of :func:`deep_mlp` at initialization for a
    standard normal input batch."""
    g = torch.Generator().manual_seed(seed)
    net = deep_mlp(depth, width, norm=norm, linear=linear, generator=g)
    return stable_rank(net(torch.randn(batch, width, generator=g)))
