"""check_fold_conv1d_bn (notebook 06): folding an eval-mode BN into the Conv1d layer before it.

The reference is the package's own fold, :func:`bncourse.nn.fold_batchnorm`, applied to a float64
``nn.Conv1d`` + ``nn.BatchNorm1d`` pair holding the case's arrays. The catalogue's variants
compute the fold in numpy with one bug each (:func:`_conv_variant`). Two mistakes cannot be
written as a variant, because the learner's function does not return numbers: crashing on a
convolution without a bias, and returning ``None`` as the folded bias. A pre-check names them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY
from bncourse.checks.engine import (
    SEED,
    Case,
    ExerciseError,
    Mistake,
    check_function,
    with_solution,
)

__all__ = ["check_fold_conv1d_bn"]

_NAME = "check_fold_conv1d_bn"


def _fold_conv_reference(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """The Conv1d layer equal to eval-mode BN after ``conv(x; weight, bias)``, as numpy arrays.

    Args:
        weight: (C_out, C_in, k) convolution weight.
        bias: (C_out,) convolution bias, or ``None`` for a convolution built with ``bias=False``.
        gamma, beta, running_mean, running_var: (C_out,) arrays of the BN.
        eps: the BN's eps.

    Returns:
        ``(W_folded, b_folded)`` of shapes (C_out, C_in, k) and (C_out,): every weight of output
        channel c scaled by ``s_c = gamma_c / sqrt(running_var_c + eps)``, and the bias
        ``s * (bias - running_mean) + beta`` (a missing bias counts as zeros). Computed by
        :func:`bncourse.nn.fold_batchnorm`.
    """
    import torch
    from torch import nn

    from bncourse.nn import fold_batchnorm

    c_out, c_in, k = weight.shape
    conv = nn.Conv1d(c_in, c_out, k, bias=bias is not None)
    bn = nn.BatchNorm1d(c_out, eps=eps)
    pair = nn.Sequential(conv, bn).double().eval()
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight))
        if bias is not None:
            conv.bias.copy_(torch.as_tensor(bias))
        for tensor, value in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, running_mean),
                              (bn.running_var, running_var)):
            tensor.copy_(torch.as_tensor(value))
    folded = fold_batchnorm(pair)[0]
    return folded.weight.detach().numpy().copy(), folded.bias.detach().numpy().copy()


def _conv_variant(*, scale=None, input_axis=False, bias_fn=None, no_bias=None):
    """The fold in numpy with one bug: ``scale(gamma, var, eps) -> s``; ``input_axis=True``
    scales along the input channels; ``bias_fn(s, b, beta, mean) -> b'``; ``no_bias(s, beta,
    mean) -> b'`` where the convolution has no bias."""
    def fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = (gamma / np.sqrt(running_var + eps) if scale is None
             else scale(gamma, running_var, eps))
        # s[:, None] is (C_out, 1): against a (C_out, C_in, k) weight it lines up with (C_in, k)
        w = weight * s[:, None] if input_axis else weight * s[:, None, None]
        if bias is None and no_bias is not None:
            return w, no_bias(s, beta, running_mean)
        b = np.zeros_like(running_mean) if bias is None else bias
        b_folded = s * (b - running_mean) + beta if bias_fn is None else bias_fn(
            s, b, beta, running_mean)
        return w, b_folded
    return fn


_FIX_SCALE = "s = gamma / np.sqrt(running_var + eps)."
_FIX_BIAS = ("b_folded = s * (b - running_mean) + beta, with b = bias, or zeros where bias is "
             "None.")

_CONV_MISTAKES = (
    Mistake("forgot_eps",
            "The scale divides by sqrt(running_var): eps is missing. Eval-mode BN divides by "
            "sqrt(running_var + eps), and for a channel with a small running variance the "
            "difference is large.",
            _FIX_SCALE,
            _conv_variant(scale=lambda g, v, e: g / np.sqrt(v))),
    Mistake("std_not_inverse",
            "The scale multiplies by the standard deviation, gamma * sqrt(running_var + eps); "
            "BN divides by it.",
            _FIX_SCALE,
            _conv_variant(scale=lambda g, v, e: g * np.sqrt(v + e))),
    Mistake("forgot_gamma",
            "The scale is 1 / sqrt(running_var + eps): gamma is missing.",
            _FIX_SCALE,
            _conv_variant(scale=lambda g, v, e: 1.0 / np.sqrt(v + e))),
    Mistake("scaled_input_channels",
            "The weight is scaled along its input-channel axis (axis 1), not its output-channel "
            "axis (axis 0). A (C_out, 1) array such as s[:, None] broadcasts against the last "
            "two axes (C_in, k) of a 3-D weight, so it scales input channels, as s[None, :, None] "
            "does. BN acts on the layer's outputs: every weight of output channel c gets s_c. "
            "(Every case has C_in = C_out, so both broadcast; otherwise this raises a shape "
            "error.)",
            "W_folded = weight * s.reshape(-1, 1, 1) (or s[:, None, None]).",
            _conv_variant(input_axis=True)),
    Mistake("forgot_running_mean",
            "The bias leaves out the running mean: s * b + beta. BN subtracts running_mean "
            "before scaling.",
            _FIX_BIAS,
            _conv_variant(bias_fn=lambda s, b, beta, m: s * b + beta)),
    Mistake("mean_after_scaling",
            "The running mean is subtracted after scaling, unscaled: s * b - running_mean + "
            "beta. BN subtracts it from the convolution's output first, so it is scaled by s "
            "like the bias.",
            _FIX_BIAS,
            _conv_variant(bias_fn=lambda s, b, beta, m: s * b - m + beta)),
    Mistake("unscaled_layer_bias",
            "The convolution's own bias is added unscaled: b + beta - s * running_mean. It "
            "passes through BN's scale like the rest of the convolution's output.",
            _FIX_BIAS,
            _conv_variant(bias_fn=lambda s, b, beta, m: b + beta - s * m)),
    Mistake("forgot_beta",
            "The bias leaves out beta: s * (b - running_mean).",
            _FIX_BIAS,
            _conv_variant(bias_fn=lambda s, b, beta, m: s * (b - m))),
    Mistake("no_bias_beta_only",
            "Without a convolution bias you return beta alone as the folded bias. There is no "
            "bias to fold, but BN still subtracts the running mean: the folded layer needs the "
            "bias -s * running_mean + beta.",
            "treat a missing bias as zeros: b = np.zeros_like(running_mean) if bias is None "
            "else bias.",
            _conv_variant(no_bias=lambda s, beta, m: beta)),
)


