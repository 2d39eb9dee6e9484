"""dp_demo: data-parallel training with SyncBatchNorm over 2 gloo workers equals single-process
training on the global batch; the worker's exactness check holds."""

import multiprocessing as mp

import numpy as np
import pytest
import torch

from bncourse.data import load_mnist1d
from bncourse.distributed import launch
from bncourse.dp_demo import dp_compare_worker, dp_mlp, train_data_parallel
from bncourse.nn import BatchNorm


def _test_accuracy(model, data):
    model.eval()
    with torch.no_grad():
        return (model(data.x_test).argmax(1) == data.y_test).double().mean().item()


@pytest.fixture(scope="module")
def runs():
    data = load_mnist1d()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 5, generator=g, dtype=torch.float64)
    x[:4] += 3
    dout = torch.randn(x.shape, generator=g, dtype=torch.float64)
    state = BatchNorm(3).double().state_dict()
    results = launch(dp_compare_worker, 2, (x, dout, state), data.x_train, data.y_train,
                     data.x_test, data.y_test, [0], 20, 8, 0.05)
    return data, results


def test_single_process_training_is_deterministic_and_learns():
    data = load_mnist1d()
    accs = []
    for _ in range(2):
        model = dp_mlp(False, 0)
        train_data_parallel(model, data.x_train, data.y_train, steps=30, global_batch=16,
                            lr=0.1, seed=0)
        accs.append(_test_accuracy(model, data))
    assert accs[0] == accs[1] and accs[0] > 0.15


def test_synchronized_dp_training_matches_single_process_on_the_global_batch(runs):
    data, results = runs
    model = dp_mlp(False, 0)
    train_data_parallel(model, data.x_train, data.y_train, steps=20, global_batch=8, lr=0.05,
                        seed=0)
    reference = _test_accuracy(model, data)
    for r in results:
        assert abs(r["sync"][0] - reference) <= 0.01
    assert not mp.active_children()


def test_worker_exactness_check_returns_every_shard(runs):
    _, results = runs
    assert len(results) == 2
    assert np.allclose(results[0]["check"]["dweight"], results[1]["check"]["dweight"])
    assert results[0]["check"]["out"].shape == (4, 3, 5)


def test_global_batch_must_divide_among_workers_in_single_process():
    data = load_mnist1d()
    model = dp_mlp(True, 0)  # no process group: plain BN
    train_data_parallel(model, data.x_train, data.y_train, steps=1, global_batch=3, lr=0.1,
                        seed=0)
