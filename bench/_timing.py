"""Shared timing helpers for the benchmarks: interleaved rounds, medians, one table format."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.benchmark import Timer


class Row(NamedTuple):
    """One comparison: ``ratio = a_seconds / b_seconds`` and the goal it is read against."""

    name: str
    a_seconds: float
    b_seconds: float
    goal: str = "-"

    @property
    def ratio(self) -> float:
        return self.a_seconds / self.b_seconds


def seconds(fn: Callable[[], object], min_run_time: float) -> float:
    """Median seconds per call of ``fn`` over one adaptive block of runs."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def compare_rounds(candidates: dict[str, Callable[[], object]], rounds: int,
                   min_run_time: float) -> dict[str, list[float]]:
    """Each candidate's seconds per call in every one of ``rounds`` interleaved rounds
    (A, B, A, B, ...), so a burst of load from another process hits every candidate alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(seconds(fn, min_run_time))
    return times


def compare(candidates: dict[str, Callable[[], object]], rounds: int,
            min_run_time: float) -> dict[str, float]:
    """Median over interleaved rounds of each candidate's seconds per call."""
    times = compare_rounds(candidates, rounds, min_run_time)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(title: str, rows: list[Row]) -> None:
    print(title)
    print(f"{'comparison (A / B)':<50}{'ratio':>8}{'A (ms)':>10}{'B (ms)':>10}  goal")
    for row in rows:
        print(f"{row.name:<50}{row.ratio:>7.2f}x{row.a_seconds * 1e3:>10.3f}"
              f"{row.b_seconds * 1e3:>10.3f}  {row.goal}")


def run_cli(description: str, row_makers: list[Callable[[int, float], list[Row]]]) -> None:
    """Parses ``--rounds`` and ``--min-run-time``, runs every row maker, prints one table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.2)
    args = parser.parse_args()
    rows = [row for make in row_makers for row in make(args.rounds, args.min_run_time)]
    print_table(f"{description}: float32, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds",
                rows)


def on_one_thread(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` on one torch thread, as the experiments and notebooks run; returns its result
    and the wall seconds. The caller's thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        return fn(), time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def store(name: str, data: dict, wall_seconds: float) -> Path:
    """Writes ``data`` with provenance to ``bench/NAME.json`` in the package's results folder
    (atomically), where the notebooks and the claim table read it."""
    from bncourse.experiments.results import results_dir, write_json
    from bncourse.experiments.runner import provenance

    prov = provenance(workers=1, wall_seconds=wall_seconds, job_seconds=0.0, cached=0)
    path = Path(str(results_dir())) / "bench" / f"{name}.json"
    write_json(path, {"name": name, **data, "provenance": prov})
    return path
