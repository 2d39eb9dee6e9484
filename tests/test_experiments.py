"""The experiment machinery: configs and their hashes, jobs, the tuning protocol, summaries, the
job cache, executors, stored results and the command line.

Every experiment here is a tiny custom one (a 16-unit MLP on 500 examples, ~30 ms a job), not
one of the course's registered experiments.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from bncourse.data import default_cache_dir
from bncourse.experiments import (
    Arm,
    Experiment,
    Result,
    load_result,
    registry,
    result_names,
    run_job,
    run_many,
    save,
)
from bncourse.experiments import config as config_module
from bncourse.experiments import runner as runner_module
from bncourse.experiments.__main__ import main
from bncourse.experiments.config import arm_dict
from bncourse.experiments.jobs import BATCH_STAT_SIZES, CHANCE
from bncourse.experiments.results import write_json

#: 500 training examples, 7 steps of 64 an epoch; 15 epochs so the convergence window
#: (the last 20% of epochs) is 3 epochs, not its floor of 2. On the tuning seeds both arms do
#: best inside the grid (measured: no BN at 1.0, BN at 0.3; 3.0 nearly diverges), so choosing
#: the best rate differs from choosing the first or the last.
TINY = Arm(data="small500", hidden=(16,), epochs=15, lr_grid=(0.03, 0.3, 1.0, 3.0), measure=())
QUICK = TINY.replace(epochs=2)          # for single jobs
SMALL_TRAIN = 500
SEEDS = (0, 1)
TUNING_SEEDS = (100, 101)
DIVERGING_LR = 1e6

FLOAT_RTOL = 1e-12     # the same double-precision quantity computed in another order
CI_RTOL = 1e-9         # t quantiles from scipy.stats.t against ttest_1samp's interval
#: Normal theory for the error of a batch mean against the population mean (sampling without
#: replacement), E|error| / sd = sqrt(2 / pi) * sqrt((N - b) / (b (N - 1))); measured within 3%
#: for the first layer of the 16-unit MLP (16 units x 200 batches per size).
BATCH_STATS_RTOL = 0.1


@pytest.fixture(scope="module", autouse=True)
def data_cache(mnist1d, mnist1d_cache_dir):
    """Jobs in other processes (process pool, Dask workers) read MNIST-1D from the test cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNCOURSE_CACHE_DIR", str(mnist1d_cache_dir))
        yield


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    """Two tuned training arms and one measurement arm: 16 tuning jobs, 6 evaluation jobs."""
    return Experiment(
        "tiny", "a tiny experiment",
        (("none", TINY), ("batch", TINY.replace(norm="batch")),
         ("flops", TINY.replace(task="flops", norm="batch", lr_grid=()))),
        seeds=SEEDS, tuning_seeds=TUNING_SEEDS,
    )


