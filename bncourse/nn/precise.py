"""Precise BN (Wu & Johnson 2021): re-estimate population statistics after training."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from bncourse.nn.fold import is_batchnorm
from bncourse.state import ModelState

__all__ = ["precise_bn"]


@torch.no_grad()
def precise_bn(model: nn.Module, inputs: Iterable[Tensor]) -> nn.Module:
    """Replaces every BN's running statistics by exact averages over ``inputs``.

    The exponential moving average of training lags behind the weights (it mixes statistics of
    older models) and is noisy; precise BN freezes the weights, resets the running statistics
    and accumulates them as a cumulative average (``momentum=None``) over the given batches:
    the mean of batch means and of unbiased batch variances, both unbiased estimates of the
    population's for i.i.d. batches. The same idea as ``torch.optim.swa_utils.update_bn``, which
    only recognizes torch's own BN classes; this also handles bncourse's.

    Every other layer runs in eval mode (dropout off), so the statistics are those of the inputs
    the BNs see at inference.

    Args:
        model: modified in place; its train/eval modes are restored afterwards, and its
            buffers too if anything fails.
        inputs: batches to run, e.g. the (num_batches, B, *) tensor of :func:`bncourse.data.batches`
            (iterating over it gives (B, *) batches). Use batches of the training size.

    Returns:
        ``model``.
    """
    bns = [m for m in model.modules() if is_batchnorm(m) and m.running_mean is not None]
    if not bns:
        raise ValueError("expected a model with batch norm layers that track running statistics")
    state = ModelState(model, parameters=False)
    momenta = {bn: bn.momentum for bn in bns}
    try:
        model.eval()  # dropout and the like as at inference; only the BNs see batch statistics
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        seen = 0
        for xb in inputs:
            model(xb)
            seen += 1
        if seen == 0:
            raise ValueError("expected at least one batch in inputs (got none)")
    except BaseException:
        state.restore(modes=False)  # leave the statistics as they were
        raise
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        state.restore(values=False)
    return model
