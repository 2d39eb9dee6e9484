"""Running experiments: jobs on any ``concurrent.futures.Executor``, a job cache, the tuning
protocol, summaries with 95% intervals, and the stored result with its provenance.

Layout of a stored result (``NAME.json``)::

    name, title, notes, config_hash, config       what was run (config hashes to config_hash)
    arms.ARM.tuning   {seeds, table: [{lr, val_acc: [per seed], mean, diverged}], chosen_lr}
    arms.ARM.runs     [per evaluation seed: the job's metrics] at the chosen learning rate
    arms.ARM.sweep    [every (lr, seed) job] for a sweep experiment
    arms.ARM.summary  {METRIC: {mean, ci95: [low, high]}, convergence: {...}}
    provenance        git commit, versions, CPU, threads, workers, wall seconds, date
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime
import json
import math
import multiprocessing
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy
import torch
from tqdm import tqdm

from bncourse.data import default_cache_dir
from bncourse.experiments.config import JOB_VERSION, Arm, Experiment, arm_dict, digest
from bncourse.experiments.jobs import CHANCE, run_job
from bncourse.experiments.results import Result, write_json
from bncourse.verdict import estimate

__all__ = ["run", "run_many", "job_key", "CONVERGENCE_WINDOW", "CONVERGENCE_TOLERANCE"]

#: Convergence: over the last 20% of epochs the seed-mean validation accuracy moves by less than
#: one point: the least-squares line through it changes by less than CONVERGENCE_TOLERANCE from
#: the window's first epoch to its last. (The line, not max - min: a run that has stopped
#: improving still jitters by a point when its batch statistics do, as noisy BN's do.)
CONVERGENCE_WINDOW = 0.2
CONVERGENCE_TOLERANCE = 0.01
_SUMMARY_METRICS = ("test_acc", "val_acc", "train_acc", "test_loss", "train_loss", "gap")

Job = tuple[Arm, int, "float | None"]


def job_key(arm: Arm, seed: int, lr: float | None) -> str:
    """The cache key of a job: its arguments (the arm without its grid, which a job does not
    read), the job version and the library versions."""
    fields = arm_dict(arm)
    del fields["lr_grid"]
    return digest({"arm": fields, "seed": seed, "lr": lr,
                   "job_version": JOB_VERSION, "torch": torch.__version__,
                   "numpy": np.__version__})


def _timed_job(arm: Arm, seed: int, lr: float | None) -> tuple[dict, float]:
    start = time.perf_counter()
    metrics = run_job(arm, seed, lr)
    return metrics, time.perf_counter() - start


def _init_worker() -> None:
    torch.set_num_threads(1)


class _Serial(cf.Executor):
    """Runs each job in this process when it is submitted (``jobs=1``)."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # delivered through the future, as a pool would
            future.set_exception(e)
        return future


def _default_executor(jobs: int) -> cf.Executor:
    if jobs == 1:
        return _Serial()
    return cf.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                  mp_context=multiprocessing.get_context("spawn"))


def _execute(jobs: list[Job], executor: cf.Executor, cache: Path | None, bar: tqdm,
             cached: set[str]) -> dict[str, tuple[dict, float]]:
    """Runs the jobs not in the cache; returns key -> (metrics, seconds) for all of them and
    adds the keys found in the cache to ``cached``."""
    done: dict[str, tuple[dict, float]] = {}
    pending: dict[cf.Future, str] = {}
    for arm, seed, lr in jobs:
        key = job_key(arm, seed, lr)
        if key in done or key in pending.values():
            continue
        path = None if cache is None else cache / f"{key}.json"
        if path is not None and path.is_file():
            entry = json.loads(path.read_text())
            done[key] = (entry["metrics"], entry["seconds"])
            cached.add(key)
            bar.update(1)
            continue
        pending[executor.submit(_timed_job, arm, seed, lr)] = key
    for future in cf.as_completed(pending):
        key = pending[future]
        metrics, seconds = future.result()
        done[key] = (metrics, seconds)
        if cache is not None:
            write_json(cache / f"{key}.json", {"metrics": metrics, "seconds": seconds})
        bar.update(1)
    return done


def _final_val(metrics: dict) -> float:
    return CHANCE if metrics["diverged"] else metrics["val_acc"]


def _interval(values: Sequence[float]) -> dict:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size < 2:
        return {"mean": float(x.mean()) if x.size else None, "ci95": None, "n": int(x.size)}
    e = estimate(x)
    return {"mean": e.mean, "ci95": [e.ci_low, e.ci_high], "n": int(x.size)}


