"""BN at inference and BN's memory-bound cost, as ratios from one run.

    python bench/bench_inference.py [--rounds 5]

* Unfolded vs folded eval-mode inference (``bncourse.nn.fold_batchnorm``) of the course's 1-D CNN
  on MNIST-1D-sized inputs and of a small 2-D CNN; goal: folded >= 1.2x faster, at <= 1e-5 max
  abs error (checked here before timing).
* Native BN forward vs a one-read-one-write operation on the same tensor (``torch.mul(x, 2)``):
  BN reads the input twice (statistics, then normalization) and writes once, so a perfectly
  memory-bound BN costs about 1.5x the copy-like op; the ratio says how far from that limit it is.
"""

from __future__ import annotations

import torch
from _timing import Row, compare, run_cli
from torch import nn

from bncourse.models import cnn1d
from bncourse.nn import fold_batchnorm

FOLD_ATOL = 1e-5


def _randomized_eval(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _conv2d_net() -> nn.Sequential:
    layers, c_in = [], 3
    for c_out in (32, 64, 64):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))


def _fold_candidates(label: str, model: nn.Module, x: torch.Tensor) -> dict:
    model = _randomized_eval(model)
    folded = fold_batchnorm(model)
    with torch.inference_mode():
        error = (model(x) - folded(x)).abs().max().item()
    if error > FOLD_ATOL:
        raise AssertionError(f"folded {label} differs by {error:.2e} > {FOLD_ATOL}")

    def infer(m):
        def run():
            with torch.inference_mode():
                m(x)
        return run

    return {f"{label} unfolded": infer(model), f"{label} folded": infer(folded)}


def _memory_bound_candidates(shape: tuple[int, ...]) -> dict:
    x = torch.randn(shape)
    bn = nn.BatchNorm2d(shape[1])

    def bn_forward():
        with torch.no_grad():
            bn(x)

    return {"bn forward": bn_forward, "one read one write": lambda: torch.mul(x, 2.0)}


def rows(rounds: int = 5, min_run_time: float = 0.2) -> list[Row]:
    torch.manual_seed(0)
    t = compare(_fold_candidates("cnn1d", cnn1d(norm="batch"), torch.randn(1000, 40)),
                rounds, min_run_time)
    t |= compare(_fold_candidates("conv2d", _conv2d_net(), torch.randn(32, 3, 32, 32)),
                 rounds, min_run_time)
    t |= compare(_memory_bound_candidates((32, 64, 32, 32)), rounds, min_run_time)
    return [
        Row("unfolded / folded, 1-D CNN eval (1000, 40)", t["cnn1d unfolded"],
            t["cnn1d folded"], ">= 1.2x"),
        Row("unfolded / folded, 2-D CNN eval (32, 3, 32, 32)", t["conv2d unfolded"],
            t["conv2d folded"], ">= 1.2x"),
        Row("BN forward / mul (32, 64, 32, 32)", t["bn forward"], t["one read one write"],
            "~1.5x = memory-bound"),
    ]


def main() -> None:
    run_cli("batch norm at inference", [rows])


if __name__ == "__main__":
    main()
