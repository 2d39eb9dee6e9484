"""Runs every benchmark and prints one table of ratios, each measured side by side in one run.

    python bench/run_all.py [--rounds 5] [--min-run-time 0.2]
"""

from __future__ import annotations

import bench_batchnorm
import bench_inference
from _timing import run_cli

if __name__ == "__main__":
    run_cli("bncourse benchmarks", [bench_batchnorm.rows, bench_inference.rows])
