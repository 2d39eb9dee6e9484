"""What BN costs in training: time per step, and time per epoch as the data set grows.

    python bench/bench_training.py [--rounds 7]

* One SGD step (forward, backward, update; batch 64) of the course's MLP and 1-D CNN, with and
  without BN, on one thread as the experiments run.
* One epoch over N examples (N = 1000 ... 64000, MNIST-1D signals tiled) of the MLP with and
  without BN: does BN's share of the cost grow with the data set ("expensive on large data")?

Each run stores every round's seconds with provenance in
``bncourse/results/bench/training_cost.json``; notebooks 06 and 07 read the claims' verdicts
from there (timings are machine-dependent: a new run on another machine replaces them).
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from _timing import Row, compare_rounds, on_one_thread, run_cli, store

from bncourse.data import load_mnist1d
from bncourse.models import cnn1d, mlp

BATCH = 64
SIZES = (1000, 4000, 16000, 64000)
BUILD = {"mlp": mlp, "cnn": cnn1d}


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return run


def _epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = x.shape[0] // BATCH

    def run():
        perm = torch.randperm(x.shape[0])[: n * BATCH]
        xb, yb = x[perm].view(n, BATCH, -1), y[perm].view(n, BATCH)   # (steps, B, 40), (steps, B)
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb[i]), yb[i]).backward()
            opt.step()
    return run


def measure(rounds: int, min_run_time: float) -> dict:
    """Per-round seconds: ``step[ARCH_NORM]`` and ``epoch[NORM][N]``."""
    torch.manual_seed(0)
    data = load_mnist1d()
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    steps = compare_rounds({f"{a}_{n}": _step(BUILD[a](norm=n), x, y)
                            for a in BUILD for n in ("none", "batch")}, rounds, min_run_time)
    epochs = {}
    for size in SIZES:
        reps = -(-size // data.x_train.shape[0])
        xs = data.x_train.repeat(reps, 1)[:size]
        ys = data.y_train.repeat(reps)[:size]
        t = compare_rounds({n: _epoch(mlp(norm=n), xs, ys) for n in ("none", "batch")},
                           rounds, min_run_time)
        for n, v in t.items():
            epochs.setdefault(n, {})[str(size)] = v
    return {"step": steps, "epoch": epochs}


def rows(rounds: int = 7, min_run_time: float = 0.2) -> list[Row]:
    seconds, wall = on_one_thread(lambda: measure(rounds, min_run_time))
    path = store("training_cost", {"batch_size": BATCH, "rounds": rounds, "seconds": seconds},
                 wall)
    med = {k: statistics.median(v) for k, v in seconds["step"].items()}
    ep = {n: {s: statistics.median(v) for s, v in d.items()} for n, d in seconds["epoch"].items()}
    out = [Row(f"{a.upper()} training step, BN / no BN (batch {BATCH})", med[f"{a}_batch"],
               med[f"{a}_none"]) for a in BUILD]
    out += [Row(f"MLP epoch of {s} examples, BN / no BN", ep["batch"][str(s)],
                ep["none"][str(s)]) for s in SIZES]
    print(f"stored every round in {path}")
    return out


def main() -> None:
    run_cli("what BN costs in training (1 thread)", [rows])


if __name__ == "__main__":
    main()
