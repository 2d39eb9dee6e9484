"""BN at inference and BN's memory-bound cost, as ratios from one run.

    python bench/bench_inference.py [--rounds 5]

* Unfolded vs folded eval-mode inference (``bncourse.nn.fold_batchnorm``) of the course's 1-D CNN
  on one MNIST-1D signal (latency) and on 1000 (throughput), and of a small 2-D CNN; the folded
  models' max abs error is checked before timing (<= 1e-5: outputs of order 1). Goal: folded
  >= 1.2x faster. Asserted: the 1-D CNN at batch 1000, folded, at least ``REQUIRED_SPEEDUP`` =
  1.1x faster (median of the per-round ratios; the margin below the goal allows for a loaded
  machine), else the bench exits with status 1 and says why.
* Native BN forward, training and eval mode, vs a one-read-one-write operation on the same tensor
  (``torch.mul(x, 2)``) and a one-read per-channel ``sum``: training-mode BN reads the input twice
  (statistics, then normalization) and writes once, so a perfectly memory-bound BN costs about
  1.5x the copy-like op (about sum + mul); the ratio says how far from that limit it is.
  Eval-mode BN reads once and writes once, like the mul.

Runs on one thread, as the notebooks do. Each run stores every round's seconds with provenance
in ``bncourse/results/bench/inference.json`` (under ``$BNCOURSE_RESULTS_DIR`` if set); notebook
06 shows the folding speed-up from there (timings are machine-dependent: a new run on another
machine replaces them).
"""

from __future__ import annotations

import statistics
import sys

import numpy as np
import torch
from _timing import Row, compare_rounds, on_one_thread, run_cli, store
from torch import nn

from bncourse.models import cnn1d
from bncourse.nn import fold_batchnorm

FOLD_ATOL = 1e-5
#: Asserted speed-up of the folded 1-D CNN at batch 1000 (the goal is 1.2x).
REQUIRED_SPEEDUP = 1.1
#: Input shape of each timed folding comparison.
SHAPES = {"cnn1d_b1": (1, 40), "cnn1d_b1000": (1000, 40), "conv2d_b32": (32, 3, 32, 32)}
MEMORY_SHAPE = (32, 64, 32, 32)
#: Messages of failed assertions of the last :func:`rows` call; :func:`check` exits on them.
FAILURES: list[str] = []


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


def _fold_candidates(label: str, model: nn.Module, x: torch.Tensor) -> tuple[dict, float]:
    """``({"unfolded": fn, "folded": fn}, max abs error)`` for eval-mode ``model`` on ``x``."""
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

    return {"unfolded": infer(model), "folded": infer(folded)}, error


def _memory_bound_candidates(shape: tuple[int, ...]) -> dict:
    x = torch.randn(shape)
    bn_train, bn_eval = nn.BatchNorm2d(shape[1]), nn.BatchNorm2d(shape[1]).eval()

    def no_grad(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    return {"bn_train": no_grad(bn_train), "bn_eval": no_grad(bn_eval),
            "mul": lambda: torch.mul(x, 2.0), "sum": lambda: x.sum((0, 2, 3))}


def measure(rounds: int, min_run_time: float) -> tuple[dict, dict]:
    """Per-round seconds ``{comparison: {candidate: [seconds per round]}}`` and the folded
    models' max abs errors."""
    torch.manual_seed(0)
    models = {"cnn1d": _randomized_eval(cnn1d(norm="batch")),
              "conv2d": _randomized_eval(_conv2d_net())}
    seconds, errors = {}, {}
    for key, shape in SHAPES.items():
        candidates, errors[key] = _fold_candidates(key, models[key.split("_")[0]],
                                                   torch.randn(shape))
        seconds[key] = compare_rounds(candidates, rounds, min_run_time)
    seconds["memory_bound"] = compare_rounds(_memory_bound_candidates(MEMORY_SHAPE), rounds,
                                             min_run_time)
    return seconds, errors


def speedup(times: dict) -> tuple[float, np.ndarray]:
    """Median over rounds of the per-round ratio unfolded / folded, and the ratios."""
    r = np.asarray(times["unfolded"]) / np.asarray(times["folded"])
    return float(np.median(r)), r


def rows(rounds: int = 5, min_run_time: float = 0.2) -> list[Row]:
    (seconds, errors), wall = on_one_thread(lambda: measure(rounds, min_run_time))
    path = store("inference", {"rounds": rounds, "min_run_time": min_run_time,
                               "shapes": {**SHAPES, "memory_bound": MEMORY_SHAPE},
                               "required_speedup": {"cnn1d_b1000": REQUIRED_SPEEDUP},
                               "fold_max_abs_error": errors, "seconds": seconds}, wall)
    print(f"stored every round in {path}")

    FAILURES.clear()
    for key in ("cnn1d_b1", "cnn1d_b1000", "conv2d_b32"):
        med, per_round = speedup(seconds[key])
        print(f"speed-up from folding, {key}: median of per-round ratios {med:.3f}x "
              f"(rounds {per_round.min():.3f}-{per_round.max():.3f})")
    med, _ = speedup(seconds["cnn1d_b1000"])
    if med < REQUIRED_SPEEDUP:
        FAILURES.append(
            f"expected the folded 1-D CNN (batch 1000, eval mode) to be at least "
            f"{REQUIRED_SPEEDUP}x faster than unfolded (median of {rounds} per-round ratios); "
            f"got {med:.3f}x. Is the machine loaded? The rounds are stored in {path}.")

    m = {k: {c: statistics.median(v) for c, v in d.items()} for k, d in seconds.items()}
    return [
        Row("unfolded / folded, 1-D CNN eval (1, 40)", m["cnn1d_b1"]["unfolded"],
            m["cnn1d_b1"]["folded"], ">= 1.2x"),
        Row("unfolded / folded, 1-D CNN eval (1000, 40)", m["cnn1d_b1000"]["unfolded"],
            m["cnn1d_b1000"]["folded"], f">= 1.2x (asserted >= {REQUIRED_SPEEDUP}x)"),
        Row("unfolded / folded, 2-D CNN eval (32, 3, 32, 32)", m["conv2d_b32"]["unfolded"],
            m["conv2d_b32"]["folded"], ">= 1.2x"),
        Row("BN train forward / mul (32, 64, 32, 32)", m["memory_bound"]["bn_train"],
            m["memory_bound"]["mul"], "~1.5x = memory-bound"),
        Row("BN eval forward / mul (32, 64, 32, 32)", m["memory_bound"]["bn_eval"],
            m["memory_bound"]["mul"], "~1x = memory-bound"),
    ]


def check() -> None:
    """Exits with status 1 and the reasons if an assertion of the last :func:`rows` failed."""
    if FAILURES:
        sys.exit("bench_inference FAILED: " + " ".join(FAILURES))


def main() -> None:
    run_cli("batch norm at inference (1 thread)", [rows])
    check()


if __name__ == "__main__":
    main()
