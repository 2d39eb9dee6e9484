"""check_adabn (notebook 09): AdaBN, every BN's running statistics re-estimated on target data.

The learner's ``adabn(model, target_batches)`` changes a torch model in place, so the checker
compares what it leaves behind: :func:`_adabn_outcome` runs it on a fresh float64 model (dropout
seeded, so every run draws the same masks) and reads off the BN layers' running statistics,
whether any parameter moved, every module's train/eval flag, the BN momenta and what was
returned, as arrays for :func:`~bncourse.checks.engine.check_function`. The reference is the same
protocol around :func:`bncourse.adapt.adabn` (precise BN on target inputs); the catalogue's
variants are one from-scratch AdaBN, :func:`_adabn_variant`, with one bug each.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bncourse.adapt import adabn
from bncourse.checks.engine import SEED, Case, Mistake, _fn_name, check_function, with_solution
from bncourse.nn import is_batchnorm

__all__ = ["check_adabn"]

_FEATURES, _HIDDEN, _CLASSES = 6, 5, 3
_ADABN_OUTPUTS = ("running_mean", "running_var", "parameters_changed", "modes", "momentum",
                  "returned")
_RETURNED = "0: the model passed in; 1: None; 2: another object"


def _returned_code(returned: Any, model: nn.Module) -> float:
    """What the function returned, as a number: see :data:`_RETURNED`."""
    return 0.0 if returned is model else 1.0 if returned is None else 2.0


def _adabn_outcome(adabn_fn: Callable[..., Any], model: nn.Module, target_batches) -> tuple:
    """Runs ``adabn_fn(model, target_batches)`` with dropout seeded; returns the six outputs of
    :data:`_ADABN_OUTPUTS`: running means and variances (num_bn, C), whether any parameter
    changed (0 or 1), every module's training flag, each BN's momentum (-1 for None) and the
    code of the returned value."""
    before = [p.detach().clone() for p in model.parameters()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        returned = adabn_fn(model, target_batches)
    bns = [m for m in model.modules() if is_batchnorm(m)]
    changed = any(not torch.equal(b, p.detach())
                  for b, p in zip(before, model.parameters(), strict=False))
    return (torch.stack([bn.running_mean.detach() for bn in bns]),
            torch.stack([bn.running_var.detach() for bn in bns]),
            np.array(float(changed)),
            np.array([float(m.training) for m in model.modules()]),
            np.array([-1.0 if bn.momentum is None else float(bn.momentum) for bn in bns]),
            np.array(_returned_code(returned, model)))


def _adabn_reference(model, target_batches):
    return _adabn_outcome(adabn, model, target_batches)


def _adabn_variant(bug: str) -> Callable[..., Any]:
    """A from-scratch AdaBN with the catalogue's mistake ``bug`` in it."""
    @torch.no_grad()
    def buggy_adabn(model, target_batches):
        original = model
        if bug == "returns_copy":
            model = copy.deepcopy(model)
        bns = [m for m in model.modules() if is_batchnorm(m)]
        bns = bns[:1] if bug == "first_bn_only" else bns
        modes = [(m, m.training) for m in model.modules()]
        momenta = [(bn, bn.momentum) for bn in bns]
        model.train(bug in ("dropout_on", "train_forward"))
        for bn in bns:
            if bug == "count_not_reset":
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0)
            elif bug not in ("not_reset", "train_forward", "bns_in_eval"):
                bn.reset_running_stats()
            if bug not in ("ema_momentum", "train_forward"):
                bn.momentum = 1.0 if bug == "last_batch_only" else None
            bn.train(bug != "bns_in_eval")
        seen = {bn: [] for bn in bns}       # "bns_in_eval" records each BN's inputs by a hook
        hooks = [bn.register_forward_pre_hook(lambda m, args: seen[m].append(args[0]))
                 for bn in bns if bug == "bns_in_eval"]
        for xb in [torch.cat(list(target_batches))] if bug == "one_big_batch" else target_batches:
            model(xb)
        for bn, hook in zip(bns, hooks, strict=False):
            hook.remove()
            bn.running_mean.copy_(torch.stack([x.mean(0) for x in seen[bn]]).mean(0))
            bn.running_var.copy_(torch.stack([x.var(0) for x in seen[bn]]).mean(0))
        if bug == "biased_var":
            m = len(target_batches[0])
            for bn in bns:
                bn.running_var.mul_((m - 1) / m)
        for bn, momentum in momenta:
            bn.momentum = None if bug == "momentum_not_restored" else momentum
        if bug in ("left_in_eval", "left_in_train"):
            model.train(bug == "left_in_train")
        elif bug != "modes_not_restored":
            for m, flag in modes:
                m.training = flag
        if bug == "parameters_changed":
            next(model.parameters()).mul_(0.9)
        return {"returns_none": None, "returns_copy": model}.get(bug, original)

    buggy_adabn.__name__ = f"adabn_{bug}"
    return buggy_adabn


