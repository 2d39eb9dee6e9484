"""Batch normalization as PyTorch modules, written from scratch (no ``F.batch_norm`` inside).

:class:`BatchNorm` has exactly the semantics of ``torch.nn.BatchNorm1d/2d/3d`` for any input of
shape (N, C) or (N, C, *spatial), and its ``state_dict`` loads into them and back.

The bookkeeping every variant shares (parameters, buffers, momentum, running-statistics update,
train/eval dispatch, input checks) lives in :class:`_BatchNormBase`. A variant overrides only
what differs:

* :meth:`_BatchNormBase._normalize_batch` -- how a training batch is normalized and which
  statistics feed the running averages (ghost batches, renormalization, synchronized statistics);
* :meth:`_BatchNormBase._normalize_running` -- how eval mode normalizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bncourse._validation import (
    check_eps_type,
    check_input_shape,
    check_momentum,
    check_num_features,
)

__all__ = ["BatchNorm", "batch_norm_train"]



def _as_channel(v: Tensor, ndim: int) -> Tensor:
    """(C,) -> (1, C, 1, ..., 1)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_sum(t: Tensor) -> Tensor:
    """Per-channel sum over every dim but 1, as (1, C, 1, ...): the spatial dims first, then the
    batch. One ``sum`` over the non-adjacent dims (0, 2, ...) is less accurate in float32 on CPU
    and slower (measured over 2**18 values per channel: 1.5e-6 vs 6e-8 relative error)."""
    if t.dim() > 2:
        t = t.sum(list(range(2, t.dim())), keepdim=True)
    return t.sum(0, keepdim=True)


_SLAB_ELEMENTS = 1 << 18  # 1 MiB of float32: small enough for the allocator to recycle


_HALF = (torch.float16, torch.bfloat16)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (statistics of up to millions of values: sums in half
    precision overflow at 65504 and lose digits), the input's own dtype otherwise."""
    return torch.float32 if dtype in _HALF else dtype