@pytest.fixture(scope="module")
def job_count(experiment) -> int:
    tuning = sum(len(a.lr_grid) * len(TUNING_SEEDS)
                 for _, a in experiment.arms if a.task == "train")
    return tuning + len(experiment.arms) * len(SEEDS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("experiment-cache")


@pytest.fixture(scope="module")
def result(experiment, cache_dir) -> Result:
    """The tiny experiment, run in this process with a fresh job cache."""
    (res,) = run_many([experiment], jobs=1, cache_dir=cache_dir, progress=False)
    return res


@pytest.fixture(scope="module")
def sweep_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep-cache")


@pytest.fixture(scope="module")
def sweep_result(sweep_cache_dir) -> Result:
    exp = Experiment("tiny_sweep", "a tiny sweep", (("mlp", TINY.replace(lr_grid=(0.03, 0.3))),),
                     seeds=SEEDS, tuning_seeds=TUNING_SEEDS, sweep=True)
    (res,) = run_many([exp], jobs=1, cache_dir=sweep_cache_dir, progress=False)
    return res


def cache_files(folder) -> list:
    jobs = folder / "jobs"
    return sorted(jobs.iterdir()) if jobs.exists() else []


def json_roundtrip(data):
    return json.loads(json.dumps(data, allow_nan=False))


# --- config: hashes --------------------------------------------------------------------------

#: A valid value different from TINY's for every field of Arm.
ARM_CHANGES = {
    "task": "flops", "data": "full", "model": "cnn", "hidden": (17,), "norm": "batch",
    "activation": "tanh", "init": "he", "init_std": 0.02, "norm_position": "after",
    "dropout": 0.1, "bias": False, "gamma_init": 0.5, "gamma_trainable": False,
    "batch_size": 32, "epochs": 16, "momentum": 0.5, "weight_decay": 1e-4,
    "schedule": "constant", "lr_grid": (0.01, 0.03, 0.1), "measure": ("jitter",),
    "accumulate": 2, "finetune": "frozen", "dropout_position": "last",
}


def test_config_hash_is_16_hex_digits(experiment):
    assert re.fullmatch("[0-9a-f]{16}", experiment.config_hash)


def test_config_hash_is_equal_in_a_fresh_process(experiment):
    code = ("from bncourse.experiments.config import Arm, Experiment\n"
            f"print(({experiment!r}).config_hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == experiment.config_hash


def test_arm_changes_cover_every_field():
    assert set(ARM_CHANGES) == {f.name for f in dataclasses.fields(Arm)}


@pytest.mark.parametrize(("field", "value"), sorted(ARM_CHANGES.items()))
def test_config_hash_changes_with_any_arm_field(experiment, field, value):
    name, arm = experiment.arms[1 if field == "finetune" else 0]   # fine-tuning needs BN
    assert getattr(arm, field) != value
    arms = tuple((n, a.replace(**{field: value}) if n == name else a)
                 for n, a in experiment.arms)
    assert dataclasses.replace(experiment, arms=arms).config_hash != experiment.config_hash


@pytest.mark.parametrize("field", sorted(config_module.LATER_FIELDS))
def test_fields_added_later_are_hashed_only_away_from_their_default(field):
    # stored results and cached jobs of arms without the field keep their hashes
    assert field not in arm_dict(Arm(norm="batch"))
    assert field in arm_dict(Arm(norm="batch", **{field: ARM_CHANGES[field]}))


@pytest.mark.parametrize(
    "changes",
    [{"seeds": (0, 2)}, {"seeds": (0, 1, 2)}, {"tuning_seeds": (100, 102)}, {"sweep": True},
     {"name": "other"}],
)
def test_config_hash_changes_with_seeds_protocol_and_name(experiment, changes):
    assert dataclasses.replace(experiment, **changes).config_hash != experiment.config_hash


def test_config_hash_changes_with_the_job_version(experiment, monkeypatch):
    before = experiment.config_hash
    monkeypatch.setattr(config_module, "JOB_VERSION", config_module.JOB_VERSION + 1)
    assert experiment.config_hash != before


# --- config: validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": (0, 1), "tuning_seeds": (1, 2)}, "disjoint"),
        ({"seeds": (0,)}, "at least 2 evaluation seeds"),
        ({"arms": (("a", TINY), ("a", TINY.replace(norm="batch")))}, "unique"),
        ({"arms": ()}, "non-empty"),
        ({"tuning_seeds": ()}, "tuning seeds"),
    ],
)
def test_experiment_rejects_bad_configurations(kwargs, match):
    args = {"name": "bad", "title": "bad", "arms": (("a", TINY),), **kwargs}
    with pytest.raises(ValueError, match=match):
        Experiment(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "nope"}, "task"),
        ({"data": "nope"}, "data"),
        ({"schedule": "linear"}, "schedule"),
        ({"lr_grid": ()}, "non-empty lr_grid"),
        ({"lr_grid": (0.1, 0.0)}, "positive"),
        ({"lr_grid": (-0.1,)}, "positive"),
        ({"lr_grid": (float("nan"),)}, "positive"),
        ({"finetune": "frozen"}, "norm='batch'"),
        ({"finetune": "thaw", "norm": "batch"}, "finetune"),
        ({"dropout_position": "first"}, "dropout_position"),
        ({"accumulate": 0}, "accumulate"),
        ({"accumulate": 5}, "dividing batch_size=64"),
    ],
)
def test_arm_rejects_bad_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Arm(**kwargs)


def test_measurement_arm_accepts_an_empty_grid_and_runs_at_lr_none():
    assert Arm(task="flops", lr_grid=()).lrs == (None,)


# --- run_job ---------------------------------------------------------------------------------


def test_run_job_is_deterministic():
    arm = QUICK.replace(norm="noisy", dropout=0.1)     # both draw from the torch RNG
    first = run_job(arm, 3, 0.1)
    torch.manual_seed(12345)                            # the caller's RNG state must not matter
    assert run_job(arm, 3, 0.1) == first


