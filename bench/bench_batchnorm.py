"""Batch-norm speed, as ratios measured side by side in one run (absolute times are noisy here).

    python bench/bench_batchnorm.py [--rows 4096] [--cols 1024] [--rounds 5]

Rows of the table:
  * scratch ``bncourse.nn.BatchNorm`` vs native ``nn.BatchNorm1d``, forward and forward+backward
    in training mode (goal: fwd+bwd <= 2.0x native);
  * numpy staged backward vs compact backward (goal: compact >= 2x faster).

Each candidate is timed in interleaved rounds (A, B, A, B, ...) and the median of the rounds is
reported, so a burst of load from another process hits both sides alike.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from torch.utils.benchmark import Timer

from bncourse.functional import batchnorm_backward, batchnorm_backward_compact, batchnorm_forward
from bncourse.nn import BatchNorm


def seconds(fn, min_run_time: float) -> float:
    """Median seconds per call of ``fn`` over one adaptive block of runs."""
    timer = Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def compare(candidates: dict, rounds: int, min_run_time: float) -> dict[str, float]:
    """Median over interleaved rounds of each candidate's seconds per call."""
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(seconds(fn, min_run_time))
    return {name: statistics.median(t) for name, t in times.items()}


def module_candidates(rows: int, cols: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(rows, cols, requires_grad=True)
    dout = torch.randn(rows, cols)
    native, scratch = torch.nn.BatchNorm1d(cols), BatchNorm(cols)

    def forward(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    def forward_backward(module):
        def run():
            x.grad = None
            module.zero_grad(set_to_none=True)
            module(x).backward(dout)
        return run

    return {
        "native fwd": forward(native), "scratch fwd": forward(scratch),
        "native fwd+bwd": forward_backward(native), "scratch fwd+bwd": forward_backward(scratch),
    }


def numpy_candidates(rows: int, cols: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    dout = rng.normal(size=(rows, cols)).astype(np.float32)
    gamma, beta = np.ones(cols, np.float32), np.zeros(cols, np.float32)
    _, cache = batchnorm_forward(x, gamma, beta, training=True)
    return {
        "numpy staged bwd": lambda: batchnorm_backward(dout, cache),
        "numpy compact bwd": lambda: batchnorm_backward_compact(dout, cache),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.2)
    args = parser.parse_args()

    t = compare(module_candidates(args.rows, args.cols), args.rounds, args.min_run_time)
    t |= compare(numpy_candidates(args.rows, args.cols), args.rounds, args.min_run_time)
    rows = [
        ("scratch module fwd / native", t["scratch fwd"], t["native fwd"], "-"),
        ("scratch module fwd+bwd / native", t["scratch fwd+bwd"], t["native fwd+bwd"], "<= 2.0x"),
        ("numpy staged bwd / compact bwd", t["numpy staged bwd"], t["numpy compact bwd"],
         ">= 2.0x"),
    ]
    print(f"batch norm, float32 ({args.rows}, {args.cols}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    print(f"{'comparison':<34}{'ratio':>8}{'A (ms)':>10}{'B (ms)':>10}  goal")
    for name, a, b, goal in rows:
        print(f"{name:<34}{a / b:>7.2f}x{a * 1e3:>10.2f}{b * 1e3:>10.2f}  {goal}")


if __name__ == "__main__":
    main()
