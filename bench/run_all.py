"""Runs every benchmark and prints one table of ratios, each measured side by side in one run.

    python bench/run_all.py [--rounds 5] [--min-run-time 0.2]
"""

from __future__ import annotations

import argparse

import bench_batchnorm
import bench_inference
import torch
from _timing import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.2)
    args = parser.parse_args()
    rows = []
    for bench in (bench_batchnorm, bench_inference):
        rows += bench.rows(args.rounds, args.min_run_time)
    print_table(f"bncourse benchmarks: float32, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds",
                rows)


if __name__ == "__main__":
    main()
