"""Batch normalization in numpy: the reference the course builds, and the oracle its checkers use.

Shapes: ``x`` is (N, C) or (N, C, *spatial). Statistics are per channel (axis 1), taken over the
``m = N * prod(spatial)`` values of every other axis. ``gamma``, ``beta`` and the running arrays
are (C,).

Training mode::

    mu    = mean(x)                      # (C,)
    var   = mean((x - mu) ** 2)          # (C,) biased: divides by m
    x_hat = (x - mu) / sqrt(var + eps)
    out   = gamma * x_hat + beta

and, when running arrays are given, they are updated in place with PyTorch's rule (``momentum``
weights the new batch; the stored variance is the unbiased one, ``var * m / (m - 1)``)::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

Eval mode uses ``running_mean`` and ``running_var`` in place of ``mu`` and ``var``.

Where other references differ:

* CS231n's assignment stores the *biased* batch variance in ``running_var`` and calls the
  weight of the *old* value ``momentum`` (default 0.9, i.e. PyTorch's 0.1).
* Keras ``BatchNormalization(momentum=0.99)`` also weights the old value, and stores the biased
  variance; its default ``epsilon`` is 1e-3, not 1e-5.
* fastai's library layers wrap PyTorch's, so they share its conventions; the from-scratch
  ``BatchNorm`` of its 2019 course (lesson 10) lerps with ``mom=0.1`` weighting the new batch,
  but takes ``x.var()`` with torch's default *unbiased* estimator and normalizes with it too,
  and computes the statistics under ``no_grad``.

NaN inputs are propagated as PyTorch propagates them (the affected channel's statistics and
outputs become NaN); they are not reported.

**The normalization family is one operation over different axes.** :func:`normalize`
standardizes ``x`` over a set of axes; the layers differ only in which (:func:`norm_axes`), for an
(N, C, L) input::

    batch norm     over N and L, per channel      axes (0, 2)        statistics shape (1, C, 1)
    layer norm     over C and L, per example      axes (1, 2)        statistics shape (N, 1, 1)
    instance norm  over L, per example & channel  axes (2,)          statistics shape (N, C, 1)
    group norm     over C/G and L, per example & group, on the (N, G, C/G, L) view: axes (2, 3)

and then a learned affine map (per channel; layer norm's is per element of the normalized
shape). :func:`layernorm_forward` and :func:`groupnorm_forward` (instance norm is group norm with
G = C) are built on it, with closed-form backward passes (:func:`normalize_backward`).
"""

from __future__ import annotations

import numpy as np

from bncourse._validation import check_eps, check_input_shape, check_momentum, check_param_shape

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_compact",
    "update_running_average",
    "NORM_KINDS",
    "norm_axes",
    "normalize",
    "normalize_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
]


