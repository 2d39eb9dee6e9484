"""Notebook 09's measurements (BN in practice), for :mod:`bncourse.experiments.jobs`.

* :func:`shift_metrics` (``measure="shift"``): a trained model on shifted test sets, as trained
  and with each test-time fix: test-batch statistics, AdaBN, TENT; and in batches that mix
  clean and shifted examples.
* :func:`variance_shift_metrics` (``measure="variance_shift"``): how far each BN's running
  variance is from the variance its input has at inference (dropout off), and the accuracy once
  the statistics are re-estimated with dropout off.
* :func:`finetune_job` (``Arm.finetune``): pre-train on classes 0-4, fine-tune on a few examples
  of classes 5-9, one way of treating BN each.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bncourse.adapt import KeepBNFrozen, adabn, bn_state, tent_online
from bncourse.data import MNIST1D, load_mnist1d, shifted_test_set
from bncourse.nn import is_batchnorm, precise_bn
from bncourse.train import evaluate, set_seed, train

__all__ = ["shift_metrics", "variance_shift_metrics", "finetune_job", "SHIFT_STRENGTHS",
           "TEST_BATCH", "TENT_LRS", "SHIFT_VAL", "PRETRAIN", "FINETUNE_PER_CLASS"]

#: Shift strengths per kind (0: fresh draws of the training distribution). The strongest of
#: each kind roughly halves a trained MLP's accuracy.
SHIFT_STRENGTHS = {"noise": (0.0, 0.25, 0.5, 1.0), "translation": (0.0, 0.5, 1.0, 2.0),
                   "gain": (0.0, 0.25, 0.5, 1.0)}
SHIFT_VAL = 800       # of 1800 shifted examples, the first 800 tune TENT; the other 1000 test
TEST_BATCH = 100      # test-time batches (test-batch statistics, AdaBN, TENT)
#: TENT's learning rates (Adam), chosen per shifted set on its validation part.
TENT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Pre-training for the fine-tuning arms: BN MLP, classes 0-4, the rate mlp_bn's tuning chose
#: for BN, 40 epochs of batch 64 with the cosine schedule.
PRETRAIN = dict(lr=0.1, epochs=40, batch_size=64, schedule="cosine")
FINETUNE_PER_CLASS = 20   # labelled examples per new class (5-9) for fine-tuning


@functools.cache
def _shifted(shift: str, strength: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = shifted_test_set(shift, strength, n=SHIFT_VAL + 1000)
    return x[:SHIFT_VAL], y[:SHIFT_VAL], x[SHIFT_VAL:], y[SHIFT_VAL:]


def _accuracy(predictions: Tensor, y: Tensor) -> float:
    return (predictions == y).double().mean().item()


def _tent_accuracy(model: nn.Module, x: Tensor, y: Tensor, lr: float) -> float:
    """Accuracy of TENT's online predictions on one pass over ``x`` in test batches."""
    adapted = copy.deepcopy(model)
    return _accuracy(tent_online(adapted, x.split(TEST_BATCH), lr), y)


@torch.no_grad()
def _mixed_accuracy(model: nn.Module, clean: Tensor, shifted: Tensor, y_shifted: Tensor,
                    mixed: bool) -> float:
    """Accuracy on the shifted examples with test-batch statistics: batches of half clean (other
    examples: MNIST-1D's test split), half shifted examples (``mixed``), or the shifted halves
    alone (one source per batch)."""
    half = TEST_BATCH // 2
    saved = copy.deepcopy(model.state_dict())
    model.train()
    predictions = []
    for xc, xs in zip(clean.split(half), shifted.split(half), strict=True):
        xb = torch.cat([xc, xs]) if mixed else xs                  # (100 or 50, features)
        predictions.append(model(xb)[-xs.shape[0]:].argmax(1))
    model.load_state_dict(saved)
    model.eval()
    return _accuracy(torch.cat(predictions), y_shifted)


def shift_metrics(model: nn.Module) -> dict:
    """Per kind of shift and strength, test accuracy ``source`` (as trained); for BN models also
    ``batch_stats`` (normalized with each test batch's statistics), ``adabn`` (running
    statistics re-estimated on the shifted test set), ``tent`` (with the TENT rate that did best
    on the shifted validation part, ``tent_lr``), ``mixed`` and ``separate`` (see
    :func:`_mixed_accuracy`). The model is left unchanged, in eval mode."""
    model.eval()
    has_bn = any(is_batchnorm(m) for m in model.modules())
    x_clean = load_mnist1d().x_test                                  # (1000, 40)
    out: dict = {}
    for shift, strengths in SHIFT_STRENGTHS.items():
        rows = []
        for s in strengths:
            x_val, y_val, x, y = _shifted(shift, s)
            row = {"strength": s, "source": evaluate(model, x, y).accuracy}
            if has_bn:
                row["batch_stats"] = evaluate(model, x, y, mode="train",
                                              batch_size=TEST_BATCH).accuracy
                row["adabn"] = evaluate(adabn(copy.deepcopy(model), x.split(TEST_BATCH)),
                                        x, y).accuracy
                val = [_tent_accuracy(model, x_val, y_val, lr) for lr in TENT_LRS]
                row["tent_lr"] = TENT_LRS[max(range(len(val)), key=val.__getitem__)]
                row["tent"] = _tent_accuracy(model, x, y, row["tent_lr"])
                row["mixed"] = _mixed_accuracy(model, x_clean, x, y, mixed=True)
                row["separate"] = _mixed_accuracy(model, x_clean, x, y, mixed=False)
            rows.append(row)
        out[shift] = rows
    return out


