"""Runs every benchmark and prints one table of ratios, each measured side by side in one run.

    python bench/run_all.py [--rounds 5] [--min-run-time 0.2]

Exits with status 1 if a benchmark's assertion fails (the folded 1-D CNN's speed-up, see
``bench_inference``), after printing the table.
"""

from __future__ import annotations

import bench_batchnorm
import bench_inference
import bench_training
from _timing import run_cli

if __name__ == "__main__":
    run_cli("bncourse benchmarks", [bench_batchnorm.rows, bench_inference.rows,
                                    bench_training.rows])
    bench_inference.check()
