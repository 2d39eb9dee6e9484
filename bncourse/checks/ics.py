"""check_ics_measure (notebook 03): the gradient-change measure of internal covariate shift.

No batch norm is computed here: the reference is the distance and cosine between two
gradients, flattened and concatenated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution

__all__ = ["check_ics_measure"]


def _flat(grads):
    return np.concatenate([np.ravel(g) for g in grads])


def _ics_reference(grads_before, grads_after):
    a, b = _flat(grads_before), _flat(grads_after)
    return np.linalg.norm(a - b), a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def _per_tensor(fn):
    """A measure built per tensor: fn maps the list of per-tensor (a, b) pairs to (l2, cos)."""
    def measure(grads_before, grads_after):
        return fn([(np.ravel(a), np.ravel(b))
                   for a, b in zip(grads_before, grads_after, strict=True)])
    return measure


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


_ICS_MISTAKES = (
    Mistake("squared_l2",
            "`l2` is the squared distance: the square root is missing.",
            "l2 = np.sqrt(np.sum((a - b) ** 2)), or np.linalg.norm(a - b).",
            lambda gb, ga: (np.sum((_flat(gb) - _flat(ga)) ** 2), _ics_reference(gb, ga)[1])),
    Mistake("norm_difference",
            "`l2` is the difference of the two norms, | ||a|| - ||b|| |: two gradients of equal "
            "length pointing different ways would count as unchanged.",
            "Take the norm of the difference, np.linalg.norm(a - b).",
            lambda gb, ga: (abs(np.linalg.norm(_flat(gb)) - np.linalg.norm(_flat(ga))),
                            _ics_reference(gb, ga)[1])),
    Mistake("per_tensor_l2",
            "`l2` adds up the distances of each tensor (weight, bias) separately; the distance "
            "of the whole gradient is the root of the summed squares.",
            "Flatten and concatenate all tensors into one vector first.",
            _per_tensor(lambda pairs: (sum(np.linalg.norm(a - b) for a, b in pairs),
                                       _cos(np.concatenate([a for a, _ in pairs]),
                                            np.concatenate([b for _, b in pairs]))))),
    Mistake("per_tensor_cosine",
            "`cosine` averages the cosines of each tensor (weight, bias) separately; the "
            "cosine of the whole gradient is taken over one concatenated vector.",
            "Flatten and concatenate all tensors into one vector first.",
            _per_tensor(lambda pairs: (np.linalg.norm(np.concatenate([a - b for a, b in pairs])),
                                       np.mean([_cos(a, b) for a, b in pairs])))),
    Mistake("unnormalized_cosine",
            "`cosine` is the plain dot product a . b, not divided by the norms.",
            "cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b)).",
            lambda gb, ga: (_ics_reference(gb, ga)[0], _flat(gb) @ _flat(ga))),
    Mistake("cosine_distance",
            "`cosine` is the cosine distance 1 - cos; the exercise asks for the similarity.",
            "Return a @ b / (||a|| ||b||) itself.",
            lambda gb, ga: (_ics_reference(gb, ga)[0], 1 - _ics_reference(gb, ga)[1])),
    Mistake("first_tensor_only",
            "Only the first tensor (the weight) is used; the bias gradient is left out.",
            "Flatten and concatenate every tensor of the list.",
            lambda gb, ga: _ics_reference(gb[:1], ga[:1])),
    Mistake("outputs_swapped",
            "The two results are returned in the wrong order.",
            "return l2, cosine.",
            lambda gb, ga: _ics_reference(gb, ga)[::-1]),
)


def _ics_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 3)
    cases = []
    for out_f, in_f, noise in [(4, 3, 0.3), (6, 5, 1.0), (3, 2, 2.0)]:
        before = [rng.normal(size=(out_f, in_f)), rng.normal(size=out_f) * 3]
        after = [g + noise * rng.normal(size=g.shape) for g in before]
        after[1] = -0.5 * after[1]  # the bias turns around: per-tensor and global cosines differ
        cases.append(Case(f"\"weight {out_f}x{in_f} and bias, noise {noise}\"", (before, after)))
    return cases


@with_solution(_ics_reference)
def check_ics_measure(fn: Callable[..., Any]) -> None:
    """Check the gradient-change measure of internal covariate shift (Santurkar et al. 2018).

    ``fn(grads_before, grads_after)`` takes two lists of numpy arrays (a layer's gradient, one
    array per parameter, before and after the earlier layers' update) and must return
    ``(l2, cosine)`` of the two gradients flattened and concatenated into vectors a and b::

        l2     = ||a - b||_2
        cosine = a . b / (||a||_2 ||b||_2)

    Three cases, each a weight and a bias whose gradient turns around, so that per-tensor
    shortcuts give different numbers.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _ics_reference, _ics_cases(), _ICS_MISTAKES,
        name="check_ics_measure", outputs=("l2", "cosine"),
        advice="Flatten each list into one vector (np.concatenate of np.ravel), then "
               "l2 = np.linalg.norm(a - b) and cosine = a @ b / (norm(a) * norm(b)).",
    )