@torch.no_grad()
def variance_shift_metrics(model: nn.Module, x_train: Tensor, x_test: Tensor, y_test: Tensor,
                           batch_size: int) -> dict:
    """``variance_ratio``: per BN layer, the mean over channels of running variance / the
    variance of the layer's input at inference on ``x_test`` (dropout off); 1 means no shift.
    ``test_acc_reestimated``: test accuracy after :func:`bncourse.nn.precise_bn` over one epoch
    of training batches (dropout off while collecting). The model is left unchanged."""
    model.eval()
    layers = [m for m in model.modules() if is_batchnorm(m)]
    inputs: dict[int, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, k=k: inputs.__setitem__(k, a[0]))
             for k, m in enumerate(layers)]
    model(x_test)
    for h in hooks:
        h.remove()
    ratio = [(m.running_var / inputs[k].var(0, correction=0)).mean().item()
             for k, m in enumerate(layers)]
    fixed = precise_bn(copy.deepcopy(model), x_train.split(batch_size))
    return {"variance_ratio": ratio,
            "test_acc_reestimated": evaluate(fixed, x_test, y_test).accuracy}


def _classes(x: Tensor, y: Tensor, low: int, high: int) -> tuple[Tensor, Tensor]:
    keep = (y >= low) & (y < high)
    return x[keep], y[keep]


def _first_per_class(x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
    idx = torch.cat([torch.nonzero(y == c).flatten()[:k] for c in y.unique()]).sort().values
    return x[idx], y[idx]


def _prepare(model: nn.Module, variant: str) -> nn.Module:
    """Sets what trains during fine-tuning, and how BN normalizes, per ``variant``."""
    bns = [m for m in model.modules() if is_batchnorm(m)]
    bn_params = {id(p) for m in bns for p in m.parameters()}
    head = {id(p) for p in model.head.parameters()}
    if variant == "no_grad":                      # the common bug: statistics still move
        for m in bns:
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    elif variant == "frozen":
        model = KeepBNFrozen(model)
    elif variant in ("bn_only", "head_only"):
        keep = bn_params | head if variant == "bn_only" else head
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        if variant == "head_only":
            model = KeepBNFrozen(model)
    return model


def finetune_job(arm, seed: int, lr: float, data: dict[str, Tensor],
                 build: Callable[[object], nn.Module]) -> dict:
    """Pre-trains ``build(arm)`` on classes 0-4 (:data:`PRETRAIN`), replaces the head by a fresh
    one, and fine-tunes on :data:`FINETUNE_PER_CLASS` examples of each of classes 5-9 at ``lr``
    as ``arm.finetune`` says; validation and test on classes 5-9 only.

    Metrics: the fine-tuning curves and final accuracies, ``pretrain_test_acc`` (classes 0-4),
    ``running_mean_drift`` (largest over BN layers of the mean over channels of
    |running mean after - before| / running std before) and ``bn_param_drift`` (largest |change|
    of a BN weight or bias) over fine-tuning."""
    set_seed(seed)
    model = build(arm)
    old = MNIST1D(*_classes(data["x_train"], data["y_train"], 0, 5),
                  *_classes(data["x_val"], data["y_val"], 0, 5))
    train(model, old, seed=seed, progress=False, **PRETRAIN)
    pretrain_acc = evaluate(model, *_classes(data["x_test"], data["y_test"], 0, 5)).accuracy
    model.head.reset_parameters()
    before = bn_state(model)
    x_new, y_new = _first_per_class(*_classes(data["x_train"], data["y_train"], 5, 10),
                                    FINETUNE_PER_CLASS)
    new = MNIST1D(x_new, y_new, *_classes(data["x_val"], data["y_val"], 5, 10))
    tuned = _prepare(model, arm.finetune)
    hist = train(tuned, new, epochs=arm.epochs, lr=lr, batch_size=arm.batch_size,
                 momentum=arm.momentum, weight_decay=arm.weight_decay, seed=seed,
                 schedule=arm.schedule, progress=False)
    after = bn_state(model)
    drift = max(((after[f"{n}.running_mean"] - before[f"{n}.running_mean"]).abs()
                 / before[f"{n}.running_var"].sqrt()).mean().item()
                for n in {k.rsplit(".", 1)[0] for k in before})
    param_drift = max((after[k] - before[k]).abs().max().item()
                      for k in before if k.endswith(("weight", "bias")))
    x_test, y_test = _classes(data["x_test"], data["y_test"], 5, 10)
    final = {}
    for split, (x, y) in (("train", (x_new, y_new)), ("val", (new.x_test, new.y_test)),
                          ("test", (x_test, y_test))):
        m = evaluate(tuned, x, y)
        final[f"{split}_acc"], final[f"{split}_loss"] = m.accuracy, m.loss
    return {"lr": lr, "seed": seed, "diverged": hist.diverged, "steps": hist.steps,
            "steps_per_epoch": x_new.shape[0] // arm.batch_size,
            "val_acc_curve": hist.test_acc, "train_acc_curve": hist.train_acc,
            "train_loss_curve": hist.epoch_loss, **final,
            "pretrain_test_acc": pretrain_acc, "running_mean_drift": drift,
            "bn_param_drift": param_drift}
