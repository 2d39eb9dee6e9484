"""SyncBatchNorm across 2 gloo worker processes equals BatchNorm on the concatenated batch."""

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from bncourse.distributed import batchnorm_shard_step, launch
from bncourse.nn import BatchNorm, SyncBatchNorm

FLOAT64_ATOL = 1e-12
WORLD_SIZE = 2


def single_process_reference(x, dout, state_dict, steps):
    bn = BatchNorm(x.shape[1]).double()
    bn.load_state_dict(state_dict)
    for _ in range(steps - 1):
        bn(x)
    xr = x.clone().requires_grad_(True)
    out = bn(xr)
    out.backward(dout)
    return {"out": out.detach().numpy(), "dx": xr.grad.numpy(),
            "dweight": bn.weight.grad.numpy(), "dbias": bn.bias.grad.numpy(),
            "state_dict": {k: v.numpy() for k, v in bn.state_dict().items()}}


def initial_state(num_features):
    torch.manual_seed(0)
    bn = BatchNorm(num_features).double()
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    return bn.state_dict()


@pytest.fixture(scope="module")
def runs():
    """One launch per configuration, shared by the assertions below (workers take ~2 s)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 5, generator=g, dtype=torch.float64) * 2 + 1
    x[:4] += 3  # the two shards have different statistics: local BN must differ
    dout = torch.randn(x.shape, generator=g, dtype=torch.float64)
    state = initial_state(3)
    return {
        "reference": single_process_reference(x, dout, state, steps=2),
        "sync": launch(batchnorm_shard_step, WORLD_SIZE, x, dout, state, True, 2),
        "local": launch(batchnorm_shard_step, WORLD_SIZE, x, dout, state, False, 2),
    }


def gathered(results, key):
    return np.concatenate([r[key] for r in results])


@pytest.mark.parametrize("key", ["out", "dx"])
def test_sync_outputs_and_input_gradients_equal_global_batchnorm(runs, key):
    np.testing.assert_allclose(gathered(runs["sync"], key), runs["reference"][key],
                               atol=FLOAT64_ATOL)


@pytest.mark.parametrize("key", ["dweight", "dbias"])
def test_sync_parameter_gradients_summed_over_workers_equal_global_batchnorm(runs, key):
    for worker in runs["sync"]:
        np.testing.assert_allclose(worker[key], runs["reference"][key], atol=1e-10)


def test_sync_running_statistics_equal_global_batchnorm_on_every_worker(runs):
    for worker in runs["sync"]:
        for k, v in runs["reference"]["state_dict"].items():
            np.testing.assert_allclose(worker["state_dict"][k], v, atol=FLOAT64_ATOL, err_msg=k)


def test_local_batchnorm_differs_from_global_batchnorm(runs):
    assert np.abs(gathered(runs["local"], "out") - runs["reference"]["out"]).max() > 0.1


def test_one_value_per_channel_per_worker_is_enough_when_synchronized():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    dout = torch.randn(2, 3, generator=g, dtype=torch.float64)
    state = initial_state(3)
    sync = launch(batchnorm_shard_step, WORLD_SIZE, x, dout, state, True, 1)
    reference = single_process_reference(x, dout, state, steps=1)
    np.testing.assert_allclose(gathered(sync, "dx"), reference["dx"], atol=1e-10)


def test_without_a_process_group_it_is_plain_batchnorm():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    plain, sync = BatchNorm(3).double(), SyncBatchNorm(3).double()
    torch.testing.assert_close(sync(x), plain(x), atol=FLOAT64_ATOL, rtol=0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync(torch.randn(1, 3, dtype=torch.float64))


def _failing_worker(rank, world_size):
    raise RuntimeError(f"boom on rank {rank}")


def test_launch_reports_a_failing_worker_and_leaves_no_process_behind():
    with pytest.raises(RuntimeError, match="boom on rank"):
        launch(_failing_worker, WORLD_SIZE)
    assert mp.active_children() == []


def test_launch_rejects_a_bad_world_size():
    with pytest.raises(ValueError, match=r"expected world_size >= 1 \(got world_size=0\)"):
        launch(_failing_worker, 0)
    with pytest.raises(TypeError, match="expected world_size to be an int"):
        launch(_failing_worker, 2.0)


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_eval_mode_never_communicates(monkeypatch, track_running_stats):
    # a group of two whose collectives fail: eval mode must not call them (one worker may run
    # inference alone, and an all-reduce would wait for the other forever)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)

    def no_collectives(*args, **kwargs):
        raise AssertionError("eval mode called a collective")

    monkeypatch.setattr(dist, "all_reduce", no_collectives)
    bn = SyncBatchNorm(3, track_running_stats=track_running_stats).eval()
    ref = BatchNorm(3, track_running_stats=track_running_stats).eval()
    x = torch.randn(6, 3)
    torch.testing.assert_close(bn(x), ref(x))


def _dying_worker(rank, world_size):
    if rank == 1:
        os._exit(3)  # dies without reporting, as a killed process would
    return rank


def test_launch_reports_a_worker_that_died_without_waiting_for_the_timeout():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="worker 1 exited with code 3 without a result"):
        launch(_dying_worker, WORLD_SIZE, timeout=60.0)
    assert time.monotonic() - start < 30.0
    assert mp.active_children() == []
