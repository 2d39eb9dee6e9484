"""A small, seeded training loop with a progress bar and a history.

The loop is deliberately plain (pre-batched tensors, no DataLoader, cross-entropy, one optimizer)
so a learner can read all of it, and fast enough on a 2-core CPU to run several seeds per
experiment.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bncourse._validation import check_int
from bncourse.data import MNIST1D, batches, check_batch_args
from bncourse.state import restored

__all__ = [
    "set_seed", "History", "Metrics", "evaluate", "train", "run_seeds", "EVAL_MODES", "SCHEDULES",
]

EVAL_MODES = ("eval", "train")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")


def set_seed(seed: int) -> None:
    """Seeds ``torch`` (CPU and CUDA), ``numpy``'s global state and ``random``."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- learners' code uses the global state
    torch.manual_seed(seed)


@dataclass
class History:
    """What :func:`train` records.

    Attributes:
        step_loss: the training loss of every step. If training diverged, the last entry is the
            non-finite loss that stopped it (no optimizer step was taken for it).
        epoch_loss: mean training loss over each recorded epoch's steps.
        train_acc: accuracy on the whole training set after each recorded epoch.
        test_acc: accuracy on the test set after each recorded epoch.
        diverged: a non-finite loss stopped training; the epoch it happened in and later ones
            are not recorded, so the per-epoch lists are shorter than ``epochs``.
        steps: optimizer steps taken.
    """

    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    diverged: bool = False
    steps: int = 0


class Metrics(NamedTuple):
    """Mean cross-entropy loss and accuracy (a fraction in [0, 1])."""

    loss: float
    accuracy: float


def _model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, *, mode: str = "eval", batch_size: int | None = None
) -> Metrics:
    """Loss and accuracy of ``model`` on ``(x, y)``, leaving the model exactly as it was.

    Args:
        model: maps (N, *) inputs to (N, classes) logits.
        x: (N, *) inputs; moved to the model's device.
        y: (N,) integer labels.
        mode: ``"eval"`` (running statistics, dropout off) or ``"train"`` (batch statistics and
            dropout on -- what a learner gets who forgets ``model.eval()``).
        batch_size: evaluate in chunks of this size, so that in train mode the batch statistics
            come from batches of this size (the last chunk may be shorter). Default: all of
            ``x`` at once.

    Returns:
        :class:`Metrics` of Python floats.

    The train/eval flag of every submodule and the value of every buffer are restored, so an
    evaluation in train mode does not move BN's running statistics.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"expected mode to be one of {EVAL_MODES} (got {mode!r})")
    n = x.shape[0]
    if batch_size is None:
        batch_size = n
    check_int("batch_size", batch_size, minimum=1)
    if n == 0 or y.shape != (n,):
        raise ValueError(
            "expected x of shape (N, *) and y of shape (N,) with N > 0 "
            f"(got x {tuple(x.shape)}, y {tuple(y.shape)})"
        )
    device = _model_device(model)
    if device is not None:
        x, y = x.to(device), y.to(device)

    with restored(model, parameters=False):
        model.train(mode == "train")
        loss_sum, correct = 0.0, 0
        for start in range(0, n, batch_size):
            logits = model(x[start : start + batch_size])             # (B, classes)
            yb = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(dim=1) == yb).sum().item()
    return Metrics(loss=loss_sum / n, accuracy=correct / n)


def _check_shard(shard, batch_size: int) -> tuple[int, int]:
    """``(rank, world_size)`` from ``train``'s ``shard`` argument, checked."""
    if shard is None:
        return 0, 1
    if not (isinstance(shard, tuple) and len(shard) == 2):
        raise TypeError(f"expected shard to be a tuple (rank, world_size) (got {shard!r})")
    rank, world_size = shard
    check_int("world_size", world_size, minimum=1)
    check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"expected rank < world_size (got rank={rank}, world_size={world_size})")
    if batch_size % world_size:
        raise ValueError(f"expected batch_size divisible by the world size {world_size} "
                         f"(got batch_size={batch_size})")
    return rank, world_size


