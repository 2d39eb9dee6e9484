"""check_cumulative_running_mean (notebook 02): the running mean when ``momentum=None``.

The oracle is the package's module, :class:`bncourse.nn.BatchNorm` with ``momentum=None``, in
float64: its buffers are set to the exercise's inputs and it is run on one batch built to have
exactly the given batch mean; what it leaves in ``running_mean`` and ``num_batches_tracked`` is
the expected answer. The catalogue's variants blend with the wrong weight (:func:`_blend`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution

__all__ = ["check_cumulative_running_mean"]


def _cumulative_reference(running_mean, batch_mean, num_batches_tracked):
    import torch

    from bncourse.nn import BatchNorm

    c = len(batch_mean)
    bn = BatchNorm(c, momentum=None, dtype=torch.float64)
    with torch.no_grad():
        bn.running_mean.copy_(torch.as_tensor(running_mean))
        bn.num_batches_tracked.fill_(int(num_batches_tracked))
    mean = torch.as_tensor(np.asarray(batch_mean, dtype=np.float64))
    x = torch.stack([mean - 1.0, mean + 1.0])           # (2, C): its batch mean is batch_mean
    with torch.no_grad():
        bn.train()(x)
    return bn.running_mean.numpy().copy(), int(bn.num_batches_tracked)


def _blend(weight_of_batch, *, new_count=lambda n: n + 1, reversed_weights=False):
    """An update blending in the batch with weight ``weight_of_batch(n)``, n the old count."""
    def update(running_mean, batch_mean, num_batches_tracked):
        n = int(num_batches_tracked)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = weight_of_batch(n)
        old, new = (w, 1 - w) if reversed_weights else (1 - w, w)
        with np.errstate(invalid="ignore"):
            return old * np.asarray(running_mean) + new * np.asarray(batch_mean), new_count(n)
    return update


def _inv(k):
    return np.inf if k == 0 else 1.0 / k


_RULE = ("count the batch first, n = num_batches_tracked + 1, then "
         "new_mean = (1 - 1/n) * running_mean + (1/n) * batch_mean")
_FIX = "C" + _RULE[1:] + "."

_CUMULATIVE_MISTAKES = (
    Mistake("old_count",
            "The weight is 1 / (the count before this batch): PyTorch increments "
            "num_batches_tracked first and then blends with 1 / the new count. With the old "
            "count the first batch divides by zero, and every later one is over-weighted.",
            _FIX,
            _blend(lambda n: _inv(n))),
    Mistake("counted_twice",
            "The weight is 1 / (count + 2): the batch is counted twice (once before the blend "
            "and once in it), so each new batch weighs too little.",
            _FIX,
            _blend(lambda n: 1.0 / (n + 2))),
    Mistake("ema_default",
            "The batch gets the default momentum 0.1, an exponential moving average. "
            "momentum=None asks for the cumulative average: the n-th batch weighs 1/n, so "
            "that every batch so far counts equally.",
            _FIX,
            _blend(lambda n: 0.1)),
    Mistake("weights_reversed",
            "The weights are reversed: the old running mean gets 1/n and the new batch the "
            "rest, so the latest batch dominates.",
            _FIX,
            _blend(lambda n: 1.0 / (n + 1), reversed_weights=True)),
    Mistake("mean_of_two",
            "The running mean and the batch mean are averaged with equal weights: the running "
            "mean stands for n - 1 earlier batches and must weigh n - 1 times as much.",
            _FIX,
            _blend(lambda n: 0.5)),
    Mistake("assigned_batch",
            "The batch mean replaces the running mean: right for the very first batch only; "
            "later the running mean must remember the earlier batches.",
            _FIX,
            _blend(lambda n: 1.0)),
    Mistake("count_not_incremented",
            "The returned count is the old one: this batch must be counted "
            "(num_batches_tracked + 1).",
            "return new_mean, num_batches_tracked + 1.",
            _blend(lambda n: 1.0 / (n + 1), new_count=lambda n: n)),
)


def _cumulative_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 11)
    cases = []
    for c, count in [(4, 3), (5, 0), (3, 1), (6, 41)]:
        # the count as a numpy integer, so that 1 / 0 (the old-count mistake on a fresh
        # module) gives inf, which the catalogue can name, instead of a ZeroDivisionError
        args = (rng.uniform(-2, 2, c), rng.uniform(-5, 5, c), np.int64(count))
        cases.append(Case(f"\"C={c}, num_batches_tracked={count}\"", args))
    return cases


@with_solution(_cumulative_reference)
def check_cumulative_running_mean(fn: Callable[..., Any]) -> None:
    """Check ``fn(running_mean, batch_mean, num_batches_tracked) -> (new_mean, new_count)``:
    PyTorch's running-mean update when ``momentum=None`` (a cumulative average).

    ``running_mean`` and ``batch_mean`` are (C,) float64 arrays; ``num_batches_tracked`` is the
    buffer's value *before* this batch, an integer (a numpy int64). PyTorch counts the batch
    first, then blends with weight 1 over the new count::

        new_count = num_batches_tracked + 1
        new_mean  = (1 - 1 / new_count) * running_mean + (1 / new_count) * batch_mean

    so after n batches from a fresh module the running mean is the plain average of the n
    batch means. Updating ``running_mean`` in place as well is allowed, but the pair must be
    returned. Four cases, counts 0, 1, 3 and 41. On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _cumulative_reference, _cumulative_cases(), _CUMULATIVE_MISTAKES,
        name="check_cumulative_running_mean", outputs=("new_mean", "new_count"),
        mutable=("running_mean",),
        advice=_RULE + ".",
    )