@pytest.mark.parametrize(
    "arm",
    [
        # grad_noise needs 8 batches of 64: the full training split
        QUICK.replace(data="full", norm="batch", measure=("grad_noise", "bn_output", "jitter")),
        QUICK.replace(norm="population"),
        QUICK.replace(task="grad_flow", lr_grid=()),
        QUICK.replace(task="batch_stats", lr_grid=()),
        QUICK.replace(task="flops", norm="batch", lr_grid=()),
    ],
    ids=["train_measured", "population", "grad_flow", "batch_stats", "flops"],
)
def test_run_job_returns_json_native_metrics(arm):
    metrics = run_job(arm, 0, 0.1 if arm.task == "train" else None)
    assert json_roundtrip(metrics) == metrics        # no NaN, no tuples, no numpy or torch types


def test_grad_noise_measurement_runs_on_the_small500_data():
    m = run_job(QUICK.replace(measure=("grad_noise",)), 0, 0.1)
    assert m["grad_noise"]["epochs"] == [1, 2]


def test_run_job_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(before + 1)
        run_job(QUICK.replace(task="flops", lr_grid=()), 0, None)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_run_job_rejects_a_training_arm_without_lr():
    with pytest.raises(ValueError, match="expected a learning rate"):
        run_job(QUICK, 0, None)


def test_run_job_rejects_an_lr_for_a_measurement_arm():
    with pytest.raises(ValueError, match="lr=None"):
        run_job(QUICK.replace(task="flops", lr_grid=()), 0, 0.1)