def _mistake(key: str, diagnosis: str, fix: str) -> Mistake:
    variant = _adabn_variant(key)
    return Mistake(key, diagnosis, fix,
                   lambda model, target_batches: _adabn_outcome(variant, model, target_batches))


_RECIPE = ("for every BN layer: `bn.reset_running_stats()`, `bn.momentum = None` (a cumulative "
           "average), `bn.train()`; every other layer in eval mode; run the batches under "
           "torch.no_grad(); then put back each momentum and each module's own mode.")

_ADABN_MISTAKES = (
    _mistake("not_reset",
             "The running statistics are not reset first: with momentum=None the average "
             "continues from the old (source) statistics and their num_batches_tracked, so the "
             "source data still weighs in.",
             "Call `bn.reset_running_stats()` on every BN layer before running the batches."),
    _mistake("count_not_reset",
             "You reset running_mean and running_var but not num_batches_tracked: with "
             "momentum=None the cumulative average divides by that count, so the reset values 0 "
             "and 1 weigh in as if they were all the batches the model had seen.",
             "`bn.reset_running_stats()` resets the count too."),
    _mistake("ema_momentum",
             "The statistics are an exponential moving average with the layer's momentum (0.1), "
             "not the plain average of the batches: the result depends on the batch order, and "
             "after a few batches most of the starting values remain.",
             "Set `bn.momentum = None` while collecting (a cumulative average), and restore "
             "it afterwards."),
    _mistake("train_forward",
             "You only run the target batches through the model in training mode: the running "
             "statistics remain exponential moving averages (momentum 0.1) of the old ones, so "
             "they keep most of the source statistics, and dropout is on while collecting.",
             _RECIPE),
    _mistake("dropout_on",
             "Dropout is on while the statistics are collected (the whole model in training "
             "mode, as torch.optim.swa_utils.update_bn does): the BN layers after a dropout see "
             "inputs they will never see at inference, so their statistics are off.",
             "Put the model in eval mode, then only the BN layers in training mode: "
             "`model.eval()`, then `bn.train()` for each BN."),
    _mistake("bns_in_eval",
             "The BN layers are in eval mode while you collect their inputs: each later BN "
             "layer then sees inputs normalized with the earlier layers' old (source) "
             "statistics, not with the target batch's, so its statistics are off (the first "
             "BN layer's are right).",
             "Collect with the BN layers in training mode (`model.eval()`, then `bn.train()` "
             "for each BN), so each normalizes with the target batch's statistics while the "
             "next ones' are estimated."),
    _mistake("modes_not_restored",
             "The modes of the collection are left behind: the BN layers stay in training "
             "mode (batch statistics again, and updates) and the other layers in eval mode.",
             "Save `[(m, m.training) for m in model.modules()]` first and set each "
             "`m.training = flag` back at the end."),
    _mistake("left_in_eval",
             "The whole model is left in eval mode, whatever mode it came in: a model that was "
             "training now runs without dropout.",
             "Restore each module's own mode: save `[(m, m.training) for m in "
             "model.modules()]` first and set each `m.training = flag` back at the end."),
    _mistake("left_in_train",
             "The whole model is left in training mode, whatever mode it came in: a model "
             "that was being evaluated now uses batch statistics and dropout again.",
             "Restore each module's own mode: save `[(m, m.training) for m in "
             "model.modules()]` first and set each `m.training = flag` back at the end."),
    _mistake("momentum_not_restored",
             "The BN layers keep momentum=None after adaptation, so any later training averages "
             "over all batches ever seen instead of tracking the recent ones.",
             "Save each `bn.momentum` first and put it back at the end."),
    _mistake("parameters_changed",
             "The model's parameters changed: AdaBN only re-estimates the BN statistics; "
             "weights and biases (BN's affine ones included) stay as trained.",
             "Only run forward passes, under torch.no_grad(): no backward, no optimizer step, "
             "no writes to parameters."),
    _mistake("first_bn_only",
             "Only the first BN layer gets the target statistics; the later ones keep the "
             "source statistics.",
             "Loop over every BN layer: `[m for m in model.modules() if is_batchnorm(m)]` "
             "(bncourse.nn.is_batchnorm)."),
    _mistake("last_batch_only",
             "The statistics are those of the last batch only, not the average over all "
             "target batches.",
             "Use `bn.momentum = None` (cumulative average over all batches), not 1."),
    _mistake("biased_var",
             "running_var averages the biased batch variances (divided by B); BN stores the "
             "unbiased ones (divided by B - 1).",
             "Average `xb.var(0, unbiased=True)`, or let BN's own update do it."),
    _mistake("one_big_batch",
             "You run all target batches as one big batch: the means agree, but the variance "
             "is that of the pooled values, which also counts the spread between batch means, "
             "not the average of the per-batch variances BN normalizes with (and on real data "
             "all batches at once may not fit in memory).",
             "Run the batches one at a time with `bn.momentum = None`."),
    _mistake("returns_none",
             "Your function changes the model but returns None.",
             "End with `return model` (the same model, changed in place)."),
    _mistake("returns_copy",
             "You adapt and return a copy; the model passed in keeps its source statistics.",
             "Change the model passed in, in place, and return it."),
)


