"""Folding eval-mode batch norm into the layer before it: the BN costs nothing at inference."""

from __future__ import annotations

import copy

import torch
from torch import nn

from bncourse.nn.batchnorm import _BatchNormBase

__all__ = ["fold_batchnorm", "is_batchnorm"]

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_batchnorm(module: nn.Module) -> bool:
    """True for torch's ``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``) and bncourse's variants."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNormBase))


@torch.no_grad()
def _folded(layer: nn.Module, bn: nn.Module) -> nn.Module:
    r"""The layer computing ``bn(layer(x))`` in eval mode:

    .. math::
        s = \frac{\gamma}{\sqrt{\text{running\_var} + \epsilon}}, \quad
        W' = s \odot W \text{ (per output channel)}, \quad
        b' = s \odot (b - \text{running\_mean}) + \beta
    """
    scale = torch.rsqrt(bn.running_var + bn.eps)                  # (C_out,)
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight, shift * bn.weight
    if bn.bias is not None:
        shift = shift + bn.bias
    fused = copy.deepcopy(layer)                   # keeps the weight's requires_grad
    fused.weight.mul_(scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1)).to(fused.weight))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    # requires_grad as torch.nn.utils.fuse_conv_bn_eval: the layer's bias's (False without one)
    fused.bias = nn.Parameter((bias * scale + shift).to(fused.weight),
                              requires_grad=layer.bias is not None and layer.bias.requires_grad)
    return fused


def _fold_sequential(seq: nn.Sequential, path: str) -> None:
    names = list(seq._modules)
    for i, name in enumerate(names):
        module = seq._modules[name]
        where = f"{path}.{name}" if path else name
        if not is_batchnorm(module):
            continue
        prev = seq._modules[names[i - 1]] if i > 0 else None
        if not isinstance(prev, _FOLDABLE):
            got = "nothing" if prev is None else type(prev).__name__
            raise ValueError(f"cannot fold {where}: expected it to follow a Linear or Conv1d/2d/3d "
                             f"layer in the same nn.Sequential (got {got} before it)")
        if module.running_mean is None:
            raise ValueError(f"cannot fold {where}: it has no running statistics "
                             "(track_running_stats=False uses batch statistics even in eval mode)")
        if prev.weight.shape[0] != module.num_features:
            raise ValueError(f"cannot fold {where}: expected {prev.weight.shape[0]} features "
                             f"(got {module.num_features})")
        seq._modules[names[i - 1]] = _folded(prev, module)
        # what the BN layer computes beyond its affine map (InPlaceABN's activation), if any
        remainder = getattr(module, "after_folding", None)
        seq._modules[name] = remainder() if remainder is not None else nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Returns an eval-mode copy of ``model`` with every batch norm folded into the layer before it.

    Each BN must directly follow a ``Linear`` or ``Conv1d/2d/3d`` inside the same
    ``nn.Sequential`` (the order of other containers' children says nothing about data flow);
    it is replaced by ``nn.Identity`` and the layer's weight and bias absorb its eval-mode affine
    map. The original model is not modified.

    Raises:
        ValueError: ``model`` is in training mode (folding uses running statistics, which only
            eval mode uses), or a BN cannot be folded (not after a foldable layer, outside an
            ``nn.Sequential``, or without running statistics).
    """
    if model.training:
        raise ValueError("expected a model in eval mode (got training mode): folding replaces "
                         "BN by its eval-mode affine map; call model.eval() first")
    folded = copy.deepcopy(model)
    if is_batchnorm(folded):
        raise ValueError("cannot fold a batch norm on its own: expected a model containing one")
    for path, module in list(folded.named_modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module, path)
    for path, module in folded.named_modules():
        if is_batchnorm(module):
            raise ValueError(f"cannot fold {path}: expected it inside an nn.Sequential, "
                             "directly after a Linear or Conv layer")
    return folded.eval()
