"""Numerical gradients by central differences, and the relative error used to compare them.

Use float64: with ``h = 1e-5`` the truncation error is O(h^2) ~ 1e-10 and the round-off error
O(eps_machine / h) ~ 1e-11, so a correct analytic gradient agrees to about 1e-8 or better.
In float32 the round-off term alone is ~1e-2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["numerical_gradient", "rel_error"]


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of ``L(x) = sum(f(x) * dout)`` with respect to ``x`` by central differences.

    ``dout`` plays the upstream gradient dL/df, so the result approximates the vector-Jacobian
    product ``dout^T df/dx``. Pick a *random* ``dout``: with ``dout = 1`` a batch-norm ``dx``
    sums to zero per channel and whole classes of bugs vanish.

    Args:
        f: maps an array shaped like ``x`` to an array shaped like ``dout``.
        x: the point, perturbed in place one entry at a time and restored.
        dout: upstream gradient.
        h: step. Default: 1e-5.

    Returns:
        An array shaped like ``x``: ``(L(x + h e_i) - L(x - h e_i)) / (2 h)`` for each entry i.
    """
    if h <= 0:
        raise ValueError(f"expected h > 0 (got h={h})")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.sum(f(x) * dout)
        x[i] = old - h
        minus = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b) -> float:
    """``max |a - b| / max(|a| + |b|, 1e-8)``, elementwise: scale-free, 0 when equal."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"expected arrays of the same shape (got {a.shape} and {b.shape})")
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0))