def test_training_job_records_per_epoch_curves_and_final_accuracies():
    m = run_job(QUICK, 0, 0.1)
    assert m["steps"] == QUICK.epochs * (SMALL_TRAIN // QUICK.batch_size) and not m["diverged"]
    for key in ("val_acc_curve", "train_acc_curve", "train_loss_curve"):
        assert len(m[key]) == QUICK.epochs
    assert m["val_acc"] == m["val_acc_curve"][-1] and m["train_acc"] == m["train_acc_curve"][-1]
    assert 0.0 <= m["test_acc"] <= 1.0


def test_diverged_run_is_reported_at_chance():
    m = run_job(QUICK, 0, DIVERGING_LR)
    assert m["diverged"]
    assert m["train_acc"] == m["val_acc"] == m["test_acc"] == CHANCE
    assert m["train_loss"] is m["val_loss"] is m["test_loss"] is None


def test_grad_flow_reports_one_norm_per_hidden_layer():
    arm = QUICK.replace(task="grad_flow", hidden=(16, 16, 16), lr_grid=())
    m = run_job(arm, 0, None)
    assert set(m) == {"seed", "grad_norms", "log10_first_over_last"}
    assert len(m["grad_norms"]) == len(arm.hidden) and all(g > 0 for g in m["grad_norms"])
    expected = math.log10(m["grad_norms"][0] / m["grad_norms"][-1])
    assert math.isclose(m["log10_first_over_last"], expected, rel_tol=FLOAT_RTOL)


def test_batch_stats_errors_follow_normal_sampling_theory():
    m = run_job(QUICK.replace(task="batch_stats", lr_grid=()), 0, None)
    assert set(m) == {"seed", "batch_sizes", "mean_error", "std_error"}
    assert m["batch_sizes"] == list(BATCH_STAT_SIZES)
    assert len(m["std_error"]) == len(BATCH_STAT_SIZES)
    n = SMALL_TRAIN
    for b, err in zip(m["batch_sizes"], m["mean_error"], strict=True):
        theory = math.sqrt(2 / math.pi) * math.sqrt((n - b) / (b * (n - 1)))
        assert math.isclose(err, theory, rel_tol=BATCH_STATS_RTOL), (b, err, theory)
    assert m["std_error"] == sorted(m["std_error"], reverse=True)   # shrinks with batch size


def mlp_matmul_flops(hidden: tuple[int, ...]) -> int:
    widths = (40, *hidden, 10)
    return sum(2 * a * b for a, b in itertools.pairwise(widths))


def cnn_shapes(channels: tuple[int, ...], length: int = 40, kernel: int = 5):
    """(c_in, c_out, out_length) of each stride-2 convolution with padding kernel // 2."""
    shapes, c_in = [], 1
    for c in channels:
        length = (length + 2 * (kernel // 2) - kernel) // 2 + 1
        shapes.append((c_in, c, length))
        c_in = c
    return shapes


def cnn_matmul_flops(channels: tuple[int, ...], kernel: int = 5) -> int:
    shapes = cnn_shapes(channels)
    conv = sum(2 * c_out * length * c_in * kernel for c_in, c_out, length in shapes)
    return conv + 2 * shapes[-1][1] * shapes[-1][2] * 10


@pytest.mark.parametrize(
    ("model", "hidden", "matmul", "bn_elements"),
    [
        ("mlp", (16, 8), mlp_matmul_flops((16, 8)), 16 + 8),
        ("cnn", (4, 6), cnn_matmul_flops((4, 6)), sum(c * n for _, c, n in cnn_shapes((4, 6)))),
    ],
)
def test_flops_count_bn_at_two_per_element_and_folding_removes_it(model, hidden, matmul,
                                                                  bn_elements):
    arm = QUICK.replace(task="flops", model=model, hidden=hidden, lr_grid=())
    plain = run_job(arm, 0, None)
    with_bn = run_job(arm.replace(norm="batch"), 0, None)
    keys = {"seed", "matmul_flops", "norm_flops", "total_flops", "folded_total_flops"}
    assert set(plain) == set(with_bn) == keys
    assert plain["matmul_flops"] == plain["total_flops"] == matmul and plain["norm_flops"] == 0
    assert with_bn["matmul_flops"] == matmul
    assert with_bn["norm_flops"] == 2 * bn_elements
    assert with_bn["total_flops"] == matmul + 2 * bn_elements
    assert with_bn["folded_total_flops"] == plain["total_flops"]


# --- run_many: the protocol ------------------------------------------------------------------


def tuning_oracle(arm: Arm) -> dict[float, list[float]]:
    """lr -> final validation accuracy per tuning seed (chance if diverged), from run_job."""
    out = {}
    for lr in arm.lr_grid:
        ms = [run_job(arm, s, lr) for s in TUNING_SEEDS]
        out[lr] = [CHANCE if m["diverged"] else m["val_acc"] for m in ms]
    return out


@pytest.mark.parametrize("arm_name", ["none", "batch"])
def test_tuning_table_holds_each_tuning_seeds_final_validation_accuracy(result, experiment,
                                                                        arm_name):
    oracle = tuning_oracle(experiment.arm(arm_name))
    table = result.tuning_table(arm_name)
    assert [row["lr"] for row in table] == list(TINY.lr_grid)
    for row in table:
        assert row["val_acc"] == oracle[row["lr"]]
        assert math.isclose(row["mean"], sum(row["val_acc"]) / len(TUNING_SEEDS),
                            rel_tol=FLOAT_RTOL)
    assert result.arm(arm_name)["tuning"]["seeds"] == list(TUNING_SEEDS)


@pytest.mark.parametrize("arm_name", ["none", "batch"])
def test_chosen_lr_has_the_best_mean_validation_accuracy(result, arm_name):
    table = result.tuning_table(arm_name)
    best = max(row["mean"] for row in table)
    expected = min(row["lr"] for row in table if row["mean"] == best)   # ties: the smaller rate
    assert expected not in (TINY.lr_grid[0], TINY.lr_grid[-1]), "the fixture should tune inside"
    assert result.chosen_lr(arm_name) == expected
    assert not result.arm(arm_name)["tuning"]["chosen_at_grid_edge"]


def test_diverged_tuning_runs_count_at_chance_and_are_not_chosen(tmp_path):
    arm = QUICK.replace(lr_grid=(0.1, DIVERGING_LR))
    exp = Experiment("diverging", "diverging", (("a", arm),), seeds=SEEDS,
                     tuning_seeds=TUNING_SEEDS)
    (res,) = run_many([exp], jobs=1, cache_dir=tmp_path, progress=False)
    row = res.tuning_table("a")[1]
    assert row["lr"] == DIVERGING_LR and row["diverged"] == len(TUNING_SEEDS)
    assert row["val_acc"] == [CHANCE] * len(TUNING_SEEDS)
    assert res.chosen_lr("a") == 0.1 and res.arm("a")["tuning"]["chosen_at_grid_edge"]


@pytest.mark.parametrize("arm_name", ["none", "batch"])
def test_evaluation_runs_use_exactly_the_evaluation_seeds_at_the_chosen_lr(result, arm_name):
    runs = result.runs(arm_name)
    assert [r["seed"] for r in runs] == list(SEEDS)
    assert all(r["lr"] == result.chosen_lr(arm_name) for r in runs)


def test_evaluation_runs_are_the_jobs_metrics(result, experiment):
    arm = experiment.arm("batch")
    assert result.runs("batch") == [run_job(arm, s, result.chosen_lr("batch")) for s in SEEDS]


def test_measurement_arm_runs_once_per_evaluation_seed_without_tuning(result, experiment):
    entry = result.arm("flops")
    assert "tuning" not in entry and result.chosen_lr("flops") is None
    assert entry["runs"] == [run_job(experiment.arm("flops"), s, None) for s in SEEDS]
    assert entry["summary"] == {}


@pytest.mark.parametrize("metric", ["test_acc", "val_acc", "train_loss"])
def test_summary_mean_and_ci95_equal_scipy_t_interval(result, metric):
    values = [r[metric] for r in result.runs("batch")]
    summary = result.summary("batch")[metric]
    assert summary["n"] == len(SEEDS)
    assert math.isclose(summary["mean"], sum(values) / len(values), rel_tol=FLOAT_RTOL)
    ci = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    np.testing.assert_allclose(summary["ci95"], [ci.low, ci.high], rtol=CI_RTOL)


def test_summary_gap_is_train_minus_test_accuracy(result):
    gaps = [r["train_acc"] - r["test_acc"] for r in result.runs("none")]
    assert math.isclose(result.summary("none")["gap"]["mean"], sum(gaps) / len(gaps),
                        rel_tol=FLOAT_RTOL, abs_tol=FLOAT_RTOL)


@pytest.mark.parametrize("arm_name", ["none", "batch"])
def test_convergence_is_measured_over_the_last_20_percent_of_epochs(result, arm_name):
    window = 3                                             # 20% of 15 epochs
    curves = [r["val_acc_curve"] for r in result.runs(arm_name)]
    seed_mean = [sum(c[e] for c in curves) / len(curves) for e in range(TINY.epochs)]
    tail = seed_mean[-window:]
    conv = result.summary(arm_name)["convergence"]
    assert conv["window_epochs"] == window
    assert math.isclose(conv["range"], max(tail) - min(tail), abs_tol=FLOAT_RTOL)
    line = stats.linregress(range(window), tail)                  # independent least squares
    assert math.isclose(conv["drift"], line.slope * (window - 1), abs_tol=FLOAT_RTOL)
    assert conv["converged"] == (abs(conv["drift"]) < runner_module.CONVERGENCE_TOLERANCE)


def test_result_records_config_and_its_hash(result, experiment):
    assert result.name == "tiny" and result.arms == ["none", "batch", "flops"]
    assert result.config_hash == experiment.config_hash
    assert result.data["config"] == json_roundtrip(experiment.to_dict())


# --- run_many: sweeps ------------------------------------------------------------------------


def test_sweep_runs_every_lr_and_seed_and_no_tuning_jobs(sweep_result, sweep_cache_dir):
    entry = sweep_result.arm("mlp")
    grid = (0.03, 0.3)
    assert "tuning" not in entry and sweep_result.chosen_lr("mlp") is None
    assert [(r["lr"], r["seed"]) for r in entry["sweep"]] == list(itertools.product(grid, SEEDS))
    assert len(cache_files(sweep_cache_dir)) == len(grid) * len(SEEDS)   # no tuning seed ran
    assert set(entry["summary"]) == {str(lr) for lr in grid}


def test_sweep_summary_per_lr_is_over_that_lrs_runs(sweep_result):
    values = [r["test_acc"] for r in sweep_result.runs("mlp", lr=0.3)]
    summary = sweep_result.summary("mlp")["0.3"]["test_acc"]
    assert math.isclose(summary["mean"], sum(values) / len(values), rel_tol=FLOAT_RTOL)


# --- run_many: the job cache -----------------------------------------------------------------


def test_first_run_caches_every_job_once(result, cache_dir, job_count):
    assert result.provenance["cached_jobs"] == 0
    assert len(cache_files(cache_dir)) == job_count


def test_second_run_takes_every_job_from_the_cache(result, experiment, cache_dir, job_count,
                                                   monkeypatch):
    def fail(*args):
        raise AssertionError("a cached job ran again")

    monkeypatch.setattr(runner_module, "run_job", fail)
    (again,) = run_many([experiment], jobs=1, cache_dir=cache_dir, progress=False)
    assert again.provenance["cached_jobs"] == job_count
    assert again.data["arms"] == result.data["arms"]


def test_interrupted_run_resumes_from_the_cache_with_identical_results(result, experiment,
                                                                       cache_dir, tmp_path,
                                                                       job_count):
    (tmp_path / "jobs").mkdir()
    files = cache_files(cache_dir)
    for f in files[::2]:                                   # half the jobs finished
        (tmp_path / "jobs" / f.name).write_bytes(f.read_bytes())
    (resumed,) = run_many([experiment], jobs=1, cache_dir=tmp_path, progress=False)
    assert resumed.provenance["cached_jobs"] == len(files[::2])
    assert resumed.data["arms"] == result.data["arms"]
    assert [f.name for f in cache_files(tmp_path)] == [f.name for f in files]
    assert len(files) == job_count


def test_use_cache_false_writes_no_cache_files(experiment, tmp_path):
    run_many([experiment], jobs=1, cache_dir=tmp_path, use_cache=False, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert not (default_cache_dir() / "jobs").exists()


# --- run_many: executors ---------------------------------------------------------------------


def test_process_pool_gives_identical_results(result, experiment):
    (pooled,) = run_many([experiment], jobs=2, use_cache=False, progress=False)
    assert pooled.data["arms"] == result.data["arms"]
    assert pooled.provenance["workers"] == 2


def test_dask_executor_gives_identical_results(result, experiment):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        (dasked,) = run_many([experiment], executor=client.get_executor(), use_cache=False,
                             progress=False)
    assert dasked.data["arms"] == result.data["arms"]


def test_job_error_propagates_from_run_many(tmp_path):
    # ghost batches of 3 leave a ghost of 1 example in a batch of 16: BN cannot normalize it
    bad = Experiment("bad", "bad", (("a", QUICK.replace(norm="ghost:3", batch_size=16)),),
                     seeds=SEEDS, tuning_seeds=TUNING_SEEDS)
    with pytest.raises(ValueError, match="value per channel"):
        run_many([bad], jobs=1, cache_dir=tmp_path, progress=False)


def test_arm_rejects_unknown_model_norm_and_measure():
    for bad in (dict(model="rnn"), dict(norm="ghost:x"), dict(norm="bn"),
                dict(measure=("grad-noise",)), dict(task="flops", lr_grid=(), measure=("jitter",))):
        with pytest.raises(ValueError, match="expected"):
            QUICK.replace(**bad)


# --- stored results --------------------------------------------------------------------------


def test_save_writes_name_json_that_load_result_reads_back(result, tmp_path, monkeypatch):
    monkeypatch.setenv("BNCOURSE_RESULTS_DIR", str(tmp_path))
    path = save(result, tmp_path)
    assert path == tmp_path / "tiny.json" and path.is_file()
    assert load_result("tiny").data == result.data
    assert result_names() == ["tiny"]


def test_load_result_of_a_missing_name_says_how_to_reproduce_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BNCOURSE_RESULTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape("./course reproduce missing")):
        load_result("missing")


def test_write_json_leaves_no_temporary_file_when_serialization_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1.0})
    before = path.read_text()
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_text() == before


def test_write_json_removes_its_temporary_file_when_the_replace_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1.0})
    before = path.read_text()

    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_json(path, {"a": 2.0})
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_text() == before