def _make_optimizer(
    optimizer, params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if isinstance(optimizer, str):
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif callable(optimizer):
        return optimizer(params)
    raise ValueError(
        f"expected optimizer to be one of {OPTIMIZERS} or a callable params -> Optimizer "
        f"(got {optimizer!r})"
    )


def train(
    model: nn.Module,
    data: MNIST1D,
    *,
    epochs: int = 5,
    lr: float = 0.1,
    batch_size: int = 64,
    optimizer="sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    order: str = "iid",
    max_steps: int | None = None,
    device="cpu",
    progress: bool | None = None,
    eval_mode: str = "eval",
    on_step: Callable[[int, nn.Module, float], None] | None = None,
    schedule: str = "constant",
    shard: tuple[int, int] | None = None,
    accumulate: int = 1,
) -> History:
    """Trains ``model`` with cross-entropy on ``data.x_train`` and records a :class:`History`.

    Args:
        model: maps (N, *) inputs to (N, classes) logits; trained in place.
        data: an :class:`~bncourse.data.MNIST1D` (or any tuple of the same four tensors).
        epochs: passes over the training set. Default: 5.
        lr: learning rate. Default: 0.1.
        batch_size: examples per step; the last ``N % batch_size`` of each epoch's order are
            dropped. Default: 64.
        optimizer: ``"sgd"`` (with ``momentum`` and ``weight_decay``), ``"adam"`` (with
            ``weight_decay``), or a callable ``params -> torch.optim.Optimizer`` (then ``lr``,
            ``momentum`` and ``weight_decay`` are not used).
        momentum: SGD momentum. Default: 0.9.
        weight_decay: L2 penalty. Default: 0.
        seed: seeds ``torch`` at the start (dropout, noise) and each epoch's batch order
            (``batches(..., seed=seed * 100003 + epoch)``).
        order: ``"iid"`` or ``"class_sorted"`` batches, see :func:`~bncourse.data.batches`.
        max_steps: stop after this many steps; the final partial epoch is still evaluated and
            recorded.
        device: where to train; model and data are moved there.
        progress: show a ``tqdm`` bar. ``None`` (default): only on a terminal, so notebooks and
            CI stay free of it.
        eval_mode: the ``mode`` of the per-epoch :func:`evaluate` calls; with ``"train"`` the
            batch statistics come from batches of ``batch_size``.
        on_step: called as ``on_step(step, model, loss)`` after each optimizer step; ``step`` is
            the step's 0-based index (its loss is ``history.step_loss[step]``), ``loss`` a float.
        schedule: ``"constant"`` keeps the learning rate; ``"cosine"`` decays it from ``lr`` at
            the first step towards 0 over the run's steps,
            ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` with ``T`` the total
            number of steps (``epochs`` epochs, or ``max_steps`` if fewer). Applies to every
            optimizer, a callable one included.
        shard: ``(rank, world_size)`` for data-parallel training: every step computes the loss
            on the ``rank``-th of ``world_size`` equal slices of the batch, so ``batch_size`` is
            the global batch and ``world_size`` processes with the same ``seed`` together see
            exactly the single-process batches. Averaging the gradients across the processes is
            the optimizer's job (see :func:`bncourse.dp_demo.data_parallel_sgd`). Default:
            ``None``, the whole batch. Every process must take the same number of steps, so
            with collectives in the step a non-finite loss on one process only leaves the
            others waiting.
        accumulate: gradient accumulation: each step runs forward and backward on
            ``accumulate`` equal micro-batches of the (process's) batch, each loss divided by
            ``accumulate``, then takes one optimizer step: the gradient of the whole batch's
            mean loss for a network without BN. BN layers see only a micro-batch: their
            statistics (and running-statistics updates) are those of the micro-batches, as in
            ghost BN. Default: 1.

    Returns:
        The :class:`History`. Training stops at the first non-finite loss with
        ``diverged=True``; accuracies are then not recorded for that and later epochs.

    The model is left in train mode. Two calls with the same arguments on identically
    initialized models return identical histories.
    """
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"expected eval_mode to be one of {EVAL_MODES} (got {eval_mode!r})")
    if schedule not in SCHEDULES:
        raise ValueError(f"expected schedule to be one of {SCHEDULES} (got {schedule!r})")
    check_int("epochs", epochs, minimum=0)
    check_int("max_steps", max_steps, minimum=0, allow_none=True)

    check_batch_args(data[0], data[1], batch_size, order)
    rank, world_size = _check_shard(shard, batch_size)
    check_int("accumulate", accumulate, minimum=1)
    if (batch_size // world_size) % accumulate:
        raise ValueError(f"expected accumulate to divide the batch of {batch_size // world_size} "
                         f"per process (got accumulate={accumulate})")

    device = torch.device(device)
    model.to(device)
    x_train, y_train, x_test, y_test = (t.to(device) for t in data)
    torch.manual_seed(seed)
    opt = _make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    eval_batch = batch_size if eval_mode == "train" else None

    history = History()
    steps_per_epoch = x_train.shape[0] // batch_size
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    scheduler = None
    if schedule == "cosine":
        horizon = max(total, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, horizon) / horizon)))
    bar = tqdm(total=total, disable=None if progress is None else not progress, unit="step")
    try:
        for epoch in range(epochs):
            if max_steps is not None and history.steps >= max_steps:
                break
            xb, yb = batches(x_train, y_train, batch_size, order=order, seed=seed * 100003 + epoch)
            model.train()
            first = history.steps
            for i in range(xb.shape[0]):
                if max_steps is not None and history.steps >= max_steps:
                    break
                x_step, y_step = xb[i], yb[i]                          # (B, *), (B,)
                if world_size > 1:                                     # this process's slice
                    x_step = x_step.chunk(world_size)[rank]            # (B / W, *)
                    y_step = y_step.chunk(world_size)[rank]
                opt.zero_grad(set_to_none=True)
                loss_value = 0.0
                for x_micro, y_micro in zip(x_step.chunk(accumulate), y_step.chunk(accumulate),
                                            strict=True):
                    # (B/(W k), classes) -> (); the mean over the k micro-batches is the batch's
                    loss = F.cross_entropy(model(x_micro), y_micro) / accumulate
                    loss_value += loss.item()
                    if not math.isfinite(loss_value):
                        break
                    loss.backward()
                history.step_loss.append(loss_value)
                if not math.isfinite(loss_value):
                    history.diverged = True
                    break
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                history.steps += 1
                if on_step is not None:
                    on_step(history.steps - 1, model, loss_value)
                bar.update(1)
            if history.diverged:
                break
            history.epoch_loss.append(float(np.mean(history.step_loss[first:])))
            history.train_acc.append(
                evaluate(model, x_train, y_train, mode=eval_mode, batch_size=eval_batch).accuracy
            )
            history.test_acc.append(
                evaluate(model, x_test, y_test, mode=eval_mode, batch_size=eval_batch).accuracy
            )
            bar.set_postfix(loss=f"{history.epoch_loss[-1]:.3f}", test_acc=history.test_acc[-1])
    finally:
        bar.close()
    model.train()
    return history


def run_seeds(
    make_model: Callable[[], nn.Module], data: MNIST1D, seeds: Sequence[int], **train_kwargs
) -> list[History]:
    """Trains a fresh model per seed: ``set_seed(seed)``, ``make_model()``, ``train(...)``.

    Args:
        make_model: builds an untrained model (its initialization uses the seeded RNG).
        data: the dataset.
        seeds: one run per seed.
        **train_kwargs: passed to :func:`train` (everything but ``seed``).

    Returns:
        One :class:`History` per seed, in order.
    """
    if "seed" in train_kwargs:
        raise ValueError("expected the seeds in `seeds`, not a `seed` keyword (got seed=...)")
    histories = []
    for seed in seeds:
        set_seed(seed)
        model = make_model()
        histories.append(train(model, data, seed=seed, **train_kwargs))
    return histories
