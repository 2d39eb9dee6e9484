"""check_running_update (notebook 01): PyTorch's update of the running statistics.

The oracle is :func:`bncourse.functional.batchnorm_forward`, which updates the running arrays in
training. The catalogue's variants are blends with the wrong weights or variance correction
(:func:`_blend`): they are the mistakes, not a second reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import batchnorm_forward

__all__ = ["check_running_update"]


def _running_reference(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
    # The exercise takes the batch's statistics, while batchnorm_forward updates the running
    # arrays from a batch: run it on m values per channel built to have exactly these
    # statistics (to rounding), batch_mean + sqrt(batch_var_biased) * z with z standardized.
    z = np.linspace(-1.0, 1.0, m)
    z = (z - z.mean()) / z.std()
    x = batch_mean + np.sqrt(batch_var_biased) * z[:, None]  # (m, C)
    new_mean = np.array(running_mean, dtype=np.float64)  # copies: updated in place below
    new_var = np.array(running_var, dtype=np.float64)
    batchnorm_forward(x, None, None, training=True, running_mean=new_mean, running_var=new_var,
                      momentum=momentum)
    return new_mean, new_var


def _blend(old_weight, correction):
    """A running update weighting the old value by ``old_weight(momentum)``."""
    def update(running_mean, running_var, batch_mean, batch_var_biased, m, momentum):
        w = old_weight(momentum)
        return (w * running_mean + (1 - w) * batch_mean,
                w * running_var + (1 - w) * batch_var_biased * correction(m))
    return update


_UNBIASED = "the unbiased batch variance batch_var_biased * m / (m - 1)"
_PYTORCH_RULE = ("new = (1 - momentum) * old + momentum * batch, with " + _UNBIASED
                 + " for the variance")

_RUNNING_MISTAKES = (
    Mistake("not_updated",
            "The running statistics are not updated: you return the old values.",
            _PYTORCH_RULE + ".",
            lambda rm, rv, bm, bv, m, momentum: (rm, rv)),
    Mistake("momentum_reversed",
            "The momentum convention is reversed: you weight the old value by momentum, as "
            "CS231n and Keras do. In PyTorch momentum is the weight of the new batch.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: mom, lambda m: m / (m - 1))),
    Mistake("cs231n_convention",
            "This is the CS231n convention: momentum weights the old value, and the biased "
            "batch variance is stored. PyTorch does neither.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: mom, lambda m: 1.0)),
    Mistake("biased_variance",
            "The biased batch variance is stored. PyTorch stores the unbiased one in "
            "running_var (it estimates the population variance).",
            "Blend in " + _UNBIASED + ".",
            _blend(lambda mom: 1 - mom, lambda m: 1.0)),
    Mistake("correction_inverted",
            "The variance correction is upside down: (m - 1) / m instead of m / (m - 1).",
            "Blend in " + _UNBIASED + ".",
            _blend(lambda mom: 1 - mom, lambda m: (m - 1) / m)),
    Mistake("assigned_batch",
            "The batch statistics are assigned instead of blended in: the running averages "
            "forget every earlier batch.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: 0.0, lambda m: m / (m - 1))),
    Mistake("assigned_batch_biased",
            "The batch statistics are assigned instead of blended in, and the variance is the "
            "biased one.",
            _PYTORCH_RULE + ".",
            _blend(lambda mom: 0.0, lambda m: 1.0)),
    Mistake("outputs_swapped",
            "The two results are returned in the wrong order.",
            "return new_mean, new_var.",
            lambda rm, rv, bm, bv, m, momentum: _running_reference(rm, rv, bm, bv, m,
                                                                   momentum)[::-1]),
)


def _running_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 2)
    cases = []
    for c, m, momentum in [(5, 16, 0.1), (3, 2, 0.3), (4, 50, 0.05), (6, 7, 0.9)]:
        args = (rng.uniform(-1, 1, c), rng.uniform(0.5, 2.0, c), rng.uniform(-3, 3, c),
                rng.uniform(0.1, 5.0, c), m, momentum)
        cases.append(Case(f"\"C={c}, m={m}, momentum={momentum}\"", args))
    return cases


@with_solution(_running_reference)
def check_running_update(fn: Callable[..., Any]) -> None:
    """Check a running-statistics update against PyTorch's rule.

    ``fn(running_mean, running_var, batch_mean, batch_var_biased, m, momentum)`` must return
    ``(new_mean, new_var)``, each (C,)::

        new_mean = (1 - momentum) * running_mean + momentum * batch_mean
        new_var  = (1 - momentum) * running_var  + momentum * batch_var_biased * m / (m - 1)

    Updating ``running_mean`` and ``running_var`` in place as well is allowed (PyTorch does so
    with its buffers), but the pair must be returned: a function returning ``None`` fails with
    "return new_mean, new_var". Four cases with m from 2 to 50 and momentum from 0.05 to 0.9.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _running_reference, _running_cases(), _RUNNING_MISTAKES,
        name="check_running_update", outputs=("new_mean", "new_var"),
        mutable=("running_mean", "running_var"),
        advice=_PYTORCH_RULE + ".",
    )
