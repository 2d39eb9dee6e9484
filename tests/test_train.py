"""Tests for bncourse.train: seeding, evaluation, the training loop and its history."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from bncourse.data import MNIST1D
from bncourse.models import cnn1d, mlp
from bncourse.train import History, Metrics, evaluate, run_seeds, set_seed, train

#: measured: an MLP with BN reaches 0.51-0.56 test accuracy after 4 epochs (6 seeds); chance is 0.1
LEARNED_TEST_ACC = 0.4
SMALL_TRAIN = 512  # 8 steps of 64 per epoch
FLOAT_ATOL = 1e-6


@pytest.fixture(scope="module")
def small(mnist1d) -> MNIST1D:
    """A slice of MNIST-1D for tests that exercise the loop rather than learning."""
    return MNIST1D(mnist1d.x_train[:SMALL_TRAIN], mnist1d.y_train[:SMALL_TRAIN],
                   mnist1d.x_test[:256], mnist1d.y_test[:256])


def seeded(build, seed=0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build(**kwargs)


# --- set_seed --------------------------------------------------------------------------------


def test_set_seed_seeds_torch_numpy_and_random():
    set_seed(11)
    first = (torch.rand(2), np.random.rand(2), random.random())  # noqa: NPY002
    set_seed(11)
    second = (torch.rand(2), np.random.rand(2), random.random())  # noqa: NPY002
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


# --- evaluate --------------------------------------------------------------------------------


def test_evaluate_returns_float_metrics_matching_cross_entropy(small):
    model = seeded(mlp, norm="batch")
    metrics = evaluate(model, small.x_test, small.y_test)
    assert isinstance(metrics, Metrics)
    assert type(metrics.loss) is float and type(metrics.accuracy) is float
    model.eval()
    with torch.no_grad():
        logits = model(small.x_test)
    assert math.isclose(metrics.loss, F.cross_entropy(logits, small.y_test).item(),
                        abs_tol=FLOAT_ATOL)
    expected_acc = (logits.argmax(1) == small.y_test).float().mean().item()
    assert math.isclose(metrics.accuracy, expected_acc, abs_tol=FLOAT_ATOL)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_evaluate_restores_every_train_flag(small, mode):
    model = seeded(mlp, norm="batch", dropout=0.2)
    model.train()
    model.norm1.eval()  # a mixed state, as after freezing one BN layer
    before = {name: m.training for name, m in model.named_modules()}
    evaluate(model, small.x_test, small.y_test, mode=mode)
    assert {name: m.training for name, m in model.named_modules()} == before


@pytest.mark.parametrize("norm", ["batch", "scratch"])
def test_evaluate_in_train_mode_leaves_running_stats_unchanged(small, norm):
    model = seeded(cnn1d, norm=norm)
    before = {k: v.clone() for k, v in model.named_buffers()}
    evaluate(model, small.x_test, small.y_test, mode="train", batch_size=32)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k


def test_evaluate_train_mode_uses_batch_statistics(small):
    model = seeded(mlp, norm="batch")
    model.norm0.running_mean.fill_(5.0)  # eval mode would be thrown off by this
    x, y = small.x_test[:64], small.y_test[:64]
    with torch.no_grad():
        logits = model.train()(x)
    got = evaluate(model, x, y, mode="train")
    assert math.isclose(got.loss, F.cross_entropy(logits, y).item(), abs_tol=FLOAT_ATOL)
    assert not math.isclose(got.loss, evaluate(model, x, y, mode="eval").loss, abs_tol=1e-3)


def test_evaluate_train_mode_batch_size_sets_the_statistics_batches(small):
    model = seeded(mlp, norm="batch")
    x, y = small.x_test[:96], small.y_test[:96]
    loss_sum = 0.0
    model.train()
    with torch.no_grad():
        for start in (0, 32, 64):
            xb, yb = x[start : start + 32], y[start : start + 32]
            loss_sum += F.cross_entropy(model(xb), yb, reduction="sum").item()
    got = evaluate(model, x, y, mode="train", batch_size=32)
    assert math.isclose(got.loss, loss_sum / 96, abs_tol=FLOAT_ATOL)


@given(batch_size=st.integers(1, 300))
def test_evaluate_eval_mode_does_not_depend_on_batch_size(small, batch_size):
    model = seeded(mlp, norm="batch")
    whole = evaluate(model, small.x_test, small.y_test)
    chunked = evaluate(model, small.x_test, small.y_test, batch_size=batch_size)
    assert math.isclose(whole.loss, chunked.loss, abs_tol=1e-5)
    assert whole.accuracy == chunked.accuracy


def test_evaluate_runs_without_grad(small):
    model = seeded(mlp)
    evaluate(model, small.x_test, small.y_test)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("kwargs", "match"),
                         [({"mode": "test"}, "mode"), ({"batch_size": 0}, "batch_size")])
def test_evaluate_bad_arguments_raise(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(mlp(), small.x_test, small.y_test, **kwargs)


# --- train -----------------------------------------------------------------------------------


def test_train_returns_a_full_history(small):
    history = train(seeded(mlp), small, epochs=3)
    assert isinstance(history, History)
    assert history.steps == 3 * (SMALL_TRAIN // 64)
    assert len(history.step_loss) == history.steps
    assert len(history.epoch_loss) == len(history.train_acc) == len(history.test_acc) == 3
    assert not history.diverged
    for values in (history.step_loss, history.epoch_loss, history.train_acc, history.test_acc):
        assert all(type(v) is float for v in values)
    assert all(0.0 <= a <= 1.0 for a in history.train_acc + history.test_acc)


def test_epoch_loss_is_the_mean_step_loss(small):
    history = train(seeded(mlp), small, epochs=2)
    steps = SMALL_TRAIN // 64
    for epoch, value in enumerate(history.epoch_loss):
        expected = sum(history.step_loss[epoch * steps : (epoch + 1) * steps]) / steps
        assert math.isclose(value, expected, rel_tol=1e-6)


def test_mlp_with_batch_norm_learns(mnist1d):
    history = train(seeded(mlp, norm="batch"), mnist1d, epochs=4)
    assert history.test_acc[-1] > LEARNED_TEST_ACC
    assert history.epoch_loss[-1] < history.epoch_loss[0]


def test_recorded_accuracy_matches_evaluate(small):
    model = seeded(mlp, norm="batch")
    history = train(model, small, epochs=1)
    assert history.test_acc[-1] == evaluate(model, small.x_test, small.y_test).accuracy
    assert history.train_acc[-1] == evaluate(model, small.x_train, small.y_train).accuracy


def test_same_seed_same_history(small):
    # dropout makes the run depend on the torch RNG, which train seeds
    a = train(seeded(mlp, norm="batch", dropout=0.3), small, epochs=2, seed=5)
    torch.manual_seed(12345)  # the global state before the call must not matter
    b = train(seeded(mlp, norm="batch", dropout=0.3), small, epochs=2, seed=5)
    assert a == b


def test_other_seed_other_history(small):
    a = train(seeded(mlp), small, epochs=1, seed=0)
    b = train(seeded(mlp), small, epochs=1, seed=1)
    assert a.step_loss != b.step_loss


def test_huge_learning_rate_diverges(small):
    history = train(seeded(mlp), small, epochs=3, lr=1e3)
    assert history.diverged
    assert not math.isfinite(history.step_loss[-1])
    assert all(math.isfinite(v) for v in history.step_loss[:-1])
    assert history.steps == len(history.step_loss) - 1  # no step for the non-finite loss
    assert history.epoch_loss == history.train_acc == history.test_acc == []


def test_max_steps_stops_and_records_partial_epoch(small):
    history = train(seeded(mlp), small, epochs=5, max_steps=10)  # 8 steps per epoch
    assert history.steps == len(history.step_loss) == 10
    assert len(history.test_acc) == len(history.epoch_loss) == 2


def test_max_steps_at_an_epoch_boundary_records_no_empty_epoch(small):
    history = train(seeded(mlp), small, epochs=5, max_steps=8)
    assert history.steps == 8
    assert len(history.test_acc) == 1


def test_zero_epochs_leave_model_untouched(small):
    model = seeded(mlp)
    before = [p.clone() for p in model.parameters()]
    assert train(model, small, epochs=0) == History()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_on_step_called_once_per_step_with_index_model_and_loss(small):
    model = seeded(mlp)
    calls = []
    history = train(model, small, epochs=2,
                    on_step=lambda step, m, loss: calls.append((step, m, loss)))
    assert [c[0] for c in calls] == list(range(history.steps))
    assert all(c[1] is model for c in calls)
    assert [c[2] for c in calls] == history.step_loss


def test_train_leaves_model_in_train_mode(small):
    model = seeded(mlp, norm="batch")
    model.eval()
    train(model, small, epochs=1)
    assert all(m.training for m in model.modules())


def test_eval_mode_train_records_batch_statistics_accuracy(small):
    a = train(seeded(mlp, norm="batch"), small, epochs=1, eval_mode="eval")
    b = train(seeded(mlp, norm="batch"), small, epochs=1, eval_mode="train")
    assert a.step_loss == b.step_loss  # evaluation does not affect training
    assert a.test_acc != b.test_acc


def test_class_sorted_order_trains_on_other_batches(small):
    a = train(seeded(mlp), small, epochs=1, order="iid")
    b = train(seeded(mlp), small, epochs=1, order="class_sorted")
    assert a.step_loss != b.step_loss


@pytest.mark.parametrize("optimizer", ["adam", lambda params: torch.optim.SGD(params, lr=0.05)])
def test_other_optimizers(small, optimizer):
    history = train(seeded(mlp), small, epochs=2, lr=1e-3, optimizer=optimizer)
    assert history.steps == 16 and history.epoch_loss[-1] < history.epoch_loss[0]


def test_weight_decay_changes_training(small):
    a = train(seeded(mlp), small, epochs=1)
    b = train(seeded(mlp), small, epochs=1, weight_decay=0.1)
    assert a.step_loss[0] == b.step_loss[0] and a.step_loss[-1] != b.step_loss[-1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lbfgs"}, r"optimizer to be one of \('sgd', 'adam'\)"),
        ({"eval_mode": "test"}, "eval_mode"),
        ({"batch_size": 0}, "batch_size"),
        ({"order": "random"}, "order"),
        ({"epochs": -1}, "epochs"),
        ({"max_steps": -1}, "max_steps"),
        ({"batch_size": 64, "shard": (0, 3)}, r"expected batch_size divisible by the world size 3"),
        ({"shard": (2, 2)}, r"expected rank < world_size \(got rank=2, world_size=2\)"),
        ({"shard": (-1, 2)}, r"expected rank >= 0"),
    ],
)
def test_train_bad_arguments_raise(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(mlp(), small, **kwargs)


@pytest.mark.parametrize("shard", [[0, 2], (0.0, 2)])
def test_train_rejects_a_shard_of_the_wrong_type(small, shard):
    with pytest.raises(TypeError, match="expected"):
        train(mlp(), small, shard=shard)


class InputRecorder(nn.Module):
    """A linear classifier that records every training input it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(40, 10)
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.clone())
        return self.linear(x)