# --- Result accessors ------------------------------------------------------------------------

#: Two hand-written runs: the second diverged in its second epoch.
HAND_RUNS = [
    {"seed": 0, "diverged": False, "test_acc": 0.5, "test_loss": 1.5, "jitter": {"all": 0.2},
     "val_acc_curve": [0.3, 0.4, 0.5], "train_loss_curve": [2.0, 1.8, 1.6]},
    {"seed": 1, "diverged": True, "test_acc": CHANCE, "test_loss": None, "jitter": {"all": 0.4},
     "val_acc_curve": [0.35], "train_loss_curve": [2.1]},
]


@pytest.fixture
def hand_result() -> Result:
    return Result({"name": "hand", "arms": {"a": {"runs": HAND_RUNS, "chosen_lr": 0.1}}})


def test_values_are_per_seed_with_none_as_nan_and_dotted_keys(hand_result):
    np.testing.assert_array_equal(hand_result.values("a", "test_acc"), [0.5, CHANCE])
    np.testing.assert_array_equal(hand_result.values("a", "test_loss"), [1.5, np.nan])
    np.testing.assert_array_equal(hand_result.values("a", "jitter.all"), [0.2, 0.4])


def test_curves_pad_a_diverged_run_at_chance_for_accuracy_and_nan_otherwise(hand_result):
    np.testing.assert_array_equal(hand_result.curves("a"),
                                  [[0.3, 0.4, 0.5], [0.35, CHANCE, CHANCE]])
    np.testing.assert_array_equal(hand_result.curves("a", "train_loss_curve"),
                                  [[2.0, 1.8, 1.6], [2.1, np.nan, np.nan]])


