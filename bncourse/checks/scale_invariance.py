"""check_direction_step (notebook 04): one SGD step with weight decay on weights in front of BN.

BN normalizes each output unit on its own, so each row ``w`` of a Linear weight in front of it is
scale-invariant: the loss depends only on the direction ``u = w / ||w||``, and the gradient at
``c w`` is the gradient at ``w`` divided by ``c``. One SGD step with weight decay ``lam``,
``w' = (1 - lr lam) w - lr g``, then moves the direction exactly as a step of rate
``lr / ((1 - lr lam) ||w||^2)`` on ``u`` with the gradient at ``u`` (``||w|| g``) would, before
renormalization: the effective learning rate (van Laarhoven 2017). Nothing in the package
computes it, so the reference is these lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, _fn_name, check_function, with_solution

__all__ = ["check_direction_step"]


def _row_norms(a):
    return np.linalg.norm(a, axis=1)


def _angle(a, b):
    """Angle per row between a and b (radians), from atan2(|a x b|, a . b): accurate for small
    angles too."""
    dot = (a * b).sum(axis=1)
    cross = np.sqrt(np.maximum((_row_norms(a) * _row_norms(b)) ** 2 - dot**2, 0.0))
    return np.arctan2(cross, dot)


def _spread(value, rows):
    """A single number as a (rows,) array; anything else unchanged."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value
    return np.full(rows, float(arr)) if arr.ndim == 0 and value is not None else value


def _direction_reference(weight, grad, lr, weight_decay=0.0):
    new_weight = weight - lr * (grad + weight_decay * weight)
    angle = _angle(weight, new_weight)
    effective_lr = lr / ((1 - lr * weight_decay) * _row_norms(weight) ** 2)
    return new_weight, angle, effective_lr


def _variant(*, step=None, angle=None, eff=None):
    """The reference with the given (buggy) new weight, angle or effective rate, each a function
    of (weight, grad, lr, weight_decay, new_weight)."""
    def fn(weight, grad, lr, weight_decay=0.0):
        new_weight = (weight - lr * (grad + weight_decay * weight) if step is None
                      else step(weight, grad, lr, weight_decay))
        args = (weight, grad, lr, weight_decay, new_weight)
        return (new_weight,
                _angle(weight, new_weight) if angle is None else angle(*args),
                (lr / ((1 - lr * weight_decay) * _row_norms(weight) ** 2) if eff is None
                 else eff(*args)))
    return fn


_DIRECTION_MISTAKES = (
    Mistake("decay_not_times_lr",
            "The weight decay term is not multiplied by the learning rate: w - lr * g - lam * w. "
            "SGD with weight decay steps along the gradient of L + lam/2 ||w||^2, all of it "
            "scaled by lr.",
            "new_weight = weight - lr * (grad + weight_decay * weight).",
            _variant(step=lambda w, g, lr, lam: w - lr * g - lam * w)),
    Mistake("decay_sign",
            "Weight decay grows the weight (+ lr * lam * w); it shrinks it.",
            "new_weight = weight - lr * (grad + weight_decay * weight).",
            _variant(step=lambda w, g, lr, lam: w - lr * g + lr * lam * w)),
    Mistake("no_decay_step",
            "The step leaves weight decay out: w - lr * g.",
            "new_weight = weight - lr * (grad + weight_decay * weight).",
            _variant(step=lambda w, g, lr, lam: w - lr * g)),
    Mistake("angle_degrees",
            "The angle is in degrees; the exercise asks for radians.",
            "Drop np.degrees (np.arccos and np.arctan2 return radians).",
            _variant(angle=lambda w, g, lr, lam, nw: np.degrees(_angle(w, nw)))),
    Mistake("angle_whole_matrix",
            "The angle is the one between the whole matrices, one number for all rows. Each row "
            "feeds its own BN unit and turns by its own angle.",
            "Compute the dot products and norms row by row (axis=1).",
            _variant(angle=lambda w, g, lr, lam, nw: np.full(
                w.shape[0], np.arccos(np.clip((w * nw).sum() / (np.linalg.norm(w)
                                                                * np.linalg.norm(nw)), -1, 1))))),
    Mistake("angle_first_order",
            "The angle is the first-order estimate lr ||g|| / ||w||. That is only the start of "
            "a Taylor series (and it leaves out the weight decay's shrinking of w); the exercise "
            "asks for the angle between the rows of weight and new_weight themselves.",
            "angle = arccos(w . w' / (||w|| ||w'||)) per row (np.clip the cosine to [-1, 1]).",
            _variant(angle=lambda w, g, lr, lam, nw: lr * _row_norms(g) / _row_norms(w))),
    Mistake("eff_not_squared",
            "The effective learning rate divides by ||w||, not ||w||^2. The norm enters twice: "
            "the gradient at w is the gradient at the direction divided by ||w||, and a step of "
            "a given length turns a longer w by a smaller angle, again 1 / ||w||.",
            "Divide by the squared row norm.",
            _variant(eff=lambda w, g, lr, lam, nw: lr / ((1 - lr * lam) * _row_norms(w)))),
    Mistake("eff_inverted",
            "The effective learning rate grows with ||w||: lr * ||w||^2. A longer w turns "
            "*slower*, so the rate is divided by ||w||^2.",
            "Divide by the squared row norm.",
            _variant(eff=lambda w, g, lr, lam, nw: lr * _row_norms(w) ** 2 / (1 - lr * lam))),
    Mistake("eff_ignores_decay",
            "The effective learning rate is lr / ||w||^2 without the weight decay's factor. "
            "That is the rate to first order; exactly, the decay shrinks w to (1 - lr lam) w "
            "first, so the gradient step is relatively larger by 1 / (1 - lr lam).",
            "effective_lr = lr / ((1 - lr * weight_decay) * ||w||^2), per row.",
            _variant(eff=lambda w, g, lr, lam, nw: lr / _row_norms(w) ** 2)),
    Mistake("eff_decay_sign",
            "The weight decay's factor is (1 + lr lam); the decay shrinks w by (1 - lr lam).",
            "effective_lr = lr / ((1 - lr * weight_decay) * ||w||^2), per row.",
            _variant(eff=lambda w, g, lr, lam, nw: lr / ((1 + lr * lam) * _row_norms(w) ** 2))),
    Mistake("eff_new_norm",
            "The effective learning rate uses the norm after the step, ||w'||. The step is taken "
            "at w, with the gradient at w, so its size is set by ||w||.",
            "Use the rows of `weight`, not of `new_weight`.",
            _variant(eff=lambda w, g, lr, lam, nw: lr / ((1 - lr * lam) * _row_norms(nw) ** 2))),
    Mistake("eff_whole_matrix",
            "The effective learning rate uses the norm of the whole matrix. Each row is "
            "scale-invariant on its own (BN normalizes each unit separately), so each has its "
            "own rate, from its own norm.",
            "Use np.linalg.norm(weight, axis=1) ** 2.",
            _variant(eff=lambda w, g, lr, lam, nw: np.full(
                w.shape[0], lr / ((1 - lr * lam) * np.linalg.norm(w) ** 2)))),
)


