"""Data-parallel training of a small BN model, for notebook 05's synchronized-BN demo.

Data parallelism needs two things on top of :func:`bncourse.train.train`: each process takes its
slice of every global batch (``train``'s ``shard``), and the gradients are averaged across
processes before every step (:func:`data_parallel_sgd`, one all-reduce per step, as
``DistributedDataParallel`` does). :func:`train_data_parallel` combines them; in a single process
it is ordinary training on the global batch, the reference. :func:`dp_compare_worker` is the
worker that :func:`bncourse.distributed.launch` runs: it checks one synchronized BN step for
exactness, then trains the same MLP with synchronized and with local BN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from bncourse.data import MNIST1D

__all__ = ["dp_mlp", "data_parallel_sgd", "train_data_parallel", "dp_compare_worker"]


def dp_mlp(synchronized: bool, seed: int) -> nn.Sequential:
    """The demo's MLP (``bncourse.models.mlp``, default widths) with :class:`SyncBatchNorm`
    (``synchronized=True``) or local :class:`BatchNorm`, initialized from ``seed``.

    The same seed gives the same initial weights in every process."""
    from bncourse.models import mlp
    from bncourse.nn import BatchNorm, SyncBatchNorm

    torch.manual_seed(seed)
    return mlp(norm=SyncBatchNorm if synchronized else BatchNorm)


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    # one all-reduce of all gradients, flattened, then divided by the number of processes
    world_size = _world()[1]
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    if world_size == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for g, averaged in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(averaged.view_as(g))


def data_parallel_sgd(lr: float, momentum: float = 0.9
                      ) -> Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]:
    """An ``optimizer`` for :func:`~bncourse.train.train`: SGD whose every step first averages
    the gradients over the default process group (nothing to average without one).

    Every process starts from the same weights and applies the same averaged gradient, so the
    weights stay equal, as with ``DistributedDataParallel``.
    """
    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
        optimizer.register_step_pre_hook(_average_gradients)
        return optimizer
    return make


def train_data_parallel(model: nn.Module, data: MNIST1D, *, steps: int, global_batch: int,
                        lr: float, seed: int, momentum: float = 0.9):
    """``steps`` SGD steps of :func:`~bncourse.train.train` on global batches of
    ``global_batch``, shared among the processes of the default process group.

    Rank r of W computes the loss of the r-th ``global_batch / W`` examples of every global
    batch; the gradients are averaged before each step. Without a process group (or W = 1) it is
    single-process training on the global batch. The batch order depends only on ``seed``, so
    every process, and the single-process reference, sees the same global batches.

    Returns:
        ``train``'s :class:`~bncourse.train.History`; its last ``test_acc`` is measured in eval
        mode with this process's running statistics. ``model`` is trained in place.
    """
    from bncourse.train import train

    rank, world_size = _world()
    epochs = math.ceil(steps / (data[0].shape[0] // global_batch))
    return train(model, data, epochs=epochs, max_steps=steps, batch_size=global_batch,
                 optimizer=data_parallel_sgd(lr, momentum), seed=seed,
                 shard=(rank, world_size))


def dp_compare_worker(rank: int, world_size: int, check_args: tuple, data: MNIST1D,
                      seeds: list, steps: int, global_batch: int, lr: float,
                      variants: tuple = ("sync", "local")) -> dict:
    """Notebook 05's worker: one exactness check, then the same training with both BNs.

    Args:
        check_args: ``(x, dout, state_dict)`` for
            :func:`bncourse.distributed.batchnorm_shard_step` with ``synchronized=True``,
            ``steps=2``.
        data: the dataset; every worker gets all of it and takes its slices.
        seeds, steps, global_batch, lr: one training run per seed and BN kind, as in
            :func:`train_data_parallel`.
        variants: which BNs to train with: ``"sync"`` (synchronized) and/or ``"local"``.

    Returns:
        ``{"check": <batchnorm_shard_step's result>, "sync": {"test_acc": [...],
        "state_dict": [...]}, "local": {...}}``, one entry per variant and one list item per
        seed: the final test accuracy (eval mode, this worker's own running statistics;
        ``DistributedDataParallel`` would broadcast rank 0's) and the trained model's state.
    """
    from bncourse.distributed import batchnorm_shard_step

    out = {"check": batchnorm_shard_step(rank, world_size, *check_args, True, 2)}
    for key in variants:
        synchronized = {"sync": True, "local": False}[key]
        runs = {"test_acc": [], "state_dict": []}
        for seed in seeds:
            model = dp_mlp(synchronized, seed)
            history = train_data_parallel(model, data, steps=steps, global_batch=global_batch,
                                          lr=lr, seed=seed)
            runs["test_acc"].append(history.test_acc[-1])
            runs["state_dict"].append(dict(model.state_dict()))
        out[key] = runs
    return out