def _source_model(seed: int, training: bool, batches_seen: int) -> nn.Sequential:
    """The float64 test model, with running statistics far from the target's and from 0 and 1."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(_FEATURES, _HIDDEN), nn.BatchNorm1d(_HIDDEN), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(_HIDDEN, _HIDDEN), nn.BatchNorm1d(_HIDDEN), nn.ReLU(),
            nn.Linear(_HIDDEN, _CLASSES)).double()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for bn in (model[1], model[5]):
            bn.running_mean.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, _HIDDEN)))
            bn.running_var.copy_(torch.from_numpy(rng.uniform(0.3, 0.8, _HIDDEN)))
            bn.num_batches_tracked.fill_(batches_seen)
            bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, _HIDDEN)))
            bn.bias.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, _HIDDEN)))
    return model.train(training)


def _target_batches(seed: int, num_batches: int, batch_size: int) -> torch.Tensor:
    """(num_batches, batch_size, features): shifted and scaled inputs, each batch a bit apart."""
    rng = np.random.default_rng(seed)
    shift = 1.5 + rng.normal(size=_FEATURES) + 0.3 * rng.normal(size=(num_batches, 1, _FEATURES))
    x = shift + 2.5 * rng.normal(size=(num_batches, batch_size, _FEATURES))
    return torch.from_numpy(x)


def _adabn_cases() -> list[Case]:
    cases = []
    for k, (training, num_batches, batch_size, seen) in enumerate([(True, 4, 16, 12),
                                                                    (False, 3, 10, 30)]):
        mode = "train" if training else "eval"
        cases.append(Case(
            f"\"model in {mode} mode, {num_batches} target batches of {batch_size} as a "
            f"({num_batches}, {batch_size}, {_FEATURES}) tensor\"",
            (_source_model(SEED + 90 + k, training, seen),
             _target_batches(SEED + 92 + k, num_batches, batch_size))))
    return cases


@with_solution(adabn)
def check_adabn(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, target_batches) -> model`` (AdaBN, Li et al. 2016): every BN layer's
    running mean and variance become the cumulative averages over ``target_batches`` of each
    batch's mean and unbiased variance, collected with every other layer in eval mode; no
    parameter changes; each module's train/eval mode and each BN's momentum are as before; the
    same ``model`` is returned.

    Two float64 cases: ``nn.Sequential(Linear, BatchNorm1d, ReLU, Dropout(0.5), Linear,
    BatchNorm1d, ReLU, Linear)`` with non-default running statistics, in training mode with 4
    target batches of 16, and in eval mode with 3 of 10; ``target_batches`` is a (num_batches,
    B, 6) tensor of shifted, scaled inputs. Dropout is seeded. On success prints one
    deterministic line.

    Raises:
        ExerciseError: naming the mistake (statistics not reset, a moving average, dropout on,
            modes or momentum not restored, parameters changed, a BN layer missed, ...).
    """
    def run(model, target_batches):
        return _adabn_outcome(fn, model, target_batches)

    run.__name__ = _fn_name(fn)
    check_function(
        run, _adabn_reference, _adabn_cases(), _ADABN_MISTAKES, name="check_adabn",
        outputs=_ADABN_OUTPUTS,
        advice="compare with one BN layer by hand: its running_mean should equal the average of "
               "the batch means of that layer's inputs, computed with the model in eval mode. "
               f"`returned` codes: {_RETURNED}.",
    )