def test_shards_of_all_ranks_partition_every_global_batch_in_order(small):
    def inputs(shard):
        model = InputRecorder()
        train(model, small, epochs=2, batch_size=64, seed=3, shard=shard)
        return model.seen

    whole = inputs(None)                                    # (64, 40) per step
    slices = [inputs((rank, 4)) for rank in range(4)]       # (16, 40) per step and rank
    assert len(whole) == 2 * SMALL_TRAIN // 64
    for step, batch in enumerate(whole):
        torch.testing.assert_close(torch.cat([s[step] for s in slices]), batch, rtol=0, atol=0)


@pytest.mark.parametrize("progress", [None, False])
def test_no_progress_bar_off_a_terminal_or_when_disabled(small, capsys, progress):
    train(seeded(mlp), small, epochs=1, progress=progress)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_when_asked(small, capsys):
    train(seeded(mlp), small, epochs=1, progress=True)
    assert "8/8" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda_moves_model_and_data(small):
    model = seeded(cnn1d, norm="batch")
    history = train(model, small, epochs=1, device="cuda")
    assert next(model.parameters()).is_cuda and len(history.test_acc) == 1


# --- run_seeds -------------------------------------------------------------------------------


def test_run_seeds_equals_seeded_manual_runs(small):
    histories = run_seeds(lambda: mlp(norm="batch"), small, [3, 4], epochs=1)
    set_seed(4)
    manual = train(mlp(norm="batch"), small, epochs=1, seed=4)
    assert len(histories) == 2
    assert histories[1] == manual
    assert histories[0] != histories[1]


