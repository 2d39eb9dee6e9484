"""check_noisy_bn_forward (notebook 03): noisy BN's training forward, with the noise given.

The oracle is the package's layer, :class:`bncourse.nn.NoisyBatchNorm`, in float64 and training
mode, with its random draw replaced by the exercise's ``scale`` and ``shift`` (so the check is
deterministic). The catalogue's variants are built on :func:`bncourse.functional.batchnorm_forward`
with the noise applied in the wrong place or the wrong statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks._inputs import _TINY, _bn_inputs, _ch, _label
from bncourse.checks.engine import SEED, Case, Mistake, check_function, with_solution
from bncourse.functional import batchnorm_forward

__all__ = ["check_noisy_bn_forward"]


def _noisy_reference(x, gamma, beta, scale, shift, eps=1e-5):
    import torch

    from bncourse.nn import NoisyBatchNorm

    class _GivenNoise(NoisyBatchNorm):
        def sample_noise(self, like):
            return (torch.as_tensor(scale, dtype=like.dtype), torch.as_tensor(shift,
                                                                              dtype=like.dtype))

    layer = _GivenNoise(x.shape[1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(gamma))
        layer.bias.copy_(torch.as_tensor(beta))
        return layer.train()(torch.as_tensor(x)).numpy()


def _bn(x, gamma, beta, eps):
    return batchnorm_forward(x, gamma, beta, training=True, eps=eps)[0]


def _x_hat_with(x, eps, axes, ddof=0):
    mu = x.mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=axes, ddof=ddof, keepdims=True) + eps)


def _noise_after(x_hat_fn):
    """The right noise on a BN whose x_hat comes from ``x_hat_fn(x, eps)``."""
    def forward(x, gamma, beta, scale, shift, eps=1e-5):
        y = _ch(gamma, x.ndim) * x_hat_fn(x, eps) + _ch(beta, x.ndim)
        return _ch(scale, x.ndim) * y + _ch(shift, x.ndim)
    return forward


def _no_noise(x, gamma, beta, scale, shift, eps=1e-5):
    return _bn(x, gamma, beta, eps)


def _noise_on_input(x, gamma, beta, scale, shift, eps=1e-5):
    return _bn(_ch(scale, x.ndim) * x + _ch(shift, x.ndim), gamma, beta, eps)


def _noise_before_affine(x, gamma, beta, scale, shift, eps=1e-5):
    noisy_x_hat = _ch(scale, x.ndim) * _bn(x, None, None, eps) + _ch(shift, x.ndim)
    return _ch(gamma, x.ndim) * noisy_x_hat + _ch(beta, x.ndim)


def _shift_before_scale(x, gamma, beta, scale, shift, eps=1e-5):
    return _ch(scale, x.ndim) * (_bn(x, gamma, beta, eps) + _ch(shift, x.ndim))


def _noise_swapped(x, gamma, beta, scale, shift, eps=1e-5):
    return _ch(shift, x.ndim) * _bn(x, gamma, beta, eps) + _ch(scale, x.ndim)


_NOISY_MISTAKES = (
    Mistake("no_noise",
            "The output is plain BN: the noise is missing.",
            "Apply the noise to BN's output: multiply by `scale` and add `shift` after "
            "gamma and beta.",
            _no_noise),
    Mistake("noise_on_input",
            "The noise is applied to x, before normalizing: BN's own batch mean and variance "
            "then remove it again (all but a trace through eps), so the layer sees no shift.",
            "Apply the noise to BN's output: scale * (gamma * x_hat + beta) + shift.",
            _noise_on_input),
    Mistake("noise_before_affine",
            "The noise is applied to x_hat, before gamma and beta. Noisy BN puts it after the "
            "whole BN layer, so that the learned gamma and beta cannot undo it.",
            "First y = gamma * x_hat + beta, then scale * y + shift.",
            _noise_before_affine),
    Mistake("shift_before_scale",
            "The shift is added before the scale multiplies, so it gets scaled too.",
            "Multiply BN's output by `scale` first, then add `shift`.",
            _shift_before_scale),
    Mistake("noise_swapped",
            "`scale` and `shift` are swapped: you multiply by the shift and add the scale.",
            "scale multiplies, shift is added.",
            _noise_swapped),
    Mistake("unbiased_variance",
            "The batch is normalized with the unbiased variance (divided by m - 1). Noisy BN "
            "normalizes exactly as BN does, with the biased batch variance.",
            "Use np.var with ddof=0 over every axis but 1.",
            _noise_after(lambda x, eps: _x_hat_with(x, eps, (0, *range(2, x.ndim)), ddof=1))),
    Mistake("axis0_stats",
            "The statistics are taken over axis 0 only: for (N, C, L) input each position gets "
            "its own mean and variance, where BN shares them across a channel's positions.",
            "Reduce over every axis but 1: axis=(0, 2) for (N, C, L).",
            _noise_after(lambda x, eps: _x_hat_with(x, eps, 0))),
)


def _noisy_cases() -> list[Case]:
    rng = np.random.default_rng(SEED + 12)
    cases = []
    for shape, eps in [((16, 5), 1e-5), ((6, 4, 7), 1e-5), ((8, 3, 5), 1e-3)]:
        x, gamma, beta = _bn_inputs(rng, shape)
        c = shape[1]
        # a step's scale and shift, far from 1 and 0 and different per channel, so that the
        # order of the operations shows
        scale = rng.uniform(0.6, 1.6, c)
        shift = rng.choice([-1.0, 1.0], c) * rng.uniform(0.3, 1.5, c)
        cases.append(Case(_label(shape, eps=eps), (x, gamma, beta, scale, shift),
                          kwargs={"eps": eps}, channel_notes={c // 2: _TINY}))
    return cases


@with_solution(_noisy_reference)
def check_noisy_bn_forward(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, gamma, beta, scale, shift, eps=1e-5) -> out``: noisy BN's training-mode
    forward (Santurkar et al. 2018), as :class:`bncourse.nn.NoisyBatchNorm` computes it.

    ``x`` is (N, C) or (N, C, L); ``gamma``, ``beta``, ``scale`` and ``shift`` are (C,), the
    last two one step's noise (the same for every example). ``out`` has the shape of ``x``::

        x_hat = (x - mean) / sqrt(var + eps)      # per channel, biased batch variance
        out   = scale * (gamma * x_hat + beta) + shift

    Three cases, (N, C) and (N, C, L), with one channel of tiny variance and noise far from
    (1, 0). On success prints one deterministic line.

    Raises:
        ExerciseError: with a diagnosis when ``fn`` is wrong.
    """
    check_function(
        fn, _noisy_reference, _noisy_cases(), _NOISY_MISTAKES,
        name="check_noisy_bn_forward",
        advice="normalize as BN does (per channel, biased variance, eps inside the root), "
               "apply gamma and beta, then multiply by scale and add shift; reshape each (C,) "
               "array to (1, C) or (1, C, 1).",
    )
