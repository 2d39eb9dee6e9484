"""check_batchnorm_module (notebook 02): a from-scratch batch-norm ``nn.Module``.

The oracle is ``torch.nn.BatchNorm1d`` itself, not :mod:`bncourse.functional`: the exercise is
to reproduce that module -- its parameters and buffers, ``state_dict`` keys, autograd gradient,
``num_batches_tracked`` and ``momentum=None`` -- and the ``state_dict`` round trip needs a real
``nn.BatchNorm1d`` anyway (``tests/test_functional.py`` ties the numpy reference to it). The
catalogue's variants are one from-scratch module, :func:`_variant_module`, with one bug each.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs
from bncourse.checks.engine import (
    ATOL,
    RTOL,
    SEED,
    Case,
    ExerciseError,
    Hint,
    Mistake,
    _fn_name,
    check_function,
    with_solution,
)
from bncourse.nn import BatchNorm

__all__ = ["check_batchnorm_module"]

_MODULE_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_MODULE_OUTPUTS = ("train_out", "grad_x", "running_mean", "running_var", "num_batches_tracked",
                   "eval_out")
_MODULE_STEPS = 3
_MODULE_SIGNATURE = "MyBatchNorm(num_features, eps=1e-5, momentum=0.1)"


def _variant_module(bug: str | None):
    """A from-scratch batch-norm module with PyTorch's structure and, optionally, one bug.

    ``bug=None`` is a correct implementation; each other value is a mistake of the catalogue.
    """
    import torch
    from torch import nn

    class _Variant(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            self.num_features, self.eps, self.momentum = num_features, eps, momentum
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
            self._count = 0  # the "nbt_not_incremented" variant counts here instead

        def _stats(self, x):
            if bug == "reshape_channels" and x.dim() > 2:
                flat = x.reshape(-1, self.num_features)       # mixes channels and positions
            else:
                flat = x.transpose(0, 1).reshape(self.num_features, -1).t()   # (m, C)
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            if bug == "detached":
                mean, var = mean.detach(), var.detach()
            return mean, var, flat.shape[0]

        def _factor(self):
            self._count += 1
            if bug != "nbt_not_incremented":
                self.num_batches_tracked += 1
            n = self._count
            if self.momentum is None:
                return {"none_as_default": 0.1, "none_assigns_batch": 1.0,
                        "none_off_by_one": 1.0 / (n + 1)}.get(bug, 1.0 / n)
            return 1.0 - self.momentum if bug == "momentum_reversed" else self.momentum

        def forward(self, x):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            use_batch = self.training or bug == "eval_batch_stats"
            update = self.training or bug == "updates_in_eval"
            if use_batch or update:
                mean, var, m = self._stats(x)
            if update:
                factor = self._factor()
                if bug != "not_updated":
                    with torch.no_grad():
                        stored = var if bug == "biased_var" else var * m / (m - 1)
                        self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                        self.running_var.mul_(1 - factor).add_(factor * stored.detach())
            if use_batch:
                if bug == "unbiased_norm":
                    var = var * m / (m - 1)
                x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
            else:
                x_hat = ((x - self.running_mean.reshape(shape))
                         / torch.sqrt(self.running_var.reshape(shape) + self.eps))
            return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)

    _Variant.__name__ = "BatchNorm" if bug is None else f"BatchNorm_{bug}"
    return _Variant


def _module_protocol(make, xs, x_eval, eps, momentum, gamma, beta, r):
    """Build ``make(C, eps=eps, momentum=momentum)`` in float64, set gamma and beta, take the
    training steps ``xs`` (backward through the first), then one eval forward on ``x_eval``.

    Returns the six outputs of :data:`_MODULE_OUTPUTS`; the running statistics have one row
    per step plus one after the eval forward.
    """
    import torch

    bn = make(gamma.shape[0], eps=eps, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    bn.train()
    outs, means, variances, counts, grad = [], [], [], [], None
    for i, x in enumerate(xs):
        x = x.clone().requires_grad_(i == 0)
        out = bn(x)
        if i == 0:
            (out * r).sum().backward()
            grad = x.grad
        outs.append(out.detach())
        means.append(bn.running_mean.detach().clone())
        variances.append(bn.running_var.detach().clone())
        counts.append(float(bn.num_batches_tracked))
    bn.eval()
    with torch.no_grad():
        out_eval = bn(x_eval)
    means.append(bn.running_mean.detach().clone())
    variances.append(bn.running_var.detach().clone())
    counts.append(float(bn.num_batches_tracked))
    return (torch.stack(outs), grad, torch.stack(means), torch.stack(variances),
            torch.tensor(counts, dtype=torch.float64), out_eval.detach())


def _module_reference(xs, x_eval, eps, momentum, gamma, beta, r):
    from torch import nn

    return _module_protocol(nn.BatchNorm1d, xs, x_eval, eps, momentum, gamma, beta, r)


def _module_mistake(key: str, diagnosis: str, fix: str) -> Mistake:
    cls = _variant_module(key)
    return Mistake(key, diagnosis, fix,
                   lambda *args: _module_protocol(cls, *args))


_NONE_RULE = ("momentum=None means a cumulative average: count the batch first "
              "(num_batches_tracked += 1), then blend with factor = 1 / num_batches_tracked, "
              "so after n batches the running mean is the plain average of the n batch means.")

_MODULE_MISTAKES = (
    _module_mistake(
        "not_updated",
        "The running statistics never change in training mode, so eval mode normalizes with "
        "their initial values (mean 0, variance 1).",
        "In training mode, update the buffers in place under torch.no_grad(): "
        "`self.running_mean.mul_(1 - f).add_(f * mean)` (same for running_var); assigning to "
        "a local variable, or `self.running_mean = ...` inside a function that returns "
        "before it, changes nothing."),
    _module_mistake(
        "momentum_reversed",
        "The momentum convention is reversed: you weight the old value by momentum (CS231n's "
        "and Keras's convention). In PyTorch momentum is the weight of the new batch.",
        "running = (1 - momentum) * running + momentum * batch_statistic."),
    _module_mistake(
        "biased_var",
        "running_var stores the biased batch variance (divided by m). PyTorch stores the "
        "unbiased one (divided by m - 1), m = values per channel.",
        "Blend in `var * m / (m - 1)`, where var is the biased variance you normalize with."),
    _module_mistake(
        "nbt_not_incremented",
        "num_batches_tracked is not incremented: it should count the training batches seen.",
        "`self.num_batches_tracked += 1` on every training forward (before the momentum=None "
        "factor is computed)."),
    _module_mistake(
        "none_as_default",
        "momentum=None is treated as momentum=0.1: it should be a cumulative average.",
        _NONE_RULE),
    _module_mistake(
        "none_assigns_batch",
        "momentum=None overwrites the running statistics with each batch's: it should be a "
        "cumulative average of all batches.",
        _NONE_RULE),
    _module_mistake(
        "none_off_by_one",
        "momentum=None is a cumulative average off by one: the factor is 1 / (n + 1) instead "
        "of 1 / n after counting the batch.",
        _NONE_RULE),
    _module_mistake(
        "reshape_channels",
        "For (N, C, L) inputs the statistics mix channels: `x.reshape(-1, C)` does not gather "
        "each channel's values (the memory order is N, C, L), so each 'channel' of the "
        "reshaped array holds values of several channels.",
        "Reduce over dims (0, 2): `x.mean(dim=(0, 2))`, or move the channel axis first: "
        "`x.transpose(0, 1).reshape(C, -1)`."),
    _module_mistake(
        "eval_batch_stats",
        "Eval mode still normalizes with the batch's own statistics: then a prediction depends "
        "on the other examples in the batch, and the running statistics are never used.",
        "Branch on self.training: in eval mode use running_mean and running_var."),
    _module_mistake(
        "updates_in_eval",
        "The running statistics are also updated in eval mode: evaluating on test data "
        "changes the model.",
        "Update the buffers only when self.training is True."),
    _module_mistake(
        "unbiased_norm",
        "Training mode normalizes with the unbiased variance (divided by m - 1). BN normalizes "
        "with the biased one; only running_var stores the unbiased variance.",
        "Use `x.var(dim=dims, unbiased=False)` in the normalization."),
    _module_mistake(
        "detached",
        "The forward values are right but the gradient is not: the batch mean and variance are "
        "detached from the graph (`.detach()`, `.item()`, `.data` or torch.no_grad()), so the "
        "gradient ignores that every example moves the statistics.",
        "Compute the statistics used for the normalization with autograd on; detach only the "
        "copies that go into the running buffers."),
)

_MODULE_HINTS = (
    Hint("2d", "your module is right for (N, C) inputs but not for (N, C, L) ones: take each "
               "channel's statistics over dims 0 and 2, and reshape the (C,) vectors to "
               "(1, C, 1) to broadcast."),
    Hint("momentum_float", "your module is right with momentum=0.1 but not with momentum=None. "
                           + _NONE_RULE),
)


def _module_cases() -> list[Case]:
    import torch

    rng = np.random.default_rng(SEED + 3)
    cases = []
    for shape, eps, momentum in [((16, 5), 1e-5, 0.1), ((8, 4, 6), 1e-3, 0.1),
                                 ((16, 5), 1e-3, None), ((8, 4, 6), 1e-5, None)]:
        xs = []
        for _ in range(_MODULE_STEPS + 1):  # the training steps, then the eval batch
            x, gamma, beta = _bn_inputs(rng, shape)
            xs.append(torch.from_numpy(x))
        r = torch.from_numpy(rng.standard_normal(shape))
        dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
        tags = {"2d"} if len(shape) == 2 else set()
        tags |= {"momentum_float"} if momentum is not None else set()
        cases.append(Case(
            f"\"x of shape {dims} = {shape}, eps={eps:g}, momentum={momentum}\"",
            (xs[:-1], xs[-1], eps, momentum, torch.from_numpy(gamma), torch.from_numpy(beta),
             r),
            tags=frozenset(tags), channel_notes={shape[1] // 2: _TINY}))
    return cases


def _structure_problems(cls) -> tuple[list[str], list[str]]:
    """Construction, parameters, buffers, initial values and state_dict keys of ``cls``;
    returns (messages, mistake keys)."""
    import torch
    from torch import nn

    name = _fn_name(cls)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return ([f"`{name}` must be a class deriving from torch.nn.Module (pass the class, not "
                 f"an instance)."], ["not_a_module_class"])
    try:
        bn = cls(5, eps=1e-5, momentum=0.1)
        cls(5, eps=1e-3, momentum=None)
    except NotImplementedError:
        return ([f"`{name}` is not implemented yet: replace `raise NotImplementedError` with "
                 f"your code, run that cell, then run this check again."], ["not_implemented"])
    except Exception as exc:
        return ([f"`{name}(5, eps=1e-5, momentum=0.1)` raised {type(exc).__name__}: {exc}. "
                 f"The checker builds the module as `{_MODULE_SIGNATURE}`; momentum may also be "
                 f"None."], ["constructor"])
    params, buffers = dict(bn.named_parameters()), dict(bn.named_buffers())
    lines, keys = [], []
    as_params = [k for k in ("running_mean", "running_var", "num_batches_tracked") if k in params]
    if as_params:
        keys.append("stats_as_parameters")
        lines.append(
            f"{', '.join(f'`{k}`' for k in as_params)} registered as nn.Parameter: the optimizer "
            f"would treat running statistics as trainable weights (weight decay would shrink "
            f"them, and model.parameters() counts them). They are state, not weights. Fix: "
            f"`self.register_buffer('running_mean', torch.zeros(num_features))` (likewise "
            f"running_var with ones, num_batches_tracked with torch.tensor(0, dtype=torch.long)).")
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        if k in params or k in buffers:
            continue
        value = getattr(bn, k, None)
        keys.append(f"{k}_not_buffer")
        if value is None:
            lines.append(f"`{k}` is missing. Fix: `self.register_buffer('{k}', ...)` in "
                         f"__init__.")
        else:
            lines.append(f"`{k}` is a plain attribute ({type(value).__name__}), not a buffer: it "
                         f"is not saved in state_dict and `.to()`/`.double()` do not move it. "
                         f"Fix: `self.register_buffer('{k}', ...)` in __init__.")
    for k in ("weight", "bias"):
        if k not in params:
            keys.append(f"{k}_not_parameter")
            lines.append(f"`{k}` is not an nn.Parameter of the module (PyTorch names gamma "
                         f"`weight` and beta `bias`). Fix: `self.{k} = nn.Parameter(...)`.")
    state = bn.state_dict()
    extra = sorted(set(state) - set(_MODULE_KEYS))
    if extra:
        keys.append("state_dict_keys")
        lines.append(f"state_dict has keys nn.BatchNorm1d does not have: {', '.join(extra)}; its "
                     f"keys are exactly {', '.join(_MODULE_KEYS)}, so checkpoints would not load "
                     f"either way. Fix: use these names; keep other state as plain attributes.")
    if lines:
        return lines, keys
    want = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0,
            "num_batches_tracked": 0.0}
    for k in _MODULE_KEYS:
        v = state[k]
        shape = () if k == "num_batches_tracked" else (5,)
        if tuple(v.shape) != shape:
            keys.append(f"{k}_shape")
            lines.append(f"`{k}` has shape {tuple(v.shape)} for num_features=5; expected "
                         f"{shape}.")
        elif not torch.all(v.double() == want[k]):
            keys.append(f"{k}_init")
            lines.append(f"`{k}` starts at {v.tolist()}; PyTorch starts it at {want[k]:g} "
                         f"everywhere.")
    if "num_batches_tracked" in state and not keys and state["num_batches_tracked"].dtype != \
            torch.long:
        keys.append("num_batches_tracked_dtype")
        lines.append(f"`num_batches_tracked` is {state['num_batches_tracked'].dtype}; PyTorch "
                     f"uses torch.long (an integer count). Fix: torch.tensor(0, "
                     f"dtype=torch.long).")
    return lines, keys


def _state_dict_round_trip(cls) -> list[str]:
    """Load a trained nn.BatchNorm1d's state_dict into ``cls`` and back; what went wrong."""
    import torch
    from torch import nn

    rng = np.random.default_rng(SEED + 4)
    xs = [torch.from_numpy(_bn_inputs(rng, (8, 4, 6))[0]) for _ in range(4)]
    problems = []
    for src_cls, dst_cls, words in [(nn.BatchNorm1d, cls, "nn.BatchNorm1d -> yours"),
                                    (cls, nn.BatchNorm1d, "yours -> nn.BatchNorm1d")]:
        src = src_cls(4, momentum=0.3).double()
        with torch.no_grad():
            src.weight.copy_(torch.linspace(0.5, 2.0, 4, dtype=torch.float64))
            src.bias.copy_(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))
        src.train()
        with torch.no_grad():
            for x in xs[:3]:
                src(x)
        dst = dst_cls(4, momentum=0.3).double()
        try:
            dst.load_state_dict(src.state_dict())
        except Exception as exc:
            problems.append(f"- state_dict interchange ({words}): load_state_dict raised "
                            f"{type(exc).__name__}: {exc}")
            continue
        src.eval()
        dst.eval()
        with torch.no_grad():
            same = torch.allclose(src(xs[3]), dst(xs[3]), rtol=RTOL, atol=ATOL)
        if not same:
            problems.append(f"- state_dict interchange ({words}): the state_dict loads, but the "
                            f"two modules then disagree in eval mode. Are the buffers you read "
                            f"in forward the ones you registered?")
    return problems


