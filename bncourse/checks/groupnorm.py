"""check_groupnorm_forward (notebook 08): group normalization of a conv input, in numpy.

The oracle is :func:`bncourse.functional.groupnorm_forward` (equal to ``torch.nn.GroupNorm`` in
float64). The catalogue's variants standardize over the wrong set of values, or with the wrong
variance, each written as the learner would (:func:`_gn_variant`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import groupnorm_forward

__all__ = ["check_groupnorm_forward"]


def _groupnorm_reference(x, gamma, beta, num_groups, eps=1e-5):
    return groupnorm_forward(x, gamma, beta, num_groups, eps)[0]


def _affine(x_hat, gamma, beta):
    shape = (1, -1) + (1,) * (x_hat.ndim - 2)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape)


def _standardize(v, axes, eps, ddof=0, eps_outside=False):
    mu = v.mean(axis=axes, keepdims=True)
    var = v.var(axis=axes, keepdims=True, ddof=ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return (v - mu) / std


def _gn_variant(view, axes, *, ddof=0, eps_outside=False):
    """Standardize ``view(x, G)`` (undone by reshaping back, or by the view's inverse) over
    ``axes(ndim)``, then the per-channel affine map."""
    def fn(x, gamma, beta, num_groups, eps=1e-5):
        v, back = view(x, num_groups)
        x_hat = back(_standardize(v, axes(v.ndim), eps, ddof, eps_outside))
        return _affine(x_hat, gamma, beta)
    return fn


def _consecutive(x, g):
    n, c = x.shape[:2]
    return x.reshape(n, g, c // g, *x.shape[2:]), lambda v: v.reshape(x.shape)


def _strided(x, g):
    # channel c in group c % G: the (N, C/G, G, ...) view, groups on axis 2
    n, c = x.shape[:2]
    return x.reshape(n, c // g, g, *x.shape[2:]), lambda v: v.reshape(x.shape)


def _plain(x, g):
    return x, lambda v: v


def _within_group(ndim):          # on the (N, G, C/G, *) view: the group's channels and positions
    return tuple(range(2, ndim))


def _strided_group(ndim):         # on the (N, C/G, G, *) view: axis 1 and the positions
    return (1, *range(3, ndim))


_GROUPS = ("split the C channels into G groups of C/G consecutive channels: "
           "x.reshape(N, G, C // G, *spatial), standardize over axes (2, 3, ...), reshape back")

_GROUPNORM_MISTAKES = (
    Mistake("strided_groups",
            "The groups are strided: channel c goes to group c % G (a reshape to "
            "(N, C // G, G, ...)). GroupNorm's groups are blocks of consecutive channels: "
            "channels 0 .. C/G - 1 form group 0.",
            "Reshape to (N, G, C // G, *spatial): the group axis before the channels within it.",
            _gn_variant(_strided, _strided_group)),
    Mistake("instance",
            "The statistics are per channel (over the positions only): that is instance norm, "
            "GroupNorm with G = C.",
            "Pool the C/G channels of a group together: " + _GROUPS + ".",
            _gn_variant(_plain, lambda ndim: tuple(range(2, ndim)))),
    Mistake("layer",
            "The statistics are over the whole example (all channels and positions): that is "
            "layer norm, GroupNorm with G = 1.",
            "Give each group its own statistics: " + _GROUPS + ".",
            _gn_variant(_plain, lambda ndim: tuple(range(1, ndim)))),
    Mistake("batch",
            "The statistics of a group are shared by the whole batch (taken over axis 0 too). "
            "GroupNorm never looks at the batch: each example gets its own.",
            "Keep axis 0 out of the reduction: on the (N, G, C // G, ...) view, axes "
            "(2, 3, ...).",
            _gn_variant(_consecutive, lambda ndim: (0, *range(2, ndim)))),
    Mistake("unbiased",
            "The variance is the unbiased one (divided by m - 1, m the values in a group). "
            "GroupNorm, like torch.nn.GroupNorm, divides by m.",
            "Use np.var with ddof=0 (the default), or the mean of the squared deviations.",
            _gn_variant(_consecutive, _within_group, ddof=1)),
    Mistake("eps_outside_root",
            "eps is added to the standard deviation, sqrt(var) + eps, instead of to the "
            "variance; it shows in the group with a tiny variance (~1e-4).",
            "Divide by np.sqrt(var + eps).",
            _gn_variant(_consecutive, _within_group, eps_outside=True)),
)


def _groupnorm_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 81)
    cases = []
    for shape, groups, eps in [((4, 6, 7), 2, 1e-5), ((3, 8, 5), 4, 1e-5),
                               ((5, 6, 4), 3, 1e-3), ((6, 8), 2, 1e-5)]:
        c = shape[1]
        # offsets and scales per channel and per example: every grouping gives other statistics;
        # the last group of example 0 has a tiny variance, where eps matters
        ch = (1, c) + (1,) * (len(shape) - 2)               # per channel
        ex = (shape[0],) + (1,) * (len(shape) - 1)          # per example
        scale = rng.uniform(0.5, 3.0, ch) * rng.uniform(0.5, 2.0, ex)
        x = rng.uniform(-3, 3, ch) + rng.uniform(-1, 1, ex) + scale * rng.standard_normal(shape)
        x[0, c - c // groups:] = 0.5 + 1e-2 * rng.standard_normal((c // groups, *shape[2:]))
        gamma = rng.uniform(1.5, 3.0, c)
        beta = rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c)
        dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
        cases.append(Case(f"\"x of shape {dims} = {shape}, num_groups={groups}, eps={eps:g}\"",
                          (x, gamma, beta, groups), {"eps": eps}))
    return cases


@with_solution(_groupnorm_reference)
def check_groupnorm_forward(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, gamma, beta, num_groups, eps=1e-5) -> out``: group normalization, as
    ``torch.nn.GroupNorm(num_groups, C)``.

    ``x`` is an (N, C, L) or (N, C) float64 array; the C channels of each example are split into
    ``num_groups`` groups of C / num_groups consecutive channels, each group standardized over
    its channels and positions (mean and biased variance, eps added to the variance), then
    scaled and shifted per channel by the (C,) arrays ``gamma`` and ``beta``. ``out`` has the
    shape of ``x``. Four cases with 2 to 4 groups, one group of tiny variance. On success prints
    one line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _groupnorm_reference, _groupnorm_cases(), _GROUPNORM_MISTAKES,
        name="check_groupnorm_forward",
        advice=_GROUPS + "; then out = gamma * x_hat + beta with gamma and beta reshaped to "
               "(1, C, 1).",
    )
