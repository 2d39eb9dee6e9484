"""Batch renormalization (Ioffe 2017): training-time outputs that do not depend on the batch's
composition beyond what the running statistics allow, for small or non-i.i.d. batches."""

from __future__ import annotations

import torch
from torch import Tensor

from bncourse.nn.batchnorm import _affine, _as_channel, _BatchNormBase, batch_norm_train

__all__ = ["BatchRenorm"]


class BatchRenorm(_BatchNormBase):
    r"""Batch renormalization over dim 1 of an (N, C) or (N, C, *spatial) input.

    In training, with batch statistics :math:`\mu_B, \sigma_B = \sqrt{\mathrm{Var}_B + \epsilon}`
    and running ones :math:`\mu, \sigma = \sqrt{\text{running\_var} + \epsilon}`:

    .. math::
        r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}\!\left(\frac{\sigma_B}{\sigma}\right), \quad
        d = \mathrm{clip}_{[-d_{max},\, d_{max}]}\!\left(\frac{\mu_B - \mu}{\sigma}\right), \quad
        y = \gamma \left(\frac{x - \mu_B}{\sigma_B}\, r + d\right) + \beta

    where :math:`r` and :math:`d` are treated as constants in the backward pass. With
    ``r_max = 1`` and ``d_max = 0`` this is exactly batch norm; without clipping the training
    output equals the eval-mode output. Eval mode and the running-statistics update are batch
    norm's (PyTorch conventions: ``momentum`` weights the new batch, unbiased ``running_var``).

    The clipping limits ramp up as in the paper: they stay at ``r = 1, d = 0`` (plain BN) for the
    first ``warmup_steps`` training steps, then grow linearly to ``r_max`` and ``d_max`` over
    ``ramp_steps`` steps (steps are counted by ``num_batches_tracked``).

    Args:
        num_features: C.
        r_max: final limit of r, >= 1. Default: 3 (the paper's).
        d_max: final limit of |d|, >= 0. Default: 5 (the paper's).
        warmup_steps: steps of plain BN first. Default: 0.
        ramp_steps: steps from the plain limits to the final ones. Default: 0 (a jump).
        momentum: as :class:`~bncourse.nn.BatchNorm`. Default: 0.01 -- renormalization
            leans on the running statistics, so they average over more batches.
        eps, affine: as :class:`~bncourse.nn.BatchNorm`. Running statistics are always
            tracked: renormalization needs them.
    """

    def __init__(self, num_features: int, r_max: float = 3.0, d_max: float = 5.0,
                 warmup_steps: int = 0, ramp_steps: int = 0, eps: float = 1e-5,
                 momentum: float | None = 0.01, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        if not r_max >= 1.0:
            raise ValueError(f"expected r_max >= 1 (got r_max={r_max})")
        if not d_max >= 0.0:
            raise ValueError(f"expected d_max >= 0 (got d_max={d_max})")
        if warmup_steps < 0 or ramp_steps < 0:
            raise ValueError("expected warmup_steps >= 0 and ramp_steps >= 0 "
                             f"(got {warmup_steps} and {ramp_steps})")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias)
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.warmup_steps, self.ramp_steps = warmup_steps, ramp_steps

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, "
                f"warmup_steps={self.warmup_steps}, ramp_steps={self.ramp_steps}")

    def current_limits(self) -> tuple[float, float]:
        """``(r_max, d_max)`` in force at this step of the warm-up schedule."""
        step = int(self.num_batches_tracked)
        if step < self.warmup_steps:
            progress = 0.0
        elif self.ramp_steps == 0:
            progress = 1.0
        else:
            progress = min(1.0, (step - self.warmup_steps) / self.ramp_steps)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        x_hat, mean, var = batch_norm_train(x, None, None, self.eps)   # (x - mu_B) / sigma_B
        r_max, d_max = self.current_limits()
        with torch.no_grad():                                          # r, d: constants
            running_std = torch.sqrt(self.running_var + self.eps)
            r = (torch.sqrt(var + self.eps) / running_std).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean) / running_std).clamp(-d_max, d_max)
        out = x_hat * _as_channel(r, x.dim()) + _as_channel(d, x.dim())
        return _affine(out, self.weight, self.bias), mean, var, x.numel() // x.shape[1]
