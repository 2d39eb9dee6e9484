"""Scratch BN vs native BN, and the numpy staged vs compact backward, as ratios from one run.

    python bench/bench_batchnorm.py [--rounds 5]

Goals (reported, not tested): scratch module fwd+bwd <= 2.0x native on a (4096, 1024) float32
batch; numpy compact backward >= 2x faster than the staged one.
"""

from __future__ import annotations

import numpy as np
import torch
from _timing import Row, compare, run_cli

from bncourse.functional import batchnorm_backward, batchnorm_backward_compact, batchnorm_forward
from bncourse.nn import BatchNorm


def _module_candidates(label: str, native: torch.nn.Module, shape: tuple[int, ...]) -> dict:
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    dout = torch.randn(shape)
    scratch = BatchNorm(shape[1])

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

    return {f"{label} native fwd": forward(native), f"{label} scratch fwd": forward(scratch),
            f"{label} native fwd+bwd": forward_backward(native),
            f"{label} scratch fwd+bwd": forward_backward(scratch)}


def _numpy_candidates(shape: tuple[int, ...]) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    dout = rng.normal(size=shape).astype(np.float32)
    ones, zeros = np.ones(shape[1], np.float32), np.zeros(shape[1], np.float32)
    _, cache = batchnorm_forward(x, ones, zeros, training=True)
    return {"numpy staged bwd": lambda: batchnorm_backward(dout, cache),
            "numpy compact bwd": lambda: batchnorm_backward_compact(dout, cache)}


def rows(rounds: int = 5, min_run_time: float = 0.2) -> list[Row]:
    t = compare(_module_candidates("1d", torch.nn.BatchNorm1d(1024), (4096, 1024)),
                rounds, min_run_time)
    t |= compare(_module_candidates("2d", torch.nn.BatchNorm2d(64), (32, 64, 32, 32)),
                 rounds, min_run_time)
    t |= compare(_numpy_candidates((4096, 1024)), rounds, min_run_time)
    return [
        Row("scratch BN fwd / BatchNorm1d (4096, 1024)", t["1d scratch fwd"], t["1d native fwd"]),
        Row("scratch BN fwd+bwd / BatchNorm1d (4096, 1024)", t["1d scratch fwd+bwd"],
            t["1d native fwd+bwd"], "<= 2.0x"),
        Row("scratch BN fwd / BatchNorm2d (32, 64, 32, 32)", t["2d scratch fwd"],
            t["2d native fwd"]),
        Row("scratch BN fwd+bwd / BatchNorm2d", t["2d scratch fwd+bwd"], t["2d native fwd+bwd"],
            "<= 2.0x"),
        Row("numpy staged bwd / compact bwd (4096, 1024)", t["numpy staged bwd"],
            t["numpy compact bwd"], ">= 2.0x"),
    ]


def main() -> None:
    run_cli("scratch vs native batch norm", [rows])


if __name__ == "__main__":
    main()
