"""Inputs shared by the batch-norm checkers: batches built so that the known mistakes show."""

from __future__ import annotations

import numpy as np

_TINY = "channel with a tiny variance (~1e-4, where eps matters most)"


def _ch(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C, 1, ...)."""
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _bn_inputs(rng: np.random.Generator, shape: tuple[int, ...]):
    """x with a per-channel mean and scale, one channel (C // 2) with variance ~1e-4;
    gamma in [1.5, 3], beta of either sign with |beta| in [0.5, 2]."""
    c = shape[1]
    scale = rng.uniform(0.5, 4.0, c)
    scale[c // 2] = 1e-2
    x = _ch(rng.uniform(-3, 3, c), len(shape)) + _ch(scale, len(shape)) * rng.standard_normal(shape)
    gamma = rng.uniform(1.5, 3.0, c)
    beta = rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.0, c)
    return x, gamma, beta


def _label(shape: tuple[int, ...], **extra) -> str:
    dims = "(N, C)" if len(shape) == 2 else "(N, C, L)"
    more = "".join(f", {k}={v:g}" for k, v in extra.items())
    return f"\"x of shape {dims} = {shape}{more}\""