def _reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis except the channel axis 1."""
    return (0, *range(2, x.ndim))


def _as_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C, 1, ..., 1), ready to broadcast against an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _check_array(name: str, a) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"expected {name} to be a numpy array (got {type(a).__name__})")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"expected {name} with a floating dtype (got {a.dtype})")
    return a


def update_running_average(running: np.ndarray, batch_value: np.ndarray | float,
                           momentum: float) -> np.ndarray:
    """PyTorch's running-statistics update, in place:
    ``running = (1 - momentum) * running + momentum * batch_value`` (``momentum`` weights the
    *new* value; CS231n and Keras call ``1 - momentum`` the momentum). Returns ``running``."""
    running *= 1 - momentum
    running += momentum * batch_value
    return running


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    training: bool,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Batch normalization forward pass, as a staged graph whose nodes the backward pass reuses.

    Args:
        x: (N, C) or (N, C, *spatial), floating dtype.
        gamma, beta: (C,) scale and shift, or ``None`` for 1 and 0 (``affine=False``).
        training: normalize with batch statistics (and update the running arrays if given);
            otherwise with ``running_mean`` and ``running_var``, which are then required.
        running_mean, running_var: (C,) arrays updated **in place** in training.
        momentum: weight of the new batch in the running averages, in [0, 1].
        eps: added to the variance before the square root, > 0.

    Returns:
        ``(out, cache)``: ``out`` has the shape of ``x``; ``cache`` is a dict of the graph's nodes
        (``x``, ``mu``, ``xmu``, ``sq``, ``var``, ``std``, ``inv_std``, ``x_hat``, ``gamma``,
        ``eps``, ``axes``, ``m``, ``training``), each statistic kept with shape (1, C, 1, ...).
    """
    x = _check_array("x", x)
    check_eps(eps)
    check_momentum(momentum, allow_none=False)
    check_input_shape(x.shape, None, training=training)
    if training and x.size == 0:
        raise ValueError(f"expected a non-empty batch in training (got shape {x.shape})")
    num_channels = x.shape[1]
    for name, arr in (("gamma", gamma), ("beta", beta),
                      ("running_mean", running_mean), ("running_var", running_var)):
        if arr is not None:
            check_param_shape(name, _check_array(name, arr).shape, num_channels)
    if (running_mean is None) != (running_var is None):
        raise ValueError("expected running_mean and running_var both given or both None")
    if not training and running_mean is None:
        raise ValueError("expected running_mean and running_var in eval mode (got None)")

    axes = _reduce_axes(x)
    m = x.size // num_channels                       # values per channel: N * prod(spatial)
    gamma_b = _as_channel(gamma if gamma is not None else np.ones(num_channels, x.dtype), x.ndim)
    beta_b = _as_channel(beta if beta is not None else np.zeros(num_channels, x.dtype), x.ndim)

    if training:
        mu = x.mean(axis=axes, keepdims=True)        # (1, C, 1...)
        xmu = x - mu                                 # (N, C, *)
        sq = xmu**2                                  # (N, C, *)
        var = sq.mean(axis=axes, keepdims=True)      # (1, C, 1...) biased
        if running_mean is not None:
            update_running_average(running_mean, mu.reshape(-1), momentum)
            update_running_average(running_var, var.reshape(-1) * (m / (m - 1)), momentum)
    else:
        mu = _as_channel(running_mean, x.ndim).astype(x.dtype, copy=False)
        xmu = x - mu
        sq = None
        var = _as_channel(running_var, x.ndim).astype(x.dtype, copy=False)
    std = np.sqrt(var + eps)                         # (1, C, 1...)
    inv_std = 1.0 / std
    x_hat = xmu * inv_std                            # (N, C, *)
    out = gamma_b * x_hat + beta_b

    cache = dict(x=x, mu=mu, xmu=xmu, sq=sq, var=var, std=std, inv_std=inv_std, x_hat=x_hat,
                 gamma=gamma_b, eps=eps, axes=axes, m=m, training=training)
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, ...]:
    """Backward pass node by node through the staged graph of :func:`batchnorm_forward`.

    Args:
        dout: upstream gradient dL/dout, shape of ``x``.
        cache: from :func:`batchnorm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes of ``x``, (C,), (C,).
    """
    axes, m = cache["axes"], cache["m"]
    xmu, std, inv_std, x_hat = cache["xmu"], cache["std"], cache["inv_std"], cache["x_hat"]

    dbeta = dout.sum(axis=axes)                      # out = gamma * x_hat + beta
    dgamma = (dout * x_hat).sum(axis=axes)
    dx_hat = dout * cache["gamma"]
    dxmu = dx_hat * inv_std                          # x_hat = xmu * inv_std, path through xmu
    if not cache["training"]:                        # mu and var are constants in eval mode
        return dxmu, dgamma, dbeta
    dinv_std = (dx_hat * xmu).sum(axis=axes, keepdims=True)   # ... and through inv_std
    dstd = -dinv_std / std**2                        # inv_std = 1 / std
    dvar = 0.5 * dstd / std                          # std = sqrt(var + eps)
    dsq = np.broadcast_to(dvar / m, xmu.shape)       # var = mean(sq)
    dxmu = dxmu + 2 * xmu * dsq                      # sq = xmu ** 2
    dmu = -dxmu.sum(axis=axes, keepdims=True)        # xmu = x - mu
    dx = dxmu + dmu / m                              # mu = mean(x)
    return dx, dgamma, dbeta


