"""The stored results: present, fresh (config hash = registry's), with provenance, converged where
the protocol says so, reproducible by re-running a job, and found by every copy of the course."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from bncourse.experiments import load_result, registry, result_names, results_dir, run_job
from bncourse.experiments.config import Arm

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(registry())
PROVENANCE_KEYS = {"git_commit", "python", "torch", "numpy", "cpu", "threads_per_job", "workers",
                   "wall_seconds", "job_seconds", "date"}
#: Re-running a training job on another CPU: float32 kernels differ in rounding across vector
#: widths, 2000 SGD steps amplify that into a different but equally likely run, so the rerun is
#: another draw from the seed distribution: allow 4 seed standard deviations of the arm.
CROSS_MACHINE_SEED_SDS = 4.0
#: A measurement without training differs across CPUs only by float32 rounding.
MEASUREMENT_RTOL = 1e-4


def _same_machine(prov: dict) -> bool:
    """Same CPU model and instruction set, same torch and numpy: the run must repeat bit for bit."""
    import torch

    from bncourse.experiments.runner import _cpu_isa, _cpu_model

    here = (_cpu_model(), _cpu_isa(), torch.__version__, np.__version__)
    return (prov["cpu"], prov.get("cpu_isa"), prov["torch"], prov["numpy"]) == here


def test_every_registered_experiment_has_a_stored_result():
    assert set(NAMES) <= set(result_names())


@pytest.mark.parametrize("name", NAMES)
def test_stored_result_matches_the_registry_config(name):
    result = load_result(name)
    exp = registry()[name]
    assert result.config_hash == exp.config_hash, f"stale: run ./course reproduce {name}"
    assert result.data["config"] == json.loads(json.dumps(exp.to_dict()))


@pytest.mark.parametrize("name", NAMES)
def test_stored_result_carries_provenance(name):
    prov = load_result(name).provenance
    assert PROVENANCE_KEYS <= set(prov)
    assert prov["threads_per_job"] == 1 and prov["job_seconds"] > 0
    assert prov["git_commit"] is None or not prov["git_commit"].endswith("+dirty")


@pytest.mark.parametrize("name", NAMES)
def test_every_arm_has_one_run_per_evaluation_seed_and_no_tuning_seed(name):
    result, exp = load_result(name), registry()[name]
    for arm_name, arm in exp.arms:
        if exp.sweep and arm.task == "train":
            seeds = sorted({r["seed"] for r in result.arm(arm_name)["sweep"]})
        else:
            seeds = [r["seed"] for r in result.runs(arm_name)]
        assert sorted(seeds) == sorted(exp.seeds)
        assert not set(seeds) & set(exp.tuning_seeds)


@pytest.mark.parametrize("name", [n for n in NAMES if registry()[n].converge])
def test_every_arm_converged(name):
    result, exp = load_result(name), registry()[name]
    for arm_name, arm in exp.arms:
        if arm.task != "train":
            continue
        summaries = (result.summary(arm_name).values() if exp.sweep
                     else [result.summary(arm_name)])
        for s in summaries:
            if exp.sweep and s["diverged"]:
                continue   # a rate at which training diverges has nothing to converge to
            conv = s["convergence"]
            assert conv["converged"], (arm_name, conv)


@pytest.mark.parametrize("name", [n for n in NAMES if not registry()[n].sweep])
def test_chosen_learning_rates_lie_inside_their_grids(name):
    result, exp = load_result(name), registry()[name]
    for arm_name, arm in exp.arms:
        if arm.task == "train":
            tuning = result.arm(arm_name)["tuning"]
            assert tuning["chosen_lr"] in arm.lr_grid
            best = max(tuning["table"], key=lambda row: row["mean"])["lr"]
            assert tuning["chosen_lr"] == best
            assert not tuning["chosen_at_grid_edge"] or arm_name in exp.edge_ok, arm_name


#: A cheap training job to re-run: the plain MLP of `mlp_bn`, 2000 steps, about a second.
RERUN = ("mlp_bn", "none")


def test_rerunning_one_training_job_matches_its_stored_metrics():
    name, arm_name = RERUN
    arm = registry()[name].arm(arm_name)
    result = load_result(name)
    stored = result.runs(arm_name)[0]
    rerun = run_job(arm, stored["seed"], result.chosen_lr(arm_name))
    if _same_machine(result.provenance):
        assert rerun == stored
    else:
        sd = result.values(arm_name, "test_acc").std(ddof=1)
        assert abs(rerun["test_acc"] - stored["test_acc"]) <= CROSS_MACHINE_SEED_SDS * sd


def test_rerunning_a_measurement_matches_its_stored_metrics():
    result = load_result("batch_stats")
    arm = registry()["batch_stats"].arm("mlp")
    stored = result.runs("mlp")[0]
    rerun = run_job(arm, stored["seed"], None)
    if _same_machine(result.provenance):
        assert rerun == stored
    else:
        np.testing.assert_allclose(rerun["mean_error"], stored["mean_error"], rtol=MEASUREMENT_RTOL)


def test_results_are_found_whatever_the_working_directory(tmp_path):
    code = "from bncourse.experiments import load_result; print(load_result('mlp_bn').name)"
    env = {k: v for k, v in os.environ.items() if k != "BNCOURSE_RESULTS_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mlp_bn"


def _sources_outside_the_tree(tmp_path) -> Path:
    """A copy of what the wheel is built from: setuptools writes scratch files into build/
    next to pyproject.toml, where `./course build` also writes."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "bncourse", src / "bncourse",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def test_a_wheel_ships_every_module_and_stored_result_and_the_installed_package_reads_them(
        tmp_path):
    src = _sources_outside_the_tree(tmp_path)
    before = sorted((ROOT / "build").glob("*")) if (ROOT / "build").exists() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   capture_output=True)
    after = sorted((ROOT / "build").glob("*")) if (ROOT / "build").exists() else []
    assert after == before                             # nothing written into the source tree
    (wheel,) = (tmp_path / "dist").glob("bncourse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"bncourse/results/{n}.json" for n in NAMES} <= names
    assert {f"bncourse/results/bench/{n}.json" for n in ("inference", "training_cost")} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bncourse").rglob("*.py")}
    assert modules <= names, modules - names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    code = ("import bncourse, bncourse.experiments as e, importlib, pkgutil; "
            "[importlib.import_module(m.name) for m in "
            "pkgutil.walk_packages(bncourse.__path__, 'bncourse.')]; "
            "print(bncourse.__file__); print(e.load_result('mlp_bn').config_hash)")
    env = {k: v for k, v in os.environ.items() if k != "BNCOURSE_RESULTS_DIR"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]).is_relative_to(site)
    assert out[1] == registry()["mlp_bn"].config_hash