def _conv_cases() -> list[Case]:
    """C_in = C_out (so an input/output axis mix-up broadcasts and can be named); running means
    far from 0, gamma and beta far from 1 and 0; the second case's convolution has no bias;
    channel C // 2 has a tiny running variance (~1e-4), where eps changes the scale by ~5%."""
    rng = np.random.default_rng(SEED + 16)
    cases = []
    for c, k, has_bias, eps in [(4, 3, True, 1e-5), (6, 5, False, 1e-3), (5, 3, True, 1e-5)]:
        var = rng.uniform(0.5, 4.0, c)
        var[c // 2] = 1e-4
        weight = rng.normal(size=(c, c, k))
        bias = rng.uniform(-2, 2, c) if has_bias else None
        args = (weight, bias, rng.uniform(1.5, 3.0, c),
                rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c), rng.uniform(-3, 3, c), var)
        label = (f"\"Conv1d({c}, {c}, kernel_size={k}{'' if has_bias else ', bias=False'}) + "
                 f"BatchNorm1d({c}), eps={eps:g}\"")
        cases.append(Case(label, args, {"eps": eps}, channel_notes={c // 2: _TINY}))
    return cases


def _check_missing_bias(fn: Callable[..., Any], cases: list[Case]) -> None:
    """Names the two ways of mishandling ``bias=None`` that return no numbers to compare."""
    case = next(c for c in cases if c.args[1] is None)
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        out = fn(*copy.deepcopy(case.args), **dict(case.kwargs))
    except TypeError as exc:
        if "NoneType" not in str(exc):
            return  # another problem: the engine reports it
        raise ExerciseError(
            f"{_NAME}: `{name}` raised TypeError: {exc} (case {case.label}).\n"
            f"- expected a convolution without a bias (`bias=None`, as a Conv1d built with "
            f"bias=False, the usual choice before BN) to be folded too (got an arithmetic on "
            f"None). Fix: treat a missing bias as zeros: b = np.zeros_like(running_mean) if "
            f"bias is None else bias.", ("bias_none_crash",)) from None
    except Exception:  # noqa: BLE001 -- the engine reports every other failure
        return
    if isinstance(out, (tuple, list)) and len(out) == 2 and out[1] is None:
        raise ExerciseError(
            f"{_NAME}: `{name}` returned None as `b_folded` (case {case.label}).\n"
            f"- expected an array of shape (C_out,) (got None): the convolution has no bias, but "
            f"the folded one needs one, since BN shifts every channel by beta - s * "
            f"running_mean. Fix: treat a missing bias as zeros: b = np.zeros_like(running_mean) "
            f"if bias is None else bias.", ("bias_none_kept",))


@with_solution(_fold_conv_reference)
def check_fold_conv1d_bn(fn: Callable[..., Any]) -> None:
    """Check ``fn(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5)``: the weight
    (C_out, C_in, k) and bias (C_out,) of one Conv1d layer with an eval-mode BN folded into it.

    ``bias`` is a (C_out,) array or ``None`` (a convolution built with ``bias=False``); the
    folded layer always has a bias. With ``s = gamma / sqrt(running_var + eps)``::

        W_folded[c] = s[c] * weight[c]                  # every weight of output channel c
        b_folded = s * (bias - running_mean) + beta     # bias = 0 where it is None

    ``fn`` must return ``(W_folded, b_folded)`` as numpy arrays and leave its inputs unchanged.
    Three float64 cases (C_in = C_out, one without a conv bias) with a channel of tiny running
    variance, compared with :func:`bncourse.nn.fold_batchnorm`.

    Raises:
        ExerciseError: naming the mistake (input channels scaled instead of output channels, a
            missing bias crashing or left ``None``, eps forgotten, the running mean subtracted
            after scaling or left out, ...).
    """
    cases = _conv_cases()
    _check_missing_bias(fn, cases)
    check_function(
        fn, _fold_conv_reference, cases, _CONV_MISTAKES,
        name=_NAME, outputs=("W_folded", "b_folded"),
        advice="eval-mode BN of the convolution's output z is s * (z - running_mean) + beta, "
               "one scale s per output channel; z is linear in the weight plus the bias, so "
               "the weight of output channel c picks up s_c, and the rest is the new bias.",
    )