def _convergence(runs: list[dict], epochs: int) -> dict:
    """Does the seed-mean validation accuracy still move over the last 20% of epochs?

    Returns ``window_epochs``, ``drift`` (change of the least-squares line across the window),
    ``range`` (max - min in the window) and ``converged`` (``|drift| < 1 point``).
    """
    window = max(2, math.ceil(CONVERGENCE_WINDOW * epochs))
    table = np.full((len(runs), epochs), CHANCE)
    for i, r in enumerate(runs):
        table[i, : len(r["val_acc_curve"])] = r["val_acc_curve"]
    tail = table.mean(0)[-window:]
    slope = float(np.polyfit(np.arange(window), tail, 1)[0])
    drift = slope * (window - 1)
    return {"window_epochs": window, "drift": drift, "range": float(tail.max() - tail.min()),
            "converged": abs(drift) < CONVERGENCE_TOLERANCE}


def _summarize(arm: Arm, runs: list[dict]) -> dict:
    if arm.task != "train":
        return {}
    summary = {}
    for m in _SUMMARY_METRICS:
        if m == "gap":
            vals = [r["train_acc"] - r["test_acc"] for r in runs]
        else:
            vals = [r[m] for r in runs]
        summary[m] = _interval(vals)
    summary["diverged"] = sum(r["diverged"] for r in runs)
    summary["convergence"] = _convergence(runs, arm.epochs)
    return summary


def _tuning_jobs(exp: Experiment) -> list[Job]:
    if exp.sweep:
        return []
    return [(arm, s, lr) for _, arm in exp.arms if arm.task == "train"
            for lr in arm.lr_grid for s in exp.tuning_seeds]


def _choose(exp: Experiment, done: dict) -> dict[str, dict]:
    """The tuning table and chosen learning rate of every training arm."""
    tuning = {}
    for name, arm in exp.arms:
        if arm.task != "train" or exp.sweep:
            continue
        rows = []
        for lr in arm.lr_grid:
            ms = [done[job_key(arm, s, lr)][0] for s in exp.tuning_seeds]
            vals = [_final_val(m) for m in ms]
            rows.append({"lr": lr, "val_acc": vals, "mean": float(np.mean(vals)),
                         "train_acc": [m["train_acc"] for m in ms],
                         "diverged": sum(m["diverged"] for m in ms)})
        best = max(rows, key=lambda r: r["mean"])        # ties: the smaller learning rate
        edge = best["lr"] in (arm.lr_grid[0], arm.lr_grid[-1]) and len(arm.lr_grid) > 1
        tuning[name] = {"seeds": list(exp.tuning_seeds), "table": rows,
                        "chosen_lr": best["lr"], "chosen_at_grid_edge": edge}
    return tuning


