"""Weight standardization (Qiao et al. 2019): normalize the weights instead of the activations.

Each output channel's weights are standardized over their fan-in before the layer uses them::

    W_hat[o] = (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps)        # mean, var over (C_in, *kernel)

so the layer's output does not change when a channel's weights are scaled or shifted. It needs no
batch statistics, so it works at any batch size; with GroupNorm it matches BN at large batches
and beats it at batch sizes of one or two per device (the paper's "WS + GN").

Written as a ``torch.nn.utils.parametrize`` parametrization, so the layer keeps its ordinary
``weight`` attribute (standardized on every access) and the raw weights are what the optimizer
updates (``parametrizations.weight.original`` in the ``state_dict``). The paper's released code
divides by the unbiased standard deviation plus eps; this follows the paper's formula (biased
variance, eps inside the root).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["StandardizedWeight", "weight_standardization", "WSConv1d", "WSConv2d"]


class StandardizedWeight(nn.Module):
    """The parametrization ``W -> (W - mean) / sqrt(var + eps)`` per output channel (dim 0),
    over every other dim.

    Args:
        eps: added to the variance, >= 0. Default: 1e-5.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"expected eps >= 0 (got eps={eps})")
        self.eps = eps

    def forward(self, weight: Tensor) -> Tensor:
        if weight.dim() < 2:
            raise ValueError(f"expected a weight of shape (C_out, C_in, *kernel) "
                             f"(got {tuple(weight.shape)})")
        dims = tuple(range(1, weight.dim()))                       # the fan-in of each output
        mean = weight.mean(dims, keepdim=True)                     # (C_out, 1, ...)
        centred = weight - mean
        var = centred.pow(2).mean(dims, keepdim=True)              # biased
        return centred * torch.rsqrt(var + self.eps)


def weight_standardization(module: nn.Module, name: str = "weight",
                           eps: float = 1e-5) -> nn.Module:
    """Registers :class:`StandardizedWeight` on ``module.<name>``; returns ``module``.

    >>> conv = weight_standardization(nn.Conv1d(3, 4, 5))
    >>> w = conv.weight                          # standardized on access
    >>> bool(w.mean((1, 2)).abs().max() < 1e-6)
    True
    """
    parametrize.register_parametrization(module, name, StandardizedWeight(eps))
    return module


class WSConv1d(nn.Conv1d):
    """``nn.Conv1d`` with a standardized weight; same arguments, plus ``ws_eps``."""

    def __init__(self, *args, ws_eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weight_standardization(self, eps=ws_eps)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a standardized weight; same arguments, plus ``ws_eps``."""

    def __init__(self, *args, ws_eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weight_standardization(self, eps=ws_eps)
