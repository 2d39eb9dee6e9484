"""check_tent_step (notebook 09): one TENT step, entropy minimization at test time.

The learner's ``tent_step(model, x, optimizer)`` updates the model through the optimizer, so the
checker runs it twice (:func:`_tent_outcome`) on a float64 model prepared by
:func:`bncourse.adapt.tent_parameters` with a plain SGD optimizer over BN's affine parameters
(momentum 0, so a missing ``zero_grad`` shows at the second step), and compares the returned
entropies, the type of what was returned, and BN's weight and bias after each step with the same
protocol around :func:`bncourse.adapt.tent_step`. The catalogue's variants are one from-scratch
step, :func:`_tent_variant`, with one bug each.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.adapt import prediction_entropy, tent_parameters, tent_step
from bncourse.checks.engine import SEED, Case, Mistake, _fn_name, check_function, with_solution
from bncourse.nn import is_batchnorm

__all__ = ["check_tent_step"]

_FEATURES, _HIDDEN, _CLASSES, _BATCH, _STEPS, _LR = 5, 6, 4, 12, 2, 1.0
_TENT_OUTPUTS = ("entropy", "returned_type", "weight", "bias")
_TYPES = "0: a Python float; 1: a tensor; 2: None; 3: something else"


def _type_code(returned: Any) -> float:
    """What was returned, as a number: see :data:`_TYPES`."""
    if isinstance(returned, torch.Tensor):
        return 1.0
    if returned is None:
        return 2.0
    return 0.0 if isinstance(returned, numbers.Real) and not isinstance(returned, bool) else 3.0


def _as_float(returned: Any) -> float:
    if isinstance(returned, torch.Tensor):
        returned = returned.detach()
    try:
        return float(returned)
    except (TypeError, ValueError, RuntimeError):   # None, a list, a tensor of several values
        return math.nan


def _tent_outcome(step_fn: Callable[..., Any], model: nn.Module, xs, optimizer) -> tuple:
    """Calls ``step_fn(model, x, optimizer)`` for each test batch ``x`` of ``xs``; returns the
    outputs of :data:`_TENT_OUTPUTS`: per step the returned value as a float (NaN if it is none)
    and its type code, and every BN's weight and bias after the step, (steps, C) each."""
    bns = [m for m in model.modules() if is_batchnorm(m)]
    entropies, types, weights, biases = [], [], [], []
    for x in xs:
        returned = step_fn(model, x, optimizer)
        entropies.append(_as_float(returned))
        types.append(_type_code(returned))
        weights.append(torch.cat([bn.weight.detach().clone() for bn in bns]))
        biases.append(torch.cat([bn.bias.detach().clone() for bn in bns]))
    return np.array(entropies), np.array(types), torch.stack(weights), torch.stack(biases)


def _tent_reference(model, x, optimizer):
    return _tent_outcome(tent_step, model, x, optimizer)


def _entropy_variant(bug: str, logits: torch.Tensor) -> torch.Tensor:
    """The loss of the variant ``bug``: the batch's mean entropy with that mistake in it."""
    if bug == "pseudo_label_ce":
        return F.cross_entropy(logits, logits.argmax(1))
    log_p = F.log_softmax(logits, dim=0 if bug == "softmax_over_batch" else 1)
    log_base = log_p / math.log(2.0) if bug == "bits" else log_p
    per_example = (log_p.exp() * log_base).sum(1) * (1 if bug == "sign_dropped" else -1)
    return per_example.sum() if bug == "summed" else per_example.mean()


def _tent_variant(bug: str) -> Callable[..., Any]:
    """A from-scratch TENT step with the catalogue's mistake ``bug`` in it."""
    def buggy_tent_step(model, x, optimizer):
        loss = _entropy_variant(bug, model(x))
        if bug not in ("no_zero_grad", "step_without_gradients"):
            optimizer.zero_grad()
        loss.backward()
        if bug == "step_without_gradients":
            optimizer.zero_grad()
        optimizer.step()
        if bug == "returns_after_step":
            with torch.no_grad():
                return prediction_entropy(model(x)).item()
        return {"returns_tensor": loss.detach(), "returns_none": None}.get(bug, loss.item())

    buggy_tent_step.__name__ = f"tent_step_{bug}"
    return buggy_tent_step


def _mistake(key: str, diagnosis: str, fix: str) -> Mistake:
    variant = _tent_variant(key)
    return Mistake(key, diagnosis, fix,
                   lambda model, x, optimizer: _tent_outcome(variant, model, x, optimizer))


_ENTROPY = ("the entropy of each prediction is `-(p * log_p).sum(1)` with `log_p = "
            "F.log_softmax(logits, dim=1)` and `p = log_p.exp()`; the loss is its mean over the "
            "batch.")