def _direction_cases() -> list[Case]:
    """Rows of very different norms (0.3 to 4); each gradient row orthogonal to its weight row,
    as scale invariance makes it, and scaled like 1 / ||w||; angles from about 0.01 to 0.8 rad,
    so a first-order angle is visibly off."""
    rng = np.random.default_rng(SEED + 41)
    cases = []
    for norms, lr, wd in [((0.3, 1.0, 2.0, 4.0), 0.1, 0.0), ((0.5, 1.5, 3.0), 0.2, 0.05),
                          ((0.4, 0.8, 1.2, 2.5, 3.5), 0.5, 0.1)]:
        c_out, c_in = len(norms), 6
        w = rng.normal(size=(c_out, c_in))
        w *= (np.array(norms) / _row_norms(w))[:, None]
        g = rng.normal(size=(c_out, c_in))
        g -= ((g * w).sum(1) / (w * w).sum(1))[:, None] * w          # orthogonal to its row
        g *= (rng.uniform(0.3, 1.0, c_out) / np.array(norms) / _row_norms(g))[:, None]
        cases.append(Case(f"\"weight ({c_out}, {c_in}), lr={lr:g}, weight_decay={wd:g}\"",
                          (w, g, lr), {"weight_decay": wd}))
    return cases


@with_solution(_direction_reference)
def check_direction_step(fn: Callable[..., Any]) -> None:
    """Check ``fn(weight, grad, lr, weight_decay=0.0) -> (new_weight, angle, effective_lr)``: one
    SGD step with weight decay on the (C_out, C_in) weight of a Linear layer followed by BN,
    whose rows are therefore scale-invariant (each ``grad`` row is orthogonal to its ``weight``
    row)::

        new_weight   = weight - lr * (grad + weight_decay * weight)
        angle        = angle between weight[i] and new_weight[i], radians      # (C_out,)
        effective_lr = lr / ((1 - lr * weight_decay) * ||weight[i]||^2)        # (C_out,)

    the effective rate being the one at which a plain step on the direction
    ``u = w / ||w||``, with the gradient at ``u``, points where the new row points.
    Three float64 cases, rows of norms 0.3 to 4. On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (decay not scaled by lr, angle in degrees or of the
            whole matrix, ||w|| not squared, the decay's factor left out, ...).
    """
    def per_row(weight, grad, lr, weight_decay=0.0):
        # one number for the whole matrix is a known mistake: spread it over the rows
        out = fn(weight, grad, lr, weight_decay)
        if isinstance(out, tuple) and len(out) == 3:
            return (out[0], *(_spread(v, weight.shape[0]) for v in out[1:]))
        return out

    per_row.__name__ = _fn_name(fn)
    check_function(
        per_row, _direction_reference, _direction_cases(), _DIRECTION_MISTAKES,
        name="check_direction_step", outputs=("new_weight", "angle", "effective_lr"),
        advice="work row by row: the angle from the cosine of weight[i] and new_weight[i], the "
               "effective rate from what the step does to the direction weight[i] / ||weight[i]||.",
    )