def batchnorm_backward_compact(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, ...]:
    """The same gradients in closed form, with two reductions instead of a dozen nodes.

    In training::

        dx = gamma / (m * std) * (m * dout - sum(dout) - x_hat * sum(dout * x_hat))

    (sums per channel over the reduced axes); in eval mode ``dx = gamma / std * dout``.
    """
    axes, m = cache["axes"], cache["m"]
    x_hat, inv_std, gamma = cache["x_hat"], cache["inv_std"], cache["gamma"]
    scale = gamma * inv_std                          # (1, C, 1...)
    dbeta = dout.sum(axis=axes, keepdims=True)
    scratch = dout * x_hat                           # (N, C, *), reused below
    dgamma = scratch.sum(axis=axes, keepdims=True)
    dx = dout * scale
    if cache["training"]:
        dx -= np.multiply(x_hat, dgamma * (scale / m), out=scratch)
        dx -= dbeta * (scale / m)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


# --------------------------------------------------------------------------------------------
# The normalization family: one standardization, different axes
# --------------------------------------------------------------------------------------------

NORM_KINDS = ("batch", "layer", "instance", "group")


def norm_axes(kind: str, ndim: int) -> tuple[int, ...]:
    """The axes ``kind`` of normalization averages over, for an input of ``ndim`` dims.

    ``batch``, ``layer`` and ``instance`` refer to an (N, C, *spatial) input (layer norm as
    ``nn.LayerNorm((C, *spatial))``); ``group`` to the grouped (N, G, C // G, *spatial) view, so
    ``ndim`` counts the extra axis there.

    >>> norm_axes("batch", 3), norm_axes("layer", 3), norm_axes("instance", 3)
    ((0, 2), (1, 2), (2,))
    >>> norm_axes("group", 4)
    (2, 3)
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"expected kind to be one of {NORM_KINDS} (got {kind!r})")
    first = {"batch": None, "layer": 1, "instance": 2, "group": 2}[kind]
    if kind == "batch":
        return (0, *range(2, ndim))
    return tuple(range(first, ndim))


def normalize(x: np.ndarray, axes: tuple[int, ...], eps: float = 1e-5
              ) -> tuple[np.ndarray, dict]:
    """Standardizes ``x`` over ``axes``: ``x_hat = (x - mean) / sqrt(var + eps)``, with the
    biased variance; the statistics broadcast (kept dims).

    Returns:
        ``(x_hat, cache)``; ``cache`` holds ``x_hat``, ``inv_std``, ``axes`` and ``m``, the
        number of values each statistic is taken over.
    """
    x = _check_array("x", x)
    check_eps(eps)
    m = int(np.prod([x.shape[a] for a in axes]))
    if m == 0:
        raise ValueError(f"expected values to normalize over axes {axes} (got shape {x.shape})")
    mu = x.mean(axis=axes, keepdims=True)
    xmu = x - mu
    var = (xmu * xmu).mean(axis=axes, keepdims=True)        # biased
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = xmu * inv_std
    return x_hat, dict(x_hat=x_hat, inv_std=inv_std, axes=tuple(axes), m=m)


def normalize_backward(dx_hat: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient through :func:`normalize`, in closed form::

        dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))

    with the means over the normalized axes (the batch-norm formula with gamma = 1).
    """
    axes, x_hat = cache["axes"], cache["x_hat"]
    mean_dx_hat = dx_hat.mean(axis=axes, keepdims=True)
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    return cache["inv_std"] * (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat)


def _check_affine(name: str, a, shape: tuple[int, ...]) -> None:
    if a is not None and tuple(_check_array(name, a).shape) != tuple(shape):
        raise ValueError(f"expected {name} of shape {tuple(shape)} (got {tuple(a.shape)})")


