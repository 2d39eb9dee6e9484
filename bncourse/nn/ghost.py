"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017): BN statistics from small virtual
batches inside a large one, so the ghost batch size sets the amount of batch noise."""

from __future__ import annotations

import torch
from torch import Tensor

from bncourse._validation import check_input_shape, check_int
from bncourse.nn.batchnorm import _BatchNormBase, batch_norm_train

__all__ = ["GhostBatchNorm"]


class GhostBatchNorm(_BatchNormBase):
    r"""Batch norm whose training statistics come from ghost batches of ``ghost_batch_size``.

    In training, the (N, C, *) input is split along dim 0 into chunks of ``ghost_batch_size``
    examples (the last may be smaller) and each chunk is normalized with its own per-channel
    mean and biased variance. The running statistics are updated once per call, from the
    statistics of the whole batch (pooled exactly from the chunks):

    .. math::
        \mu = \sum_g \frac{n_g}{n} \mu_g, \qquad
        \sigma^2 = \sum_g \frac{n_g}{n} \left(\sigma_g^2 + (\mu_g - \mu)^2\right)

    so with ``ghost_batch_size >= N`` it is exactly :class:`~bncourse.nn.BatchNorm`. (Some
    implementations instead update the running averages once per ghost batch, which applies the
    momentum several times per step.) Eval mode is unchanged.

    Args:
        num_features: C.
        ghost_batch_size: examples per ghost batch, >= 1 (a ghost batch needs more than one value
            per channel, so 1 only works with spatial dims).
        eps, momentum, affine, track_running_stats, bias: as :class:`~bncourse.nn.BatchNorm`.
    """

    def __init__(self, num_features: int, ghost_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        check_int("ghost_batch_size", ghost_batch_size, minimum=1)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.ghost_batch_size = ghost_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        n, c, g = x.shape[0], x.shape[1], self.ghost_batch_size
        if n % g == 0 and n > g:
            out, means, variances = self._normalize_even_ghosts(x)
            counts = [x.numel() // (c * (n // g))] * (n // g)
        else:
            out, means, variances, counts = self._normalize_chunks(x)
        weights = x.new_tensor(counts).unsqueeze(1) / sum(counts)             # (G, 1)
        mean = (weights * means).sum(0)                                       # (C,)
        var = (weights * (variances + (means - mean) ** 2)).sum(0)            # (C,) biased
        return out, mean, var, sum(counts)

    def _normalize_even_ghosts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """All ghost batches at once: ghost k's channel j becomes channel k * C + j of a
        (g, G * C, *) tensor, so one batch-norm call gives per-ghost statistics."""
        n, c, g = x.shape[0], x.shape[1], self.ghost_batch_size
        ghosts, rest = n // g, x.shape[2:]
        check_input_shape((g, ghosts * c, *rest), None, training=True)
        stacked = x.reshape(ghosts, g, c, *rest).transpose(0, 1).reshape(g, ghosts * c, *rest)
        weight = None if self.weight is None else self.weight.repeat(ghosts)
        bias = None if self.bias is None else self.bias.repeat(ghosts)
        out, mean, var = batch_norm_train(stacked, weight, bias, self.eps)    # (g, G*C, *)
        out = out.reshape(g, ghosts, c, *rest).transpose(0, 1).reshape(x.shape)
        return out, mean.reshape(ghosts, c), var.reshape(ghosts, c)

    def _normalize_chunks(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Ghost batches one by one (the last may be smaller)."""
        chunks = x.split(self.ghost_batch_size, dim=0)
        for chunk in chunks:  # a short last chunk may have a single value per channel
            check_input_shape(tuple(chunk.shape), self.num_features, training=True)
        outs, means, variances, counts = [], [], [], []
        for chunk in chunks:
            out, mean, var = batch_norm_train(chunk, self.weight, self.bias, self.eps)
            outs.append(out)
            means.append(mean)
            variances.append(var)
            counts.append(chunk.numel() // chunk.shape[1])
        return torch.cat(outs), torch.stack(means), torch.stack(variances), counts