class _CalledLibraryBatchNorm(Exception):
    """Raised by the stand-ins for torch's batch-norm functions during the check."""


def _borrowed_batchnorm(cls) -> tuple[str, str] | None:
    """``(key, message)`` if ``cls`` gets its batch norm from a library instead of computing it:
    it derives from a BN class, holds a BN module, or calls ``F.batch_norm``/``torch.batch_norm``
    in forward. ``None`` otherwise (or if ``cls`` cannot even be built: the structure check
    reports that)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from bncourse.nn.batchnorm import _BatchNormBase

    library = (nn.modules.batchnorm._BatchNorm, _BatchNormBase)
    fix = ("Fix: derive from nn.Module only and compute the mean, variance and normalization "
           "yourself in forward; the exercise is to write batch norm, not to call it.")
    if isinstance(cls, type) and issubclass(cls, library):
        base = next(b for b in cls.__mro__
                    if issubclass(b, library) and b.__module__.startswith(("torch.", "bncourse.")))
        what = "is" if base is cls else "derives from"
        return ("subclasses_batchnorm",
                f"`{_fn_name(cls)}` {what} {base.__module__}.{base.__name__}, so its "
                f"batch norm is the library's, not yours. {fix}")
    try:
        module = cls(4)
    except Exception:
        return None
    if any(isinstance(m, library) for m in module.modules()):
        return ("wraps_batchnorm_module",
                f"`{_fn_name(cls)}` holds a library batch-norm module and lets it do the work. "
                f"{fix}")

    def refuse(*args, **kwargs):
        raise _CalledLibraryBatchNorm

    originals = (F.batch_norm, torch.batch_norm)
    F.batch_norm, torch.batch_norm = refuse, refuse
    try:
        module.double().train()(torch.randn(6, 4, dtype=torch.float64))
    except _CalledLibraryBatchNorm:
        return ("calls_library_batch_norm",
                f"`{_fn_name(cls)}.forward` calls F.batch_norm (or torch.batch_norm). {fix}")
    except Exception:
        return None    # other bugs: the comparison below describes them
    finally:
        F.batch_norm, torch.batch_norm = originals
    return None


@with_solution(BatchNorm)
def check_batchnorm_module(cls) -> None:
    """Check a from-scratch batch-norm ``nn.Module`` class against ``torch.nn.BatchNorm1d``.

    ``cls(num_features, eps=1e-5, momentum=0.1)`` must build a module with the parameters
    ``weight`` and ``bias`` and the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` (PyTorch's names, initial values and ``state_dict`` keys), and
    compute batch norm itself: a class deriving from a library BN, holding one, or calling
    ``F.batch_norm`` is rejected. In float64,
    for (N, C) and (N, C, L) inputs and for momentum 0.1 and ``None`` (four cases), the checker
    compares with ``nn.BatchNorm1d``: three training steps (outputs, the input gradient of the
    first, the running statistics and ``num_batches_tracked`` after each), then one eval-mode
    forward (its output, and the running statistics after it). Finally a trained
    ``nn.BatchNorm1d``'s ``state_dict`` must load into ``cls`` and give the same eval outputs, and
    the other way round.

    On success prints two deterministic lines.

    Raises:
        ExerciseError: with a diagnosis in plain words when ``cls`` is wrong.
    """
    name = "check_batchnorm_module"
    borrowed = _borrowed_batchnorm(cls)
    if borrowed is not None:
        key, message = borrowed
        raise ExerciseError(f"{name}: {message}", [key])
    lines, keys = _structure_problems(cls)
    if lines:
        head = f"{name}: the structure of `{_fn_name(cls)}` differs from nn.BatchNorm1d's:"
        raise ExerciseError("\n".join([head, *(f"- {line}" for line in lines)]), keys)

    def run(xs, x_eval, eps, momentum, gamma, beta, r):
        try:
            return _module_protocol(cls, xs, x_eval, eps, momentum, gamma, beta, r)
        except RuntimeError as exc:
            if xs[0].dim() > 2:
                raise RuntimeError(f"{exc}. For (N, C, L) inputs, reduce over dims (0, 2) and "
                                   f"reshape (C,) vectors to (1, C, 1)") from exc
            raise

    run.__name__ = _fn_name(cls)
    check_function(
        run, _module_reference, _module_cases(), _MODULE_MISTAKES, _MODULE_HINTS,
        name=name, outputs=_MODULE_OUTPUTS,
        advice="compare with nn.BatchNorm1d step by step in float64: one training forward, "
               "then the buffers, then eval mode.",
    )
    problems = _state_dict_round_trip(cls)
    if problems:
        raise ExerciseError("\n".join([f"{name}: the values match, but:", *problems]),
                            ["state_dict_interchange"])
    print(f"{name}: state_dict loads into nn.BatchNorm1d and back, with equal eval outputs.")
