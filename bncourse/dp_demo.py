"""Data-parallel training of a small BN model, for notebook 05's synchronized-BN demo.

:func:`train_data_parallel` is one plain loop that runs both in a single process (``world_size
= 1``, the reference) and in every worker of a process group, where each worker takes its shard of
every global batch and the gradients are averaged with one all-reduce per step, as
``DistributedDataParallel`` does. :func:`dp_compare_worker` is the worker that
:func:`bncourse.distributed.launch` runs: it checks one synchronized BN step for exactness, then
trains the same MLP with synchronized and with local BN.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["dp_mlp", "train_data_parallel", "dp_compare_worker"]


def dp_mlp(synchronized: bool, seed: int) -> nn.Sequential:
    """The demo's MLP (``bncourse.models.mlp``, default widths) with :class:`SyncBatchNorm`
    (``synchronized=True``) or local :class:`BatchNorm`, initialized from ``seed``.

    The same seed gives the same initial weights in every process."""
    from bncourse.models import mlp
    from bncourse.nn import BatchNorm, SyncBatchNorm

    torch.manual_seed(seed)
    return mlp(norm=SyncBatchNorm if synchronized else BatchNorm)


def train_data_parallel(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, global_batch: int,
                        lr: float, seed: int, momentum: float = 0.9) -> nn.Module:
    """SGD on ``(x, y)`` with global batches of ``global_batch`` i.i.d. examples.

    In a process group of W workers, each worker computes the loss of its ``global_batch / W``
    examples of every global batch (rank r takes the r-th chunk) and the parameter gradients
    are averaged over workers before the step, so all workers keep equal weights. Without a
    process group (or W = 1) it is ordinary single-process training on the global batch. The
    batch order depends only on ``seed``, so every worker, and the single-process reference,
    sees the same global batches.

    Returns:
        ``model``, trained in place and left in train mode.
    """
    from bncourse.data import batches

    distributed = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if distributed else 1
    rank = dist.get_rank() if distributed else 0
    if global_batch % world_size:
        raise ValueError(f"expected global_batch divisible by the world size {world_size} "
                         f"(got {global_batch})")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        xb, yb = batches(x, y, global_batch, seed=seed * 100003 + epoch)   # (nb, B, 40), (nb, B)
        for i in range(xb.shape[0]):
            if step >= steps:
                break
            xs, ys = xb[i].chunk(world_size)[rank], yb[i].chunk(world_size)[rank]
            loss = F.cross_entropy(model(xs), ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                params = [p for p in model.parameters() if p.grad is not None]
                flat = torch.cat([p.grad.reshape(-1) for p in params])
                dist.all_reduce(flat)
                flat /= world_size
                offset = 0
                for p in params:
                    p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            opt.step()
            step += 1
        epoch += 1
    return model


def dp_compare_worker(rank: int, world_size: int, check_args: tuple, x: Tensor, y: Tensor,
                      x_test: Tensor, y_test: Tensor, seeds: list, steps: int,
                      global_batch: int, lr: float,
                      variants: tuple = ("sync", "local")) -> dict:
    """Notebook 05's worker: one exactness check, then the same training with both BNs.

    Args:
        check_args: ``(x, dout, state_dict)`` for
            :func:`bncourse.distributed.batchnorm_shard_step` with ``synchronized=True``,
            ``steps=2``.
        x, y, x_test, y_test: the data; every worker gets all of it and takes its shards.
        seeds, steps, global_batch, lr: one training run per seed and BN kind, as in
            :func:`train_data_parallel`.
        variants: which BNs to train with: ``"sync"`` (synchronized) and/or ``"local"``.

    Returns:
        ``{"check": <batchnorm_shard_step's result>, "sync": [test accuracy per seed],
        "local": [...]}`` (one key per variant); the accuracies are measured in eval mode with
        this worker's own running statistics (``DistributedDataParallel`` would broadcast rank 0's).
    """
    from bncourse.distributed import batchnorm_shard_step

    out = {"check": batchnorm_shard_step(rank, world_size, *check_args, True, 2)}
    for key in variants:
        synchronized = {"sync": True, "local": False}[key]
        accs = []
        for seed in seeds:
            model = dp_mlp(synchronized, seed)
            train_data_parallel(model, x, y, steps=steps, global_batch=global_batch, lr=lr,
                                seed=seed)
            model.eval()
            with torch.no_grad():
                accs.append((model(x_test).argmax(1) == y_test).double().mean().item())
        out[key] = accs
    return out
