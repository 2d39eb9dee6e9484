"""BN in practice (notebook 09): adapting to shifted data, and freezing BN when fine-tuning.

* :func:`adabn` (Li et al. 2016): re-estimate every BN's running statistics on the *target*
  data, weights unchanged (precise BN, :func:`bncourse.nn.precise_bn`, on other inputs).
* :func:`tent_parameters` and :func:`tent_step` (Wang et al. 2021): at test time, keep BN in
  training mode (batch statistics of the test batch) and take gradient steps on BN's affine
  parameters only, minimizing the entropy of the model's predictions.
* :func:`freeze_bn`: what "freezing BN" has to do when fine-tuning: eval mode for the BN layers
  (so their running statistics stop moving: ``requires_grad_(False)`` alone does not do that)
  and no gradient for their affine parameters. :func:`bn_state` snapshots what could move, so a
  test can check that nothing did. :class:`KeepBNFrozen` re-freezes after every ``train()``
  (a training loop calls ``model.train()`` every epoch, which would unfreeze them).
* :func:`tent_online`: TENT as deployed: one pass over a stream of test batches, predicting each
  batch with the forward pass that also takes its step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bncourse.nn import is_batchnorm, precise_bn

__all__ = ["adabn", "tent_parameters", "tent_step", "tent_online", "prediction_entropy",
           "freeze_bn", "KeepBNFrozen", "bn_state"]


def _bns(model: nn.Module) -> list[nn.Module]:
    bns = [m for m in model.modules() if is_batchnorm(m)]
    if not bns:
        raise ValueError("expected a model with batch norm layers (got none)")
    return bns


def adabn(model: nn.Module, target_batches: Iterable[Tensor]) -> nn.Module:
    """Replaces the running statistics of every BN by those of ``target_batches`` (AdaBN).

    Returns:
        ``model``, changed in place (weights untouched, modes restored).
    """
    return precise_bn(model, target_batches)


def prediction_entropy(logits: Tensor) -> Tensor:
    """Mean over the batch of the entropy of ``softmax(logits)``, in nats; (N, classes) -> ()."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def tent_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Prepares ``model`` for TENT and returns the parameters it adapts: every BN's weight and
    bias. All other parameters stop requiring gradients; the BN layers use batch statistics
    (training mode) and no longer update their running statistics; the rest is in eval mode."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for bn in _bns(model):
        bn.train()
        bn.track_running_stats = False          # normalize with the test batch's statistics
        bn.running_mean = bn.running_var = None
        for p in (bn.weight, bn.bias):
            if p is not None:
                p.requires_grad_(True)
                params.append(p)
    return params


def tent_step(model: nn.Module, x: Tensor, optimizer: torch.optim.Optimizer) -> float:
    """One TENT step on the test batch ``x``: minimize the entropy of the predictions with
    respect to the parameters in ``optimizer`` (see :func:`tent_parameters`). Returns the
    entropy before the step."""
    loss = prediction_entropy(model(x))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def tent_online(model: nn.Module, batches: Iterable[Tensor], lr: float) -> Tensor:
    """TENT over a stream: prepares ``model`` (:func:`tent_parameters`, in place), then for each
    (B, *) batch predicts with the forward pass whose entropy it minimizes (one Adam step at
    ``lr``, as Wang et al. for CIFAR). Returns the predicted classes of all batches, (N,)."""
    optimizer = torch.optim.Adam(tent_parameters(model), lr=lr)
    predictions = []
    for x in batches:
        logits = model(x)                                                 # (B, classes)
        loss = prediction_entropy(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        predictions.append(logits.detach().argmax(1))
    return torch.cat(predictions)


def freeze_bn(model: nn.Module) -> nn.Module:
    """Freezes every BN layer of ``model`` for fine-tuning: eval mode (running statistics used
    and no longer updated) and no gradient for its weight and bias. Call it again after every
    ``model.train()``, which puts the BN layers back in training mode. Returns ``model``."""
    for bn in _bns(model):
        bn.eval()
        for p in (bn.weight, bn.bias):
            if p is not None:
                p.requires_grad_(False)
    return model


class KeepBNFrozen(nn.Module):
    """Wraps ``model`` and freezes its BN layers (:func:`freeze_bn`) now and after every
    ``train()``, so a training loop that calls ``model.train()`` each epoch keeps them frozen.
    The forward is ``model``'s."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = freeze_bn(model)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def train(self, mode: bool = True) -> KeepBNFrozen:
        super().train(mode)
        freeze_bn(self.model)
        return self


def bn_state(model: nn.Module) -> dict[str, Tensor]:
    """Copies of every BN's parameters and buffers, by qualified name."""
    state = {}
    for name, bn in model.named_modules():
        if is_batchnorm(bn):
            for key, value in [*bn.named_parameters(recurse=False),
                               *bn.named_buffers(recurse=False)]:
                if value is not None:
                    state[f"{name}.{key}"] = value.detach().clone()
    return state
