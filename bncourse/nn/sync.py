"""Synchronized batch norm over ``torch.distributed``, on any backend (gloo on CPUs, NCCL on GPUs).

``torch.nn.SyncBatchNorm`` only accepts CUDA tensors; this one computes the same thing with
plain collectives, so data-parallel workers on CPUs normalize with the statistics of the global
batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bncourse.nn.batchnorm import (
    BatchNorm,
    _accumulation_dtype,
    _affine,
    _as_channel,
    _BatchNormBase,
    _channel_sum,
    _closed_form_dx,
)

__all__ = ["SyncBatchNorm"]


def _all_reduce_sum(t: Tensor, group) -> Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BN with statistics all-reduced over ``group``.

    Forward (two all-reduces, two-pass as in the single-process version, so equally accurate)::

        M, S = all_reduce([local count, sum(x)])        # values per channel, all workers
        mean = S / M                                    # (C,)
        var  = all_reduce(sum((x - mean) ** 2)) / M     # (C,) biased

    The reduced sums travel in float64: counts stay exact past float32's 2**24, and half inputs
    (whose maths runs in float32, as in :class:`~bncourse.nn.BatchNorm`) lose nothing. A worker
    with an empty batch still takes part (count 0), or its peers would wait forever.

    Backward (one all-reduce of the two per-channel sums the closed form needs)::

        dx = gamma / std * (dout - all_reduce(sum(dout)) / M
                                 - x_hat * all_reduce(sum(dout * x_hat)) / M)

    ``dgamma`` and ``dbeta`` stay local sums: like every other parameter gradient they are
    combined across workers by the data-parallel wrapper (or an explicit all-reduce).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        acc = _accumulation_dtype(x.dtype)
        xa = x.to(acc)
        # one all-reduce for the count and the sums: [count, sum_1, ..., sum_C]
        count_and_sum = torch.cat([torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64),
                                   _channel_sum(xa).reshape(-1).to(torch.float64)])
        count_and_sum = _all_reduce_sum(count_and_sum, group)
        total = count_and_sum[0].item()                  # 0 only if every worker's batch is empty
        mean = (count_and_sum[1:] / max(total, 1)).to(acc)                   # (C,)
        x_hat = xa - _as_channel(mean, x.dim())                              # (N, C, *)
        square_sum = _all_reduce_sum(
            _channel_sum(x_hat * x_hat).reshape(-1).to(torch.float64), group)
        var = (square_sum / max(total, 1)).to(acc)                           # (C,) biased
        inv_std = torch.rsqrt(var + eps)
        x_hat = x_hat * _as_channel(inv_std, x.dim())
        out = _affine(x_hat, None if weight is None else weight.to(acc),
                      None if bias is None else bias.to(acc)).to(x.dtype)
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.total, ctx.group = total, group
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var, torch.tensor(int(total))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, _dmean, _dvar, _dtotal):
        x_hat, inv_std, weight = ctx.saved_tensors
        acc = inv_std.dtype
        dout_in, dout = dout, dout.to(acc)
        local = torch.cat([_channel_sum(dout).reshape(1, -1),
                           _channel_sum(dout * x_hat).reshape(1, -1)])       # (2, C)
        dbias_local, dweight_local = local[0].clone(), local[1].clone()
        dbias_all, dweight_all = _all_reduce_sum(local, ctx.group) / max(ctx.total, 1)
        scale = inv_std if weight is None else inv_std * weight.to(acc)      # (C,)
        dx = None
        if ctx.needs_input_grad[0]:
            one = torch.ones_like(inv_std)               # x_hat is saved: its inv_std is 1
            dx = _closed_form_dx(dout, x_hat, _as_channel(one, x_hat.dim()),
                                 _as_channel(scale, x_hat.dim()),
                                 _as_channel(dbias_all, x_hat.dim()),
                                 _as_channel(dweight_all, x_hat.dim())).to(dout_in.dtype)
        dw = db = None
        if weight is not None and ctx.needs_input_grad[1]:
            dw = dweight_local.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dbias_local.to(ctx.bias_dtype)
        return dx, dw, db, None, None


class SyncBatchNorm(_BatchNormBase):
    """Batch norm whose training statistics span every worker of a process group.

    Equal to :class:`~bncourse.nn.BatchNorm` applied to the concatenation of all workers'
    batches: same outputs, same input gradients, same running statistics on every worker (the
    unbiased correction uses the global count). Parameter gradients are local sums; average them
    across workers as for any parameter (``DistributedDataParallel`` does).

    Without an initialized process group (or with a group of one) it is plain batch norm, so the
    same model runs in a notebook and under ``torchrun``. Eval mode communicates nothing: it uses
    the running statistics, or (``track_running_stats=False``) the local batch's.

    Args:
        num_features: C.
        process_group: the group to synchronize over. Default: the whole world.
        eps, momentum, affine, track_running_stats, bias: as :class:`~bncourse.nn.BatchNorm`.

    Every worker must call forward (and backward) the same number of times, as with any
    collective; a worker's local batch may have a single value per channel as long as the
    global batch has more.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group=None, device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def _synchronized(self) -> bool:
        """Training with a process group of more than one worker. Eval mode never communicates,
        even without running statistics: one worker may run inference alone."""
        return (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def _check_input(self, x: Tensor, *, training: bool | None = None) -> None:
        # one value per channel locally is fine when synchronized: forward checks the global count
        super()._check_input(x, training=self._uses_batch_stats() and not self._synchronized())

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        if not self._synchronized():
            return super()._normalize_batch(x)
        out, mean, var, total = _SyncBatchNormFunction.apply(
            x, self.weight, self.bias, self.eps, self.process_group)
        count = int(total.item())
        if count == 1:
            raise ValueError("expected more than 1 value per channel when training, across all "
                             f"workers (got {count})")
        return out, mean, var, count

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() > 0 or not self._synchronized():
            return super().forward(x)
        # an empty local batch still joins the collectives its peers wait on
        self._check_input(x)
        out, mean, var, count = self._normalize_batch(x)
        if self.track_running_stats:
            if count == 0:       # every worker's batch is empty: count the step, as BatchNorm
                self.num_batches_tracked.add_(1)
            else:
                self._update_running_stats(mean, var, count)
        return out

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """``module`` with every batch norm replaced by a :class:`SyncBatchNorm`, as
        ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does.

        Converts :class:`~bncourse.nn.BatchNorm`, :class:`SyncBatchNorm` and torch's
        ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm``, at any depth. The new layer takes over the
        old one's parameter and buffer tensors (so an optimizer built before still updates
        them, and ``requires_grad`` is kept), its hyperparameters and its train/eval flag, and
        synchronizes over ``process_group`` (default: the whole world). The course's variants
        (ghost, renorm, noisy BN) compute other statistics and are left as they are.

        Returns:
            The converted module (``module`` itself, changed in place, unless ``module`` is a
            batch norm).

        Examples::

            >>> net = nn.Sequential(nn.Linear(4, 8), nn.Sequential(BatchNorm(8)))
            >>> SyncBatchNorm.convert_sync_batchnorm(net)[1][0].__class__.__name__
            'SyncBatchNorm'
        """
        converted = module
        if type(module) in (BatchNorm, SyncBatchNorm) or isinstance(
                module, nn.modules.batchnorm._BatchNorm):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group,
                            bias=module.bias is not None)
            with torch.no_grad():
                if module.affine:
                    converted.weight = module.weight
                    converted.bias = module.bias
                converted.running_mean = module.running_mean
                converted.running_var = module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted

