"""check_freeze_bn (notebook 09): freezing every BN layer of a model for fine-tuning.

Freezing is judged by what happens next: :func:`_freeze_outcome` calls the learner's
``freeze_bn(model)`` on a fresh float64 model in training mode, then fine-tunes the model as left
for a few SGD steps on the parameters that still require gradients (dropout seeded), and reports
as 0/1 flags which BN layers are in training mode, which BN statistics and affine parameters
moved, which other parameters learned, and whether dropout is still on. The reference is the same
protocol around :func:`bncourse.adapt.freeze_bn`; the catalogue's variants are one from-scratch
``freeze_bn``, :func:`_freeze_variant`, with one bug each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.adapt import freeze_bn
from bncourse.checks.engine import SEED, Case, Mistake, _fn_name, check_function, with_solution
from bncourse.nn import BatchNorm, is_batchnorm

__all__ = ["check_freeze_bn"]

_FREEZE_OUTPUTS = ("bn_training", "bn_statistics_moved", "bn_affine_moved",
                   "other_parameters_moved", "dropout_training", "returned")
_STEPS, _BATCH, _CLASSES, _LR = 3, 6, 3, 0.1


def _moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    return float(any(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True)))


def _fine_tuning_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of (6, 2, 4, 4) float64 images and (6,) labels, shifted from N(0, 1)."""
    rng = np.random.default_rng(SEED + 96)
    return [(torch.from_numpy(1.0 + 2.0 * rng.normal(size=(_BATCH, 2, 4, 4))),
             torch.from_numpy(rng.integers(0, _CLASSES, _BATCH)))
            for _ in range(_STEPS)]


def _fine_tune(model: nn.Module) -> None:
    """A few SGD steps on the parameters that require gradients, in the modes ``model`` is in
    (forward passes only when nothing is trainable)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=_LR) if trainable else None
    for x, y in _fine_tuning_batches():
        loss = F.cross_entropy(model(x), y)
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def _freeze_outcome(freeze_fn: Callable[..., Any], model: nn.Module) -> tuple:
    """Calls ``freeze_fn(model)``, fine-tunes the model as left (:func:`_fine_tune`, dropout
    seeded) and returns the outputs of :data:`_FREEZE_OUTPUTS`: per BN layer (in
    ``model.modules()`` order) its training flag after the call, whether its running statistics
    moved and whether its weight and bias moved, (num_bn, 2); whether each other parameter
    learned; the dropout layer's training flag; the code of the returned value
    (0: ``model``, 1: None, 2: another object)."""
    bns = [m for m in model.modules() if is_batchnorm(m)]
    others = [p for m in model.modules() if not is_batchnorm(m)
              for p in m.parameters(recurse=False)]
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        returned = freeze_fn(model)
        bn_training = [float(bn.training) for bn in bns]
        statistics = [[bn.running_mean.clone(), bn.running_var.clone()] for bn in bns]
        affine = [[bn.weight.detach().clone(), bn.bias.detach().clone()] for bn in bns]
        weights = [p.detach().clone() for p in others]
        _fine_tune(model)
    return (np.array(bn_training),
            np.array([_moved(s, [bn.running_mean, bn.running_var])
                      for s, bn in zip(statistics, bns, strict=True)]),
            np.array([[_moved([w], [bn.weight]), _moved([b], [bn.bias])]
                      for (w, b), bn in zip(affine, bns, strict=True)]),
            np.array([_moved([w], [p]) for w, p in zip(weights, others, strict=True)]),
            np.array(float(dropout.training)),
            np.array(0.0 if returned is model else 1.0 if returned is None else 2.0))


def _freeze_reference(model):
    return _freeze_outcome(freeze_bn, model)


def _freeze_variant(bug: str) -> Callable[..., Any]:
    """A from-scratch ``freeze_bn`` with the catalogue's mistake ``bug`` in it."""
    def buggy_freeze_bn(model):
        candidates = model.children() if bug == "children_only" else model.modules()
        kind = {"bn1d_only": nn.BatchNorm1d,
                "torch_bn_only": nn.modules.batchnorm._BatchNorm}.get(bug)
        bns = [m for m in candidates if (isinstance(m, kind) if kind else is_batchnorm(m))]
        if bug == "whole_model_eval":
            model.eval()
        if bug == "all_parameters_frozen":
            model.requires_grad_(False)
        for bn in bns:
            if bug != "requires_grad_only":
                bn.eval()
            if bug != "eval_only":
                bn.weight.requires_grad_(False)
                if bug != "bias_not_frozen":
                    bn.bias.requires_grad_(False)
        return None if bug == "returns_none" else model

    buggy_freeze_bn.__name__ = f"freeze_bn_{bug}"
    return buggy_freeze_bn


def _mistake(key: str, diagnosis: str, fix: str) -> Mistake:
    variant = _freeze_variant(key)
    return Mistake(key, diagnosis, fix, lambda model: _freeze_outcome(variant, model))


_FIND_EVERY_BN = ("Loop over `model.modules()` (every submodule, however deeply nested) and "
                  "test `bncourse.nn.is_batchnorm(m)`.")

_FREEZE_MISTAKES = (
    _mistake("requires_grad_only",
             "The BN layers stay in training mode, so they still normalize with the batch's "
             "statistics and every fine-tuning forward still moves their running statistics "
             "(`requires_grad_(False)` on weight and bias alone does not stop that).",
             "Put each BN layer in eval mode: `bn.eval()`."),
    _mistake("eval_only",
             "The BN weight and bias still get gradients and train (eval mode freezes the "
             "running statistics only).",
             "`bn.weight.requires_grad_(False)` and `bn.bias.requires_grad_(False)`."),
    _mistake("bias_not_frozen",
             "The BN weight is frozen but the bias still trains.",
             "`bn.bias.requires_grad_(False)` as well."),
    _mistake("whole_model_eval",
             "You call `model.eval()` on the whole model: the BN layers are frozen, but dropout "
             "is switched off for the fine-tuning too.",
             "Call `.eval()` on the BN layers only, not on the model."),
    _mistake("all_parameters_frozen",
             "Every parameter of the model is frozen (`model.requires_grad_(False)` or a loop "
             "over all parameters): the other layers cannot learn, so there is nothing left to "
             "fine-tune.",
             "Set `requires_grad_(False)` on the BN layers' weight and bias only."),
    _mistake("bn1d_only",
             "Only torch's nn.BatchNorm1d layers are frozen: `isinstance(m, nn.BatchNorm1d)` "
             "misses nn.BatchNorm2d and the course's BatchNorm, which keep training.",
             "Test `bncourse.nn.is_batchnorm(m)`, which recognizes every BN class (torch's "
             "`nn.modules.batchnorm._BatchNorm` covers torch's 1d/2d/3d but not the course's "
             "BatchNorm)."),
    _mistake("torch_bn_only",
             "torch's BN layers are frozen but not the course's BatchNorm (bncourse.nn."
             "BatchNorm), which keeps training: your test recognizes torch's classes only.",
             "Test `bncourse.nn.is_batchnorm(m)`, which recognizes torch's and the course's BN "
             "classes."),
    _mistake("children_only",
             "Only the BN layers that are direct children of the model are frozen: "
             "`model.children()` does not look inside submodules, so the nested BN layers keep "
             "training.",
             _FIND_EVERY_BN),
    _mistake("returns_none",
             "Your function freezes the BN layers but returns None.",
             "End with `return model` (the same model, changed in place)."),
)


def _fine_tuning_model(seed: int) -> nn.Sequential:
    """The float64 test model, in training mode: Conv2d + BatchNorm2d at the top level, then a
    nested block with Linear + BatchNorm1d, Dropout and Linear + the course's BatchNorm, then a
    Linear head; BN statistics and affine parameters not at their defaults. The layers before a
    BN have no bias: a BN in training mode would cancel its gradient, so whether it moves would
    depend on rounding."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
            nn.Sequential(nn.Linear(48, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(8, 8, bias=False), BatchNorm(8), nn.ReLU()),
            nn.Linear(8, _CLASSES)).double()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if is_batchnorm(m)):
            for tensor, low, high in [(bn.running_mean, -0.5, 0.5), (bn.running_var, 0.5, 2.0),
                                      (bn.weight, 0.5, 1.5), (bn.bias, -0.5, 0.5)]:
                tensor.copy_(torch.from_numpy(rng.uniform(low, high, tensor.shape)))
    return model.train()


def _freeze_cases() -> list[Case]:
    return [Case("\"model in training mode: Conv2d, BatchNorm2d, then a nested block with "
                 "BatchNorm1d, Dropout and the course's BatchNorm\"",
                 (_fine_tuning_model(SEED + 95),))]


@with_solution(freeze_bn)
def check_freeze_bn(fn: Callable[..., Any]) -> None:
    """Check ``fn(model) -> model``: every BN layer of ``model`` frozen for fine-tuning -- in
    eval mode (running statistics used, no longer updated) and no gradient for its weight and
    bias -- while every other layer keeps its mode and its parameters keep learning; the same
    ``model`` is returned.

    One float64 case: a model in training mode with an ``nn.BatchNorm2d`` at the top level, an
    ``nn.BatchNorm1d``, a ``Dropout`` and a course ``bncourse.nn.BatchNorm`` in a nested block,
    Conv2d and Linear layers. After ``fn(model)`` the checker runs 3 SGD steps (lr 0.1) on the
    parameters that require gradients, in the modes ``fn`` left, and compares as 0/1 flags: each
    BN's mode, whether its statistics and affine parameters moved, whether each other
    parameter learned, whether dropout is on. On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (only ``requires_grad_(False)``, only ``.eval()``,
            the whole model in eval mode, every parameter frozen, a BN class or a nested BN
            missed, ...).
    """
    def run(model):
        return _freeze_outcome(fn, model)

    run.__name__ = _fn_name(fn)
    check_function(
        run, _freeze_reference, _freeze_cases(), _FREEZE_MISTAKES, name="check_freeze_bn",
        outputs=_FREEZE_OUTPUTS,
        advice="after your function, print `(m.training, [p.requires_grad for p in "
               "m.parameters(recurse=False)])` for every m in model.modules(): BN layers should "
               "read (False, [False, False]), the rest keep training. BN layers are listed in "
               "model.modules() order; `returned` is 0 for the model itself, 1 for None.",
    )
