"""SyncBatchNorm across 2 gloo worker processes equals BatchNorm on the concatenated batch."""

import copy
import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bncourse.distributed import batchnorm_shard_step, launch
from bncourse.nn import BatchNorm, BatchRenorm, GhostBatchNorm, SyncBatchNorm

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


# --- PyTorch's DistributedDataParallel SyncBatchNorm tests, on CPU (gloo) ---------------------
# torch runs these on GPUs only (its SyncBatchNorm needs CUDA). The scenarios follow
# torch/testing/_internal/distributed/distributed_test.py: a torch model trained on the global
# batch in one process is the oracle; the same model converted to our SyncBatchNorm and wrapped
# in DistributedDataParallel trains on each rank's slice; parameters and buffers must agree
# after every step.

DDP_ITERATIONS = 5
DDP_ATOL = 1e-10  # float64: only the summation order differs


class BatchNormNet(nn.Module):
    """torch's test model: a BN over 4 channels of length 10 between two linear layers."""

    def __init__(self, affine=True):
        super().__init__()
        self.fc1 = nn.Linear(2, 40, bias=False)
        self.bn = nn.BatchNorm1d(4, affine=affine)
        self.fc2 = nn.Linear(40, 4, bias=False)

    def forward(self, x):
        x = self.bn(self.fc1(x).reshape(-1, 4, 10)).reshape(-1, 40)
        return F.softmax(self.fc2(x), dim=1)


def _relative_difference(tensors, others) -> float:
    """Largest ``|a - b| / max(1, |a|)`` over pairs of tensors (parameters grow with
    ``param += grad``, so absolute differences grow with them)."""
    with torch.no_grad():
        return max(float(((a - b).abs() / a.abs().clamp(min=1)).max()) for a, b in
                   zip(tensors, others, strict=True))


def _ddp_case(rank, world_size, build, input_shape, local_sizes, *, convert=True,
              memory_format=torch.contiguous_format):
    """Trains ``build()`` for DDP_ITERATIONS steps (param += grad, as torch's test) in one
    process on the global batch and under DDP with rank r taking ``local_sizes[r]`` examples.
    Returns the largest relative parameter and buffer differences over the steps."""
    torch.manual_seed(0)                           # the same model and data on every rank
    base = build().double()
    ddp_module = copy.deepcopy(base)
    if convert:
        ddp_module = SyncBatchNorm.convert_sync_batchnorm(ddp_module)
    ddp = nn.parallel.DistributedDataParallel(ddp_module)
    global_bs = sum(local_sizes)
    x = torch.randn(global_bs, *input_shape, dtype=torch.float64)
    x = x.contiguous(memory_format=memory_format) if x.dim() == 4 else x
    with torch.no_grad():
        target = torch.randn_like(copy.deepcopy(base)(x))
    offset = sum(local_sizes[:rank])
    param_diff = buffer_diff = 0.0
    keeps_format = True
    for _ in range(DDP_ITERATIONS):
        # a sum over examples divided by the global batch: equal for any split; DDP averages
        # the gradients over ranks, so each rank's share is scaled by the world size
        ((base(x) - target) ** 2).sum().div(global_bs).backward()
        piece = slice(offset, offset + local_sizes[rank])
        out = ddp(x[piece])
        keeps_format &= out.is_contiguous(memory_format=memory_format)
        ((out - target[piece]) ** 2).sum().div(global_bs / world_size).backward()
        for model in (base, ddp.module):
            with torch.no_grad():
                for p in model.parameters():
                    p += p.grad
                    p.grad = None
        param_diff = max(param_diff, _relative_difference(base.parameters(),
                                                          ddp.module.parameters()))
        buffer_diff = max(buffer_diff, _relative_difference(base.buffers(), ddp.module.buffers()))
        order = torch.randperm(global_bs)          # the same shuffle on every rank
        x, target = x[order], target[order]
    return {"params": param_diff, "buffers": buffer_diff, "memory_format": keeps_format}


def _ddp_running_value_case(rank, world_size):
    """torch's Diff_Input_Sizes_Running_Value: ranks with 20 and 200 values per channel;
    after 100 steps with momentum 0.99 the running statistics are the global batch's."""
    bn = nn.parallel.DistributedDataParallel(SyncBatchNorm(2, momentum=0.99).double())
    inputs = [torch.cat([torch.ones(2, 1, 10 ** (i + 1)) * 0.1 ** (i - 1),
                         torch.ones(2, 1, 10 ** (i + 1)) * 0.3 ** (i - 1)], dim=1).double()
              for i in range(world_size)]
    everything = torch.cat([x.permute(1, 0, 2).reshape(2, -1) for x in inputs], dim=1)
    for _ in range(100):
        bn(inputs[rank]).mean().backward()
    return {"mean": float((bn.module.running_mean - everything.mean(1)).abs().max()),
            "var": float((bn.module.running_var - everything.var(1)).abs().max())}


def _ddp_half_case(rank, world_size):
    """torch's SyncBatchNorm_half: a float16 model runs forward and backward in float16."""
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        SyncBatchNorm.convert_sync_batchnorm(BatchNormNet().half()))
    out = model(torch.randn(2, 2, dtype=torch.float16))
    out.sum().backward()
    return {"out": str(out.dtype), "grads": sorted({str(p.grad.dtype) for p in model.parameters()})}


def _all_empty_case(rank, world_size):
    """Every rank's batch is empty: BatchNorm on an empty global batch (an empty output, zero
    gradients, the step counted, the running statistics kept)."""
    bn = SyncBatchNorm(2)
    x = torch.randn(0, 2, 3, requires_grad=True)
    out = bn(x)
    out.sum().backward()
    return {"shape": tuple(out.shape), "dx": tuple(x.grad.shape),
            "dweight": float(bn.weight.grad.abs().sum()), "tracked": int(bn.num_batches_tracked),
            "running": (bn.running_mean.tolist(), bn.running_var.tolist())}


