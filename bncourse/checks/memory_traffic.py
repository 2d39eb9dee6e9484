"""check_bn_bytes (notebook 06): the bytes a BN layer moves through memory, by stage.

The package has no byte-count function to reuse, so the reference is written here from the
access model notebook 06 states (§3.3, and the exercise's table), one line per tensor read or
written. A memory-bound kernel's time is these bytes over the memory bandwidth: the ratio of two
stages' bytes is the ratio of their times that the notebook's benchmark compares with.

The model, for an input of shape (N, C, *spatial) with ``itemsize`` bytes per value, a "pass"
being one read or one write of a whole (N, C, *spatial) tensor and a "vector" one read or write
of a (C,) per-channel array:

* training forward: read x for the statistics; read x again and write y to normalize (3
  passes); read gamma and beta, write the batch mean and inverse standard deviation (kept for the
  backward pass), read and write the running mean and the running variance (8 vectors);
* training backward: read dy and x for the per-channel sums; read dy and x again and write dx (5
  passes); read gamma, the batch mean and the inverse standard deviation, write dgamma and dbeta
  (5 vectors);
* eval forward: read x, write y (2 passes); read gamma, beta, the running mean and the running
  variance (4 vectors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bncourse.checks.engine import Case, Mistake, check_function, with_solution

__all__ = ["check_bn_bytes"]

#: (passes over the activation tensor, per-channel vectors) of each stage, in the module's model.
_STAGES = {"train_forward": (3, 8), "train_backward": (5, 5), "eval_forward": (2, 4)}


def _traffic(shape, itemsize, stages=_STAGES, *, channels=None, vector=None, bytes_per=None):
    """Bytes of each stage for ``stages`` = {stage: (passes, vectors)}; keywords swap in a bug:
    ``channels(shape)``, ``vector(numel, c)`` (values per vector), ``bytes_per(itemsize)``."""
    numel = math.prod(shape)
    c = shape[1] if channels is None else channels(shape)
    per_vector = c if vector is None else vector(numel, c)
    size = itemsize if bytes_per is None else bytes_per(itemsize)
    return tuple(size * (passes * numel + vectors * per_vector)
                 for passes, vectors in stages.values())


def _bytes_reference(shape, itemsize=4):
    """Bytes moved by one BN layer: ``(train_forward, train_backward, eval_forward)``.

    Args:
        shape: the input's shape (N, C, *spatial); channels on axis 1.
        itemsize: bytes per value (4 for float32).

    Returns:
        With ``T = prod(shape) * itemsize`` and ``P = C * itemsize``: ``(3 T + 8 P, 5 T + 5 P,
        2 T + 4 P)``, the module docstring's model.
    """
    return _traffic(shape, itemsize)


def _stages_with(**changed):
    return {**_STAGES, **changed}


def _variant(stages=_STAGES, **bug):
    def fn(shape, itemsize=4):
        return _traffic(shape, itemsize, stages, **bug)
    return fn


_BYTES_MISTAKES = (
    Mistake("elements_not_bytes",
            "Your counts are numbers of values, not bytes: itemsize is missing.",
            "multiply every count of values by itemsize (4 for float32).",
            _variant(bytes_per=lambda itemsize: 1)),
    Mistake("vectors_full_size",
            "You count each per-channel vector (gamma, beta, the statistics) as large as the "
            "activation tensor; it holds C values, one per channel.",
            "a per-channel vector is C * itemsize bytes, C = shape[1].",
            _variant(vector=lambda numel, c: numel)),
    Mistake("forgot_vectors",
            "You left out the per-channel vectors (gamma, beta, the batch and running "
            "statistics, dgamma, dbeta). They are small next to the activations, but the model "
            "counts every read and write.",
            "add C * itemsize bytes per vector read or written: 8 in the training forward, 5 in "
            "the backward, 4 in the eval forward.",
            _variant(_stages_with(train_forward=(3, 0), train_backward=(5, 0),
                                  eval_forward=(2, 0)))),
    Mistake("channels_last",
            "You took the channels from the last axis, shape[-1]. BN's channels are axis 1 of "
            "(N, C, *spatial), as in PyTorch.",
            "C = shape[1].",
            _variant(channels=lambda shape: shape[-1])),
    Mistake("forgot_statistics_pass",
            "Your training forward reads x once. It reads x twice: once for the batch mean and "
            "variance, once more to normalize; the statistics are known only after the first "
            "pass.",
            "training forward: 3 passes (read x, read x, write y).",
            _variant(_stages_with(train_forward=(2, 8)))),
    Mistake("forgot_running_update",
            "Your training forward leaves out the update of the running mean and variance: each "
            "is read and written once per step.",
            "training forward: 8 vectors (gamma, beta read; mean, inverse std written; running "
            "mean and variance read and written).",
            _variant(_stages_with(train_forward=(3, 4)))),
    Mistake("backward_one_pass",
            "Your backward reads dy and x only once. The per-channel sums (of dy and of dy times "
            "the normalized x) are needed before dx can be computed, so dy and x are read "
            "twice: once for the sums, once to write dx.",
            "training backward: 5 passes (read dy, x; read dy, x; write dx).",
            _variant(_stages_with(train_backward=(3, 5)))),
    Mistake("eval_computes_statistics",
            "Your eval forward has a statistics pass. In eval mode the statistics are the fixed "
            "running ones: one read of x and one write of y.",
            "eval forward: 2 passes and 4 vectors (gamma, beta, running mean, running variance).",
            _variant(_stages_with(eval_forward=(3, 4)))),
)


def _bytes_cases() -> list[Case]:
    """A Linear layer's (N, C) output, a 1-D CNN's (N, C, L) and the benchmark's 2-D (N, C, H,
    W) activation; C differs from every other axis (so the channel axis is identifiable) and
    three item sizes (so a missing itemsize shows)."""
    return [
        Case("shape=(64, 100), itemsize=4 (float32)", ((64, 100),), {"itemsize": 4}),
        Case("shape=(64, 32, 20), itemsize=2 (float16)", ((64, 32, 20),), {"itemsize": 2}),
        Case("shape=(32, 64, 32, 32), itemsize=4 (float32)", ((32, 64, 32, 32),),
             {"itemsize": 4}),
        Case("shape=(8, 3, 5), itemsize=8 (float64)", ((8, 3, 5),), {"itemsize": 8}),
    ]


@with_solution(_bytes_reference)
def check_bn_bytes(fn: Callable[..., Any]) -> None:
    """Check ``fn(shape, itemsize=4)``: the bytes one BN layer moves through memory on an input
    of ``shape`` (N, C, *spatial), returned as ``(train_forward, train_backward, eval_forward)``.

    The model (this module's docstring): with ``T = prod(shape) * itemsize`` and ``P = C *
    itemsize``, ``train_forward = 3 T + 8 P``, ``train_backward = 5 T + 5 P``, ``eval_forward =
    2 T + 4 P``. Exact integer counts on four shapes and three item sizes.

    Raises:
        ExerciseError: naming the mistake (values instead of bytes, per-channel vectors as large
            as the activations or left out, channels on the last axis, a missing statistics
            pass or running-statistics update, a one-pass backward, statistics in eval mode).
    """
    check_function(
        fn, _bytes_reference, _bytes_cases(), _BYTES_MISTAKES,
        name="check_bn_bytes", outputs=("train_forward", "train_backward", "eval_forward"),
        rtol=0.0, atol=0.5,
        advice="go through the table line by line: every read or write of an (N, C, ...) tensor "
               "is prod(shape) values, every read or write of a per-channel vector is C values "
               "(C = shape[1]); multiply the values by itemsize.",
    )