def test_run_seeds_rejects_a_seed_keyword(small):
    with pytest.raises(ValueError, match="seed"):
        run_seeds(mlp, small, [0], seed=1)


# --- learning-rate schedules -----------------------------------------------------------------

SCHEDULE_LR = 0.05
LR_RTOL = 1e-12  # LambdaLR multiplies the base rate by the factor: equal up to rounding


class RecordingSGD(torch.optim.SGD):
    """SGD that records the learning rate each step is taken with."""

    def __init__(self, params):
        super().__init__(params, lr=SCHEDULE_LR)
        self.used: list[float] = []

    def step(self, closure=None):
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


def rates_used(small, **kwargs) -> list[float]:
    optimizers = []

    def make(params):
        optimizers.append(RecordingSGD(params))
        return optimizers[-1]

    train(seeded(mlp), small, optimizer=make, **kwargs)
    return optimizers[0].used


def cosine(t: int, total: int) -> float:
    return SCHEDULE_LR * (1 + math.cos(math.pi * t / total)) / 2


def test_cosine_schedule_uses_lr_times_half_cosine_at_step_t(small):
    used = rates_used(small, epochs=2, schedule="cosine")
    total = 2 * (SMALL_TRAIN // 64)
    assert len(used) == total and used[0] == SCHEDULE_LR
    for t, rate in enumerate(used):
        assert math.isclose(rate, cosine(t, total), rel_tol=LR_RTOL), t


def test_cosine_schedule_horizon_is_max_steps_when_fewer(small):
    used = rates_used(small, epochs=5, max_steps=10, schedule="cosine")
    assert len(used) == 10
    for t, rate in enumerate(used):
        assert math.isclose(rate, cosine(t, 10), rel_tol=LR_RTOL), t


@pytest.mark.parametrize("kwargs", [{}, {"schedule": "constant"}])
def test_constant_schedule_keeps_the_learning_rate(small, kwargs):
    assert rates_used(small, epochs=2, **kwargs) == [SCHEDULE_LR] * (2 * (SMALL_TRAIN // 64))


def test_cosine_schedule_applies_to_the_builtin_sgd(small):
    builtin = train(seeded(mlp), small, epochs=2, lr=SCHEDULE_LR, schedule="cosine")
    scheduled = train(seeded(mlp), small, epochs=2, schedule="cosine",
                      optimizer=lambda p: torch.optim.SGD(p, lr=SCHEDULE_LR, momentum=0.9))
    constant = train(seeded(mlp), small, epochs=2, lr=SCHEDULE_LR)
    assert builtin.step_loss == scheduled.step_loss
    assert builtin.step_loss[-1] != constant.step_loss[-1]


def test_unknown_schedule_raises(small):
    with pytest.raises(ValueError, match="schedule to be one of"):
        train(mlp(), small, schedule="linear")


# --- gradient accumulation -------------------------------------------------------------------

ACCUMULATION_BATCH, MICRO_BATCHES = 32, 4
#: one SGD step of float32 sums in another order: weights agree to rounding
STEP_ATOL = 1e-6
#: BN over micro-batches of 8 against the batch of 32: the first step's weights differ by
#: 4.4e-2 (measured); equal batch statistics would give rounding, ~1e-8
BN_STEP_DIFFERENCE = 1e-3


def _one_step(small, model, **kwargs) -> dict[str, torch.Tensor]:
    train(model, small, epochs=1, max_steps=1, lr=0.5, momentum=0.0,
          batch_size=ACCUMULATION_BATCH, **kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_difference(a: dict, b: dict, keys) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def test_accumulated_step_equals_the_large_batch_step_without_bn(small):
    large = _one_step(small, seeded(mlp, hidden=(16,)))
    accumulated = _one_step(small, seeded(mlp, hidden=(16,)), accumulate=MICRO_BATCHES)
    assert _max_difference(large, accumulated, large) < STEP_ATOL


def test_accumulated_step_with_bn_equals_ghost_bn_over_the_micro_batches(small):
    from bncourse.nn import GhostBatchNorm

    size = ACCUMULATION_BATCH // MICRO_BATCHES
    accumulated = _one_step(small, seeded(mlp, hidden=(16,), norm="batch"),
                            accumulate=MICRO_BATCHES)
    ghost = _one_step(small, seeded(mlp, hidden=(16,), norm=lambda c: GhostBatchNorm(c, size)))
    weights = [k for k in accumulated if "running" not in k and "num_batches" not in k]
    assert _max_difference(accumulated, ghost, weights) < STEP_ATOL


def test_accumulated_step_with_bn_differs_from_the_large_batch_step(small):
    large = _one_step(small, seeded(mlp, hidden=(16,), norm="batch"))
    accumulated = _one_step(small, seeded(mlp, hidden=(16,), norm="batch"),
                            accumulate=MICRO_BATCHES)
    weights = [k for k in large if k.endswith("weight")]
    assert _max_difference(large, accumulated, weights) > BN_STEP_DIFFERENCE


def test_accumulated_step_loss_is_the_mean_loss_of_the_whole_batch(small):
    accumulated = train(seeded(mlp, hidden=(16,)), small, epochs=1, max_steps=1,
                        batch_size=ACCUMULATION_BATCH, accumulate=MICRO_BATCHES)
    large = train(seeded(mlp, hidden=(16,)), small, epochs=1, max_steps=1,
                  batch_size=ACCUMULATION_BATCH)
    assert accumulated.step_loss[0] == pytest.approx(large.step_loss[0], abs=STEP_ATOL)


@pytest.mark.parametrize("accumulate", [0, 3, 1.5])
def test_accumulate_must_be_a_positive_divisor_of_the_batch(small, accumulate):
    with pytest.raises((ValueError, TypeError), match="accumulate"):
        train(seeded(mlp), small, epochs=1, batch_size=32, accumulate=accumulate)