def test_unknown_arm_raises_key_error_naming_the_arms(hand_result):
    with pytest.raises(KeyError, match=r"\['a'\]"):
        hand_result.arm("b")


def test_runs_of_a_sweep_at_one_lr_are_in_seed_order(sweep_result):
    runs = sweep_result.runs("mlp", lr=0.3)
    assert [(r["lr"], r["seed"]) for r in runs] == [(0.3, s) for s in SEEDS]
    assert sweep_result.curves("mlp", lr=0.3).shape == (len(SEEDS), TINY.epochs)


def test_runs_of_a_sweep_at_an_lr_off_the_grid_raise_key_error(sweep_result):
    with pytest.raises(KeyError, match="lr"):
        sweep_result.runs("mlp", lr=0.5)


# --- command line ----------------------------------------------------------------------------


def test_cli_list_prints_every_registered_experiment(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bncourse.experiments", "list"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "BNCOURSE_RESULTS_DIR": str(tmp_path)})
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert listed == list(registry())
    assert all("missing" in line for line in out.stdout.splitlines() if line.strip())


def test_cli_reproduce_of_an_unknown_experiment_returns_2(capsys):
    assert main(["reproduce", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_check_passes_only_when_every_stored_hash_is_fresh(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNCOURSE_RESULTS_DIR", str(tmp_path))
    reg = registry()
    for name, exp in reg.items():
        write_json(tmp_path / f"{name}.json", {"name": name, "config_hash": exp.config_hash})
    assert main(["check"]) == 0
    stale = next(iter(reg))
    write_json(tmp_path / f"{stale}.json", {"name": stale, "config_hash": "0" * 16})
    assert main(["check"]) == 1
    assert f"{stale}: stale" in capsys.readouterr().out


# --- notebook 08's data and models ------------------------------------------------------------


def test_seqvar_split_pads_each_signal_to_its_length_and_adds_a_shorter_test(mnist1d):
    from bncourse.experiments.jobs import splits

    data = splits("seqvar")
    full = splits("full")
    assert data["x_train"].shape == (3200, 2, 40) and data["x_val"].shape == (800, 2, 40)
    lengths = data["x_train"][:, 1].sum(1)
    assert lengths.min() >= 16 and lengths.max() <= 40
    short = data["x_test_short"][:, 1].sum(1)
    assert short.min() >= 6 and short.max() <= 15
    first = int(lengths[0])                                   # the real part is the signal
    torch.testing.assert_close(data["x_train"][0, 0, :first], full["x_train"][0, :first])
    assert (data["x_train"][0, 0, first:] == 0).all()
    assert torch.equal(data["y_train"], full["y_train"])


@pytest.mark.parametrize(("arm", "kind"), [
    (Arm(model="transformer", data="seqvar", hidden=(16, 16), norm="rms"), "TinyTransformer"),
    (Arm(model="resmlp", hidden=(8,) * 3, norm="skipinit"), "Sequential"),
])
def test_build_model_makes_notebook_08s_models(arm, kind):
    from bncourse.experiments.jobs import build_model

    model = build_model(arm)
    assert type(model).__name__ == kind
    x = torch.zeros(2, 2, 40) if arm.model == "transformer" else torch.zeros(2, 40)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("arm", [
    Arm(model="transformer", data="full", hidden=(16, 16), norm="layer"),
    Arm(model="transformer", data="seqvar", hidden=(16, 8), norm="layer"),
    Arm(model="resmlp", hidden=(8, 4), norm="batch"),
])
def test_build_model_rejects_inconsistent_arms_for_notebook_08s_models(arm):
    from bncourse.experiments.jobs import build_model

    with pytest.raises(ValueError, match="expected"):
        build_model(arm)
