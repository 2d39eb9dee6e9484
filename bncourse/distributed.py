"""Local data-parallel workers for the synchronized-BN demonstrations.

:func:`launch` starts ``world_size`` fresh processes on this machine, joins them in a gloo process
group over 127.0.0.1, runs a worker function in each and returns the results by rank. Worker
functions live in this module (or any importable module) because spawned processes import them
by name; that is what lets a Jupyter kernel launch them.

On a real cluster the same worker code runs under ``torchrun``, which starts the processes and
sets the rendezvous environment itself::

    torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 train.py

with ``dist.init_process_group("nccl")`` (GPUs) or ``"gloo"`` (CPUs) at the top of ``train.py``
and the BNs of the model being :class:`bncourse.nn.SyncBatchNorm`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

from bncourse._validation import check_int

__all__ = ["launch", "batchnorm_shard_step"]

_POLL_S = 0.2  # how often launch checks for workers that died without reporting


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _portable(value):
    """Tensors become numpy arrays, so results cross the process boundary as plain data
    (no shared-memory handles that would tie the worker's lifetime to the parent)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_portable(v) for v in value)
    return value


def _worker_entry(rank, world_size, port, backend, timeout_s, fn, args, results) -> None:
    # The loopback interface: the course's workers never leave this machine.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo0" if sys.platform == "darwin" else "lo")
    torch.set_num_threads(1)  # world_size processes share the machine's cores
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
        try:
            results.put((rank, None, _portable(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException:  # report every failure to the parent instead of dying silently
        results.put((rank, traceback.format_exc(), None))


def _dead_workers(procs, reported) -> list[str]:
    """Workers that failed without reporting (killed, or failed before running ``fn``)."""
    return [f"worker {rank} exited with code {p.exitcode} without a result"
            for rank, p in enumerate(procs) if p.exitcode not in (None, 0) and rank not in reported]


def launch(fn: Callable, world_size: int, *args, backend: str = "gloo",
           timeout: float = 60.0) -> list:
    """Runs ``fn(rank, world_size, *args)`` in ``world_size`` new processes, one process group.

    Args:
        fn: an importable (module-level) function; its tensors are returned as numpy arrays.
        world_size: number of worker processes, >= 1.
        args: passed to every worker (picklable: tensors, arrays, numbers, state dicts).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per worker).
        timeout: seconds to wait for all workers before terminating them.

    Returns:
        The workers' results, indexed by rank.

    Raises:
        RuntimeError: a worker failed (its traceback is included) or the timeout passed. No
            worker process outlives this call.
    """
    check_int("world_size", world_size, minimum=1)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker_entry, daemon=True,
                         args=(rank, world_size, port, backend, timeout, fn, args, results))
             for rank in range(world_size)]
    for p in procs:
        p.start()
    by_rank, errors = {}, []
    deadline = time.monotonic() + timeout
    try:
        while len(by_rank) < world_size and not errors:
            # a dead worker's last words may still be in the pipe: wait longer once it has died
            dead = _dead_workers(procs, by_rank)
            try:
                rank, error, value = results.get(timeout=1.0 if dead else _POLL_S)
            except queue_module.Empty:
                errors += dead
                if time.monotonic() > deadline:
                    errors.append(f"workers did not finish within {timeout} s")
                continue
            if error is not None:
                errors.append(f"worker {rank}:\n{error}")
            by_rank[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 0.5)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        results.close()
        results.join_thread()
    if errors:
        raise RuntimeError("distributed workers failed: " + "\n".join(errors))
    return [by_rank[r] for r in range(world_size)]


def batchnorm_shard_step(rank: int, world_size: int, x: torch.Tensor, dout: torch.Tensor,
                         state_dict: dict, synchronized: bool, steps: int = 1) -> dict:
    """One worker's share of a data-parallel BN step: the demo and the tests use it.

    The global batch ``x`` (N, C, *) is split evenly along dim 0; this worker normalizes its
    shard with :class:`~bncourse.nn.SyncBatchNorm` (``synchronized=True``) or a plain local
    :class:`~bncourse.nn.BatchNorm`, both loaded from ``state_dict``, ``steps`` times, and
    backpropagates ``dout``'s shard once.

    Returns:
        ``out`` and ``dx`` of the shard, ``dweight`` and ``dbias`` summed over workers (as a
        data-parallel wrapper would combine them), and the module's ``state_dict``.
    """
    from bncourse.nn import BatchNorm, SyncBatchNorm

    num_features = x.shape[1]
    module = (SyncBatchNorm if synchronized else BatchNorm)(num_features).to(x.dtype)
    module.load_state_dict(state_dict)
    shard = x.chunk(world_size, dim=0)[rank].clone().requires_grad_(True)
    for _ in range(steps - 1):
        module(shard.detach())
    out = module(shard)
    out.backward(dout.chunk(world_size, dim=0)[rank])
    grads = torch.stack([module.weight.grad, module.bias.grad])
    dist.all_reduce(grads)
    return {"out": out, "dx": shard.grad, "dweight": grads[0], "dbias": grads[1],
            "state_dict": dict(module.state_dict())}