_TENT_MISTAKES = (
    _mistake("pseudo_label_ce",
             "Your loss is the cross-entropy with the model's own argmax predictions as labels "
             "(pseudo-labels), not the entropy: it only sharpens the top class and ignores the "
             "rest of each predicted distribution.",
             "Use the entropy of the whole softmax: " + _ENTROPY),
    _mistake("summed",
             "The entropy is summed over the batch instead of averaged: the loss, and so the "
             "step size, grows with the batch size.",
             "Take `.mean()` over the batch, not `.sum()`."),
    _mistake("sign_dropped",
             "The minus sign of the entropy is missing: your loss is minus the entropy, so "
             "each step makes the predictions *less* certain.",
             "Entropy is `-(p * log_p).sum(1)`: keep the minus."),
    _mistake("softmax_over_batch",
             "The softmax runs over the batch (dim=0): each class's scores are normalized "
             "across examples, not each example's scores across classes.",
             "`F.log_softmax(logits, dim=1)` (classes are dim 1)."),
    _mistake("bits",
             "The entropy is in bits (log base 2); TENT, and this exercise, use nats (natural "
             "log).",
             "Use `F.log_softmax` or `torch.log`, not `torch.log2`."),
    _mistake("no_zero_grad",
             "The gradients are not zeroed: each step adds its gradient to the previous ones, "
             "so from the second step on the update is wrong.",
             "Call `optimizer.zero_grad()` before `loss.backward()`."),
    _mistake("step_without_gradients",
             "The parameters never move: the optimizer step finds no gradients, because "
             "`zero_grad()` runs between `backward()` and `step()`, or `backward()` is missing.",
             "The order is `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`."),
    _mistake("returns_after_step",
             "You return the entropy after the step (recomputed on the updated model); the "
             "exercise asks for the entropy the step started from.",
             "Return the loss you took the gradient of: `return loss.item()`."),
    _mistake("returns_tensor",
             "The value is right but you return a tensor; the exercise asks for a Python float "
             "(a tensor would also keep its graph, or its device, alive in a list of results).",
             "`return loss.item()`."),
    _mistake("returns_none",
             "Your function takes the step but returns None.",
             "End with `return loss.item()` (the entropy before the step)."),
)


def _tent_case() -> Case:
    """A float64 MLP with BN prepared for TENT, SGD over BN's weight and bias (lr 1.0, momentum
    0), two test batches of 12 from a shifted distribution."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 97)
        model = nn.Sequential(nn.Linear(_FEATURES, _HIDDEN), nn.BatchNorm1d(_HIDDEN), nn.ReLU(),
                              nn.Linear(_HIDDEN, _CLASSES)).double()
    rng = np.random.default_rng(SEED + 98)
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, _HIDDEN)))
        model[1].bias.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, _HIDDEN)))
        model[3].weight.mul_(3.0)                          # confident enough to have a gradient
    optimizer = torch.optim.SGD(tent_parameters(model), lr=_LR, momentum=0.0)
    xs = torch.from_numpy(0.5 + 1.5 * rng.normal(size=(_STEPS, _BATCH, _FEATURES)))
    return Case(f"\"MLP with BatchNorm1d, SGD(lr={_LR:g}) on BN's weight and bias, "
                f"{_STEPS} steps on test batches of {_BATCH}\"", (model, xs, optimizer))


@with_solution(tent_step)
def check_tent_step(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, x, optimizer) -> float``: one TENT step (Wang et al. 2021) on the test
    batch ``x`` of shape (N, features). The loss is the mean over the batch of the entropy, in
    nats, of ``softmax(model(x))`` over the classes; the step zeroes the gradients,
    backpropagates and calls ``optimizer.step()``, and returns the entropy before the step as a
    Python float.

    One float64 case: ``Linear, BatchNorm1d, ReLU, Linear`` prepared by
    :func:`bncourse.adapt.tent_parameters`, ``torch.optim.SGD`` over BN's weight and bias (lr 1,
    momentum 0), two calls on two (12, 5) batches; compared after each call: the returned value,
    its type, BN's weight and bias. On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (pseudo-label cross-entropy, a sum over the batch, the
            sign, softmax over the batch, no ``zero_grad``, the entropy after the step, a
            tensor instead of a float, ...).
    """
    def run(model, x, optimizer):
        return _tent_outcome(fn, model, x, optimizer)

    run.__name__ = _fn_name(fn)
    check_function(
        run, _tent_reference, [_tent_case()], _TENT_MISTAKES, name="check_tent_step",
        outputs=_TENT_OUTPUTS,
        advice=f"check your loss on its own first: uniform logits (all zeros, K classes) give "
               f"log(K), one-hot-like logits give about 0. `returned_type` codes: {_TYPES}.",
    )