def test_results_dir_is_the_package_data_folder_by_default(monkeypatch):
    import bncourse

    monkeypatch.delenv("BNCOURSE_RESULTS_DIR", raising=False)
    assert Path(str(results_dir())) == Path(bncourse.__file__).parent / "results"


def test_arm_defaults_describe_the_shared_protocol():
    arm = Arm()
    ratios = np.exp(np.diff(np.log(arm.lr_grid)))
    assert len(arm.lr_grid) >= 4 and np.all((ratios > 2.5) & (ratios < 4))
    assert arm.schedule == "cosine" and arm.epochs >= 40


def test_a_student_copy_built_into_its_own_folder_reads_the_stored_verdicts(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from bncourse.teaching import build

    capstone = ROOT / "notebooks" / "07_claims_and_evidence.ipynb"
    (student_path,) = [p for p in build([capstone], tmp_path / "build")
                       if p.suffix == ".ipynb" and p.parent.name == "student"]
    student = nbformat.read(student_path, as_version=4)
    first_verdict = next(i for i, c in enumerate(student.cells)
                         if c.cell_type == "code" and "show_verdict(" in c.source)
    imports = next(c for c in student.cells             # the setup cell, after the install cell
                   if c.cell_type == "code" and "from bncourse" in c.source)
    student.cells = [imports, student.cells[first_verdict]]        # imports, then one verdict
    monkeypatch.delenv("BNCOURSE_RESULTS_DIR", raising=False)     # the kernel inherits this
    NotebookClient(student, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(student_path.parent)}}).execute()
    text = "".join(o.get("text", "") for o in student.cells[-1].outputs)
    assert "Verdict: " in text


def test_reproduce_on_a_dask_cluster_regenerates_a_stored_result(tmp_path):
    distributed = pytest.importorskip("distributed")
    from bncourse.experiments.__main__ import main

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        assert main(["reproduce", "batch_stats", "--scheduler", cluster.scheduler_address,
                     "--out", str(tmp_path), "--no-cache", "--quiet"]) == 0
    again = json.loads((tmp_path / "batch_stats.json").read_text())
    stored = load_result("batch_stats")
    assert again["config_hash"] == stored.config_hash
    if _same_machine(stored.provenance):
        assert again["arms"] == stored.data["arms"]
    else:
        np.testing.assert_allclose(again["arms"]["mlp"]["runs"][0]["mean_error"],
                                   stored.runs("mlp")[0]["mean_error"], rtol=MEASUREMENT_RTOL)