def _affine(out: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``out * weight + bias`` per channel, skipping whichever is ``None``."""
    if weight is not None and bias is not None:
        return torch.addcmul(_as_channel(bias, out.dim()), out, _as_channel(weight, out.dim()))
    if weight is not None:
        return out * _as_channel(weight, out.dim())
    if bias is not None:
        return out + _as_channel(bias, out.dim())
    return out


def _closed_form_dx(dout: Tensor, xc: Tensor, inv_std: Tensor, scale: Tensor,
                    mean_dout: Tensor, mean_dout_xhat: Tensor) -> Tensor:
    """BN's input gradient in closed form, shared by every variant that normalizes a batch::

        dx = scale * (dout - mean(dout) - x_hat * mean(dout * x_hat)),  x_hat = xc * inv_std

    with the two per-channel means (1, C, 1...) taken over the values the statistics covered
    (one batch, or every worker's). Written to allocate one (N, C, *) tensor, updated in place
    only where vmap allows it (it is batched whenever any input is).
    """
    dx = torch.addcmul(-scale * mean_dout, dout, scale)
    return dx.addcmul_(xc, -scale * inv_std * mean_dout_xhat)


def _channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-channel ``sum(a * b)`` over every dim but 1, as (1, C, 1, ...).

    Taken in slabs along dim 0, so the product never needs a temporary as large as the input:
    a fresh input-sized buffer costs page faults on every call, which made this step slower
    than the arithmetic.
    """
    rows = max(1, _SLAB_ELEMENTS // max(1, a[0].numel()))
    return sum(_channel_sum(sa * sb)
               for sa, sb in zip(a.split(rows), b.split(rows), strict=True))


class _BatchNormTrainFunction(torch.autograd.Function):
    """Training-mode batch norm with the compact closed-form backward.

    Forward (two passes over ``x`` for the statistics, as accurate as any two-pass variance,
    and ``torch.var_mean`` is several times slower on CPU for these strided reductions)::

        mean = E[x];  var = E[(x - mean)^2];  out = (x - mean) * gamma / sqrt(var + eps) + beta

    It saves ``x``, ``mean`` and ``inv_std`` (like PyTorch's kernel, no (N, C, *) intermediate);
    the backward recomputes ``x - mean``::

        dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat))

    Written out of place in the ``setup_context`` style, so that every transform of PyTorch
    works through it: ``torch.func.vmap`` (``generate_vmap_rule``), ``jacrev`` and vectorized
    Jacobians, forward-mode AD (:meth:`jvp`), and double backward: under ``create_graph`` the
    backward recomputes the statistics as differentiable functions of ``x`` (the saved ones are
    constants), so second derivatives equal PyTorch's.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        acc = _accumulation_dtype(x.dtype)          # half inputs: float32 maths, rounded once
        xa = x.to(acc)
        m = x.numel() // x.shape[1]                                 # values per channel
        mean = _channel_sum(xa) / m                                 # (1, C, 1...)
        xc = xa - mean                                              # (N, C, *)
        var = _channel_dot(xc, xc) / m                              # (1, C, 1...) biased
        inv_std = torch.rsqrt(var + eps)
        scale = inv_std if weight is None else inv_std * _as_channel(weight.to(acc), x.dim())
        if bias is None:
            out = xc * scale
        else:
            out = torch.addcmul(_as_channel(bias.to(acc), x.dim()), xc, scale)
        return out.to(x.dtype), mean.reshape(-1), var.reshape(-1), inv_std

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, eps = inputs
        _, mean, _, inv_std = output
        ctx.save_for_backward(x, weight, mean, inv_std)
        ctx.save_for_forward(x, weight, mean, inv_std)
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, dout: Tensor, *_):
        x_in, weight_in, mean, inv_std = ctx.saved_tensors
        acc = inv_std.dtype
        x, dout = x_in.to(acc), dout.to(acc)
        weight = None if weight_in is None else weight_in.to(acc)
        m = x.numel() // x.shape[1]
        if torch.is_grad_enabled():
            # create_graph: the statistics as differentiable functions of x (second derivatives)
            xc = x - _channel_sum(x) / m
            inv_std = torch.rsqrt(_channel_sum(xc * xc) / m + ctx.eps)
        else:
            xc = x - _as_channel(mean, x.dim())
        dbias = _channel_sum(dout)                                  # (1, C, 1...)
        dweight = _channel_dot(dout, xc) * inv_std                  # sum(dout * x_hat)
        scale = inv_std if weight is None else inv_std * _as_channel(weight, x.dim())
        dx = None
        if ctx.needs_input_grad[0]:
            dx = _closed_form_dx(dout, xc, inv_std, scale, dbias / m, dweight / m).to(x_in.dtype)
        dw = db = None
        if weight is not None and ctx.needs_input_grad[1]:
            dw = dweight.reshape(-1).to(weight_in.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dbias.reshape(-1).to(ctx.bias_dtype)
        return dx, dw, db, None

    @staticmethod
    def jvp(ctx, x_t: Tensor, w_t: Tensor | None, b_t: Tensor | None, _eps_t):
        """Forward mode: the tangent of ``out`` for tangents of ``x``, ``weight``, ``bias``."""
        x_in, weight, mean, inv_std = ctx.saved_tensors
        acc = inv_std.dtype
        x, x_t = x_in.to(acc), x_t.to(acc)
        weight = None if weight is None else weight.to(acc)
        w_t = None if w_t is None else w_t.to(acc)
        b_t = None if b_t is None else b_t.to(acc)
        m = x.numel() // x.shape[1]
        xc = x - _as_channel(mean, x.dim())
        dxc = x_t - _channel_sum(x_t) / m
        dvar = 2 * _channel_dot(xc, dxc) / m                        # (1, C, 1...)
        dx_hat = dxc * inv_std - xc * (0.5 * inv_std**3 * dvar)
        dout = dx_hat if weight is None else dx_hat * _as_channel(weight, x.dim())
        if w_t is not None:
            dout = dout + xc * inv_std * _as_channel(w_t, x.dim())
        if b_t is not None:
            dout = dout + _as_channel(b_t, x.dim())
        return dout.to(x_in.dtype), None, None, None    # mean, var, inv_std: no tangents


def batch_norm_train(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalizes ``x`` (N, C, *) with its own per-channel batch statistics.

    Returns:
        ``(out, mean, var)``: ``out`` like ``x``; ``mean`` and the biased ``var`` are (C,) and
        carry no gradient.
    """
    out, mean, var, _ = _BatchNormTrainFunction.apply(x, weight, bias, eps)
    return out, mean, var


class _BatchNormBase(nn.Module):
    """Shared state and bookkeeping of every batch-norm variant in the course.

    Args:
        num_features: C, the number of channels (dim 1 of the input).
        eps: added to the variance before the square root. Default: 1e-5.
        momentum: weight of the new batch in the running averages; ``None`` for a cumulative
            average (weight ``1 / num_batches_tracked``). Default: 0.1.
        affine: learn a per-channel ``weight`` (gamma) and ``bias`` (beta). Default: True.
        track_running_stats: keep ``running_mean``/``running_var`` for eval mode; if False,
            eval mode also uses batch statistics. Default: True.
        bias: keyword-only; with ``affine``, whether to learn ``bias`` (``False``: ``bias`` is
            ``None``, as in ``torch.nn.BatchNorm1d(C, bias=False)``). Default: True.

    ``eps`` is checked when it is used, as PyTorch does: training needs ``eps > 0`` (batch
    statistics can have zero variance), eval mode ``eps >= 0``.

    Shape:
        Input (N, C) or (N, C, *spatial); output the same.
    """

    _version = 2  # as torch's _NormBase, so checkpoints without num_batches_tracked load

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_num_features(num_features)
        check_eps_type(eps)
        check_momentum(momentum)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args, **kwargs):
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            # an old checkpoint, or strict=False without the counter: keep ours, as PyTorch does
            state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked is not None
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args, **kwargs)

    def _check_input(self, x: Tensor, *, training: bool | None = None) -> None:
        """Type, dtype, rank and channel checks; with ``training`` (default: ``self.training``)
        also more than one value per channel."""
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor input (got {type(x).__name__})")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input (got dtype {x.dtype})")
        training = self._uses_batch_stats() if training is None else training
        check_input_shape(tuple(x.shape), self.num_features, training=training)
        if training and not self.eps > 0:
            raise ValueError(f"expected eps > 0 when normalizing with batch statistics "
                             f"(got eps={self.eps})")
        if not self.eps >= 0:
            raise ValueError(f"expected eps >= 0 (got eps={self.eps})")

    def _uses_batch_stats(self) -> bool:
        """Training mode, or eval mode without running statistics."""
        return self.training or not self.track_running_stats

    def _running_average_factor(self) -> float:
        """This step's weight of the new batch; counts the step first (PyTorch's order)."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        """Blends in a batch's mean and biased variance; stores the unbiased variance."""
        factor = self._running_average_factor()
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = var * (count / (count - 1))
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """Normalizes a training batch. Returns ``(out, mean, var, count)``: the (C,) mean and
        biased variance to blend into the running averages, and the values per channel they
        were taken over."""
        out, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
        return out, mean, var, x.numel() // x.shape[1]

    def _running_affine(self, acc: torch.dtype) -> tuple[Tensor, Tensor]:
        """Eval mode's per-channel map ``y = x * scale + shift``: ``(scale, shift)``, (C,) each,
        in ``acc``; differentiable in the weight and bias."""
        inv_std = torch.rsqrt(self.running_var.to(acc) + self.eps)
        scale, shift = inv_std, -self.running_mean.to(acc) * inv_std
        if self.weight is not None:
            scale, shift = scale * self.weight.to(acc), shift * self.weight.to(acc)
        if self.bias is not None:
            shift = shift + self.bias.to(acc)
        return scale, shift

    def _normalize_running(self, x: Tensor) -> Tensor:
        """Eval mode: a per-channel affine map with the running statistics (computed in at
        least float32, returned in the input's dtype)."""
        acc = _accumulation_dtype(x.dtype)
        scale, shift = self._running_affine(acc)
        out = torch.addcmul(_as_channel(shift, x.dim()), x.to(acc), _as_channel(scale, x.dim()))
        return out.to(x.dtype)

    def _empty_batch(self, x: Tensor) -> Tensor:
        """No values: an empty output of ``x``'s shape (zero gradients for the parameters); the
        step is counted, the running statistics stay, as in PyTorch."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        return _affine(x.clone(), self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.numel() == 0:
            return self._empty_batch(x)
        if self._uses_batch_stats():
            out, mean, var, count = self._normalize_batch(x)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
            return out
        return self._normalize_running(x)


class BatchNorm(_BatchNormBase):
    r"""Batch normalization over dim 1 of an (N, C) or (N, C, *spatial) input.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with per-channel statistics over the ``m = N * prod(spatial)`` values of each channel:
    the batch's (biased variance) in training and, if ``track_running_stats``, the running
    averages in eval mode. The running variance stores the unbiased batch variance
    ``Var[x] * m / (m - 1)``. Same arguments, parameters, buffers and ``state_dict`` keys as
    ``torch.nn.BatchNorm1d/2d/3d``; one class serves every input rank.

    The training forward is a custom autograd function with the closed-form backward; it works
    with ``torch.func`` transforms (vmap, jacrev, jvp), forward-mode AD and double backward.

    Examples::

        >>> bn = BatchNorm(16)
        >>> bn(torch.randn(8, 16, 40)).shape
        torch.Size([8, 16, 40])
    """