def layernorm_forward(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None,
                      normalized_ndim: int = 1, eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Layer normalization, as ``torch.nn.LayerNorm(x.shape[-normalized_ndim:])``: every
    example is standardized over its last ``normalized_ndim`` axes, then scaled and shifted
    element-wise. No running statistics: training and eval mode are the same.

    Args:
        x: (*, *normalized_shape), floating dtype.
        gamma, beta: of ``normalized_shape``, or ``None`` for 1 and 0.
        normalized_ndim: how many trailing axes form ``normalized_shape``, >= 1.
        eps: added to the variance, > 0.

    Returns:
        ``(out, cache)``, ``out`` shaped like ``x``.
    """
    x = _check_array("x", x)
    if not (isinstance(normalized_ndim, int) and 1 <= normalized_ndim <= x.ndim):
        raise ValueError(f"expected 1 <= normalized_ndim <= x.ndim = {x.ndim} "
                         f"(got {normalized_ndim})")
    shape = x.shape[x.ndim - normalized_ndim:]
    _check_affine("gamma", gamma, shape)
    _check_affine("beta", beta, shape)
    x_hat, cache = normalize(x, tuple(range(x.ndim - normalized_ndim, x.ndim)), eps)
    out = x_hat if gamma is None else x_hat * gamma
    out = out if beta is None else out + beta
    cache.update(gamma=gamma, param_axes=tuple(range(x.ndim - normalized_ndim)))
    return out, cache


def layernorm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, ...]:
    """``(dx, dgamma, dbeta)`` of :func:`layernorm_forward`: ``dgamma`` and ``dbeta`` of
    ``normalized_shape`` (``dgamma`` is ``None`` where the forward had no gamma)."""
    gamma, param_axes = cache["gamma"], cache["param_axes"]
    dx_hat = dout if gamma is None else dout * gamma
    dgamma = None if gamma is None else (dout * cache["x_hat"]).sum(axis=param_axes)
    return normalize_backward(dx_hat, cache), dgamma, dout.sum(axis=param_axes)


def groupnorm_forward(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None,
                      num_groups: int, eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Group normalization, as ``torch.nn.GroupNorm(num_groups, C)``: the C channels of each
    example are split into ``num_groups`` groups of consecutive channels, and each group is
    standardized over its channels and positions; then a per-channel scale and shift.
    ``num_groups = C`` is instance norm, ``num_groups = 1`` layer norm over (C, *spatial) with
    per-channel affine parameters.

    Args:
        x: (N, C) or (N, C, *spatial), floating dtype.
        gamma, beta: (C,), or ``None`` for 1 and 0.
        num_groups: G, dividing C.
        eps: added to the variance, > 0.

    Returns:
        ``(out, cache)``, ``out`` shaped like ``x``.
    """
    x = _check_array("x", x)
    check_input_shape(x.shape, None, training=False)
    n, c = x.shape[:2]
    if not (isinstance(num_groups, int) and num_groups >= 1 and c % num_groups == 0):
        raise ValueError(f"expected num_groups >= 1 dividing the {c} channels (got {num_groups})")
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a is not None:
            check_param_shape(name, _check_array(name, a).shape, c)
    grouped = x.reshape(n, num_groups, c // num_groups, *x.shape[2:])   # (N, G, C/G, *)
    x_hat, cache = normalize(grouped, norm_axes("group", grouped.ndim), eps)
    x_hat = x_hat.reshape(x.shape)                                       # (N, C, *)
    out = x_hat if gamma is None else x_hat * _as_channel(gamma, x.ndim)
    out = out if beta is None else out + _as_channel(beta, x.ndim)
    cache.update(gamma=gamma, shape=x.shape)
    return out, cache


def groupnorm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, ...]:
    """``(dx, dgamma, dbeta)`` of :func:`groupnorm_forward` (``dgamma``/``dbeta`` (C,);
    ``dgamma`` is ``None`` where the forward had no gamma)."""
    gamma, shape = cache["gamma"], cache["shape"]
    axes = _reduce_axes(dout)
    x_hat = cache["x_hat"].reshape(shape)
    dx_hat = dout if gamma is None else dout * _as_channel(gamma, dout.ndim)
    dgamma = None if gamma is None else (dout * x_hat).sum(axis=axes)
    dx = normalize_backward(dx_hat.reshape(cache["x_hat"].shape), cache).reshape(shape)
    return dx, dgamma, dout.sum(axis=axes)