def _eval_jobs(exp: Experiment, tuning: dict) -> list[Job]:
    jobs = []
    for name, arm in exp.arms:
        if arm.task != "train":
            lrs = (None,)
        elif exp.sweep:
            lrs = arm.lr_grid
        else:
            lrs = (tuning[name]["chosen_lr"],)
        jobs += [(arm, s, lr) for lr in lrs for s in exp.seeds]
    return jobs


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        # the code that made the numbers; the results themselves are being written
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bncourse",
                                ":!bncourse/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_isa() -> str | None:
    """A digest of the CPU's instruction-set flags: float32 kernels (and so the last bits of a
    result) depend on them, not only on the model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return digest(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(workers: int | None, wall_seconds: float, job_seconds: float, cached: int) -> dict:
    """Where and how a result was made. ``wall_seconds`` is the whole invocation's (experiments
    run together share it); ``job_seconds`` is this experiment's compute, cached jobs included
    at the time they took when they ran."""
    return {
        "git_commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_isa": _cpu_isa(),
        "cpu_count": os.cpu_count(),
        "threads_per_job": 1, "workers": workers, "wall_seconds": round(wall_seconds, 1),
        "job_seconds": round(job_seconds, 1), "cached_jobs": cached,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _assemble(exp: Experiment, tuning: dict, done: dict, prov: dict) -> Result:
    arms = {}
    for name, arm in exp.arms:
        entry: dict = {"config": arm_dict(arm)}
        if name in tuning:
            entry["tuning"] = tuning[name]
            entry["chosen_lr"] = tuning[name]["chosen_lr"]
        if exp.sweep and arm.task == "train":
            entry["lr_grid"] = list(arm.lr_grid)
            entry["sweep"] = [done[job_key(arm, s, lr)][0] for lr in arm.lr_grid for s in exp.seeds]
            entry["summary"] = {
                str(lr): _summarize(arm, [done[job_key(arm, s, lr)][0] for s in exp.seeds])
                for lr in arm.lr_grid
            }
        else:
            lr = tuning[name]["chosen_lr"] if name in tuning else None
            runs = [done[job_key(arm, s, lr)][0] for s in exp.seeds]
            entry["runs"] = runs
            entry["summary"] = _summarize(arm, runs)
        arms[name] = entry
    data = {
        "format": 1, "name": exp.name, "title": exp.title, "notes": exp.notes,
        "config_hash": exp.config_hash, "config": exp.to_dict(), "arms": arms,
        "provenance": prov,
    }
    return Result(json.loads(json.dumps(data)))     # as stored: tuples become lists


def run_many(
    experiments: Iterable[Experiment], *, executor: cf.Executor | None = None,
    jobs: int | None = None, progress: bool = True, cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> list[Result]:
    """Runs several experiments, batching their jobs phase by phase (all tuning jobs, then all
    evaluation jobs), so no worker idles between experiments.

    Args:
        experiments: :class:`Experiment` objects.
        executor: any ``concurrent.futures.Executor`` (e.g. a Dask ``Client.get_executor()``);
            ``None``: ``jobs`` local processes (spawned, one torch thread each), or this process
            for ``jobs=1``.
        jobs: worker processes for the default executor. Default: the CPU count.
        progress: a progress bar over jobs.
        cache_dir: where finished jobs are cached (``jobs/KEY.json``), so an interrupted run
            resumes. Default: the data cache directory.
        use_cache: read and write the job cache.

    Returns:
        One :class:`Result` per experiment, in order (not written; see :func:`save`).
    """
    exps = list(experiments)
    jobs = jobs or os.cpu_count() or 1
    cache = Path(cache_dir or default_cache_dir()) / "jobs" if use_cache else None
    own = executor is None
    executor = _default_executor(jobs) if own else executor
    start = time.perf_counter()
    try:
        tuning_jobs = [j for e in exps for j in _tuning_jobs(e)]
        n_eval = sum(len(e.seeds) * (len(a.lr_grid) if e.sweep and a.task == "train" else 1)
                     for e in exps for _, a in e.arms)
        with tqdm(total=len(tuning_jobs) + n_eval, disable=not progress, unit="job") as bar:
            cached: set[str] = set()
            done = _execute(tuning_jobs, executor, cache, bar, cached)
            tunings = [_choose(e, done) for e in exps]
            eval_jobs = [j for e, t in zip(exps, tunings, strict=True) for j in _eval_jobs(e, t)]
            done |= _execute(eval_jobs, executor, cache, bar, cached)
    finally:
        if own:
            executor.shutdown()
    wall = time.perf_counter() - start
    workers = 1 if jobs == 1 and own else getattr(executor, "_max_workers", None)
    results = []
    for e, t in zip(exps, tunings, strict=True):
        keys = {job_key(*j) for j in _tuning_jobs(e) + _eval_jobs(e, t)}
        job_seconds = sum(done[k][1] for k in keys)
        prov = provenance(workers, wall, job_seconds, cached=len(keys & cached))
        results.append(_assemble(e, t, done, prov))
    return results


def run(name: str, *, seeds: Sequence[int] | None = None, executor: cf.Executor | None = None,
        jobs: int | None = None, progress: bool = True, **kwargs) -> Result:
    """Runs the registered experiment ``name`` and returns its :class:`Result` (not written).

    Args:
        name: a key of :func:`bncourse.experiments.registry`.
        seeds: evaluation seeds instead of the registered ones (a quick check; the config hash
            changes accordingly).
        executor, jobs, progress, ``**kwargs``: as :func:`run_many`.
    """
    from bncourse.experiments.registry import registry

    exp = registry()[name]
    if seeds is not None:
        exp = dataclasses.replace(exp, seeds=tuple(seeds))
    return run_many([exp], executor=executor, jobs=jobs, progress=progress, **kwargs)[0]


def save(result: Result, folder: str | os.PathLike) -> Path:
    """Writes ``folder/NAME.json`` atomically and returns its path."""
    path = Path(folder) / f"{result.name}.json"
    write_json(path, result.data)
    return path