def _ddp_worker(rank, world_size):
    two = [2] * world_size
    return {
        "batchnormnet": _ddp_case(rank, world_size, BatchNormNet, (2,), two),
        "no_affine": _ddp_case(rank, world_size, lambda: BatchNormNet(affine=False), (2,), two),
        "2d_input": _ddp_case(rank, world_size, lambda: nn.BatchNorm1d(2), (2,), two),
        "single_input_per_process": _ddp_case(rank, world_size, lambda: nn.BatchNorm1d(2), (2,),
                                              [1] * world_size),
        "diff_input_sizes": _ddp_case(rank, world_size, BatchNormNet, (2,),
                                      [r + 2 for r in range(world_size)]),
        "empty_input_on_one_rank": _ddp_case(rank, world_size, lambda: nn.BatchNorm1d(2), (2,),
                                             [4] + [0] * (world_size - 1)),
        "channels_last": _ddp_case(rank, world_size, lambda: nn.BatchNorm2d(2, momentum=0.99),
                                   (2, 4, 4), two, memory_format=torch.channels_last),
        "unconverted_local_bn": _ddp_case(rank, world_size, BatchNormNet, (2,), two,
                                          convert=False),
        "running_value": _ddp_running_value_case(rank, world_size),
        "half": _ddp_half_case(rank, world_size),
        "all_empty": _all_empty_case(rank, world_size),
    }


@pytest.fixture(scope="module")
def ddp_runs():
    return launch(_ddp_worker, WORLD_SIZE)


SYNC_CASES = ["batchnormnet", "no_affine", "2d_input", "single_input_per_process",
              "diff_input_sizes", "empty_input_on_one_rank", "channels_last"]


@pytest.mark.parametrize("case", SYNC_CASES)
def test_ddp_with_converted_syncbatchnorm_trains_as_torch_on_the_global_batch(ddp_runs, case):
    for worker in ddp_runs:
        assert worker[case]["params"] < DDP_ATOL
        assert worker[case]["buffers"] < DDP_ATOL


def test_ddp_keeps_the_channels_last_memory_format(ddp_runs):
    assert all(worker["channels_last"]["memory_format"] for worker in ddp_runs)


def test_ddp_with_unconverted_local_batchnorm_does_not_match_the_global_batch(ddp_runs):
    # what the comparison above would catch if conversion did nothing
    for worker in ddp_runs:
        assert worker["unconverted_local_bn"]["params"] > 1e6 * DDP_ATOL


def test_ddp_running_statistics_with_different_input_sizes_are_the_global_ones(ddp_runs):
    for worker in ddp_runs:
        assert worker["running_value"]["mean"] < 1e-12
        assert worker["running_value"]["var"] < 1e-12


def test_ddp_half_precision_model_keeps_float16_outputs_and_gradients(ddp_runs):
    for worker in ddp_runs:
        assert worker["half"] == {"out": "torch.float16", "grads": ["torch.float16"]}


def test_an_empty_batch_on_every_rank_is_batchnorm_on_an_empty_batch(ddp_runs):
    for worker in ddp_runs:
        assert worker["all_empty"] == {"shape": (0, 2, 3), "dx": (0, 2, 3), "dweight": 0.0,
                                       "tracked": 1, "running": ([0.0, 0.0], [1.0, 1.0])}


# --- convert_sync_batchnorm, in one process ----------------------------------------------------


def test_convert_replaces_nested_batchnorms_and_passes_the_process_group():
    group = object()                               # stored, not used without collectives
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4), BatchNorm(4)),
                          nn.Sequential(nn.Sequential(nn.BatchNorm2d(4))))
    converted = SyncBatchNorm.convert_sync_batchnorm(model, group)
    layers = [converted[1][0], converted[1][1], converted[2][0][0]]
    assert all(type(layer) is SyncBatchNorm for layer in layers)
    assert all(layer.process_group is group for layer in layers)
    assert isinstance(converted[0], nn.Linear)


def test_convert_takes_over_parameters_buffers_flags_and_hyperparameters():
    bn = nn.BatchNorm1d(3, eps=1e-3, momentum=0.3).double()
    bn(torch.randn(5, 3, dtype=torch.float64))
    bn.weight.requires_grad_(False)
    bn.eval()
    sync = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert sync.weight is bn.weight and sync.bias is bn.bias
    assert sync.running_mean is bn.running_mean and sync.running_var is bn.running_var
    assert sync.num_batches_tracked is bn.num_batches_tracked
    assert not sync.weight.requires_grad and sync.bias.requires_grad
    assert not sync.training
    assert (sync.eps, sync.momentum, sync.affine) == (1e-3, 0.3, True)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(sync(x), bn(x), atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("kwargs", [{"affine": False}, {"bias": False},
                                    {"track_running_stats": False}, {"momentum": None}])
def test_convert_keeps_each_option_of_torchs_batchnorm(kwargs):
    bn = nn.BatchNorm1d(3, **kwargs)
    sync = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert sorted(sync.state_dict()) == sorted(bn.state_dict())
    assert (sync.bias is None) == (bn.bias is None) and (sync.weight is None) == (bn.weight is None)
    assert (sync.momentum, sync.track_running_stats) == (bn.momentum, bn.track_running_stats)


def test_convert_leaves_the_variants_alone():
    model = nn.Sequential(GhostBatchNorm(4, 2), BatchRenorm(4))
    converted = SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[0]) is GhostBatchNorm and type(converted[1]) is BatchRenorm
