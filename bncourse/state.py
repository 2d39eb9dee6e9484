"""Saving and restoring a model's state: the one helper behind every "leave the model as it was".

Probes that take gradients at fixed parameters, evaluation in train mode (which would move BN's
running statistics) and precise BN all change a model temporarily; they share this helper.

Examples::

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    >>> with restored(model):
    ...     _ = model.eval()
    ...     _ = model[1].running_mean.fill_(3.0)
    >>> model.training, model[1].running_mean.tolist()
    (True, [0.0, 0.0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["ModelState", "restored"]


class ModelState:
    """A snapshot of a model: every submodule's train/eval flag, copies of its buffers and,
    optionally, of its parameters and their ``.grad``.

    Args:
        model: the model.
        parameters: also copy the parameters and their gradients. Default: True.
    """

    def __init__(self, model: nn.Module, *, parameters: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
        self.modes = [(m, m.training) for m in model.modules()]
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.parameters = [
            (p, p.detach().clone(), None if p.grad is None else p.grad.clone())
            for p in model.parameters()
        ] if parameters else []

    @torch.no_grad()
    def restore(self, *, values: bool = True, modes: bool = True) -> None:
        """Puts back the saved buffer and parameter values (``values``) and train/eval flags
        (``modes``)."""
        if values:
            for b, saved in self.buffers:
                b.copy_(saved)
            for p, saved, grad in self.parameters:
                p.copy_(saved)
                p.grad = grad
        if modes:
            for m, flag in self.modes:
                m.training = flag


@contextlib.contextmanager
def restored(model: nn.Module, *, parameters: bool = True) -> Iterator[nn.Module]:
    """Restores the model's flags, buffers and (with ``parameters``) parameters and gradients
    when the block exits, however it exits."""
    state = ModelState(model, parameters=parameters)
    try:
        yield model
    finally:
        state.restore()
