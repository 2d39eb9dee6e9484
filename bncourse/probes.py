"""Probes for the internal-covariate-shift experiments: activations, gradients, landscape.

The maths is in plain functions (:func:`percentiles`, :func:`gradient_change`); what needs a
model is either a context manager over hooks that are removed on exit -- also when the body
raises -- or a function that perturbs the model and restores every parameter and buffer before
it returns:

* :func:`record_percentiles` -- percentiles of a unit's input (or output) at every forward
  (Ioffe & Szegedy 2015, Figure 1b, c);
* :func:`record_gradients` -- the gradients of a module's parameters at every backward;
* :func:`ics_gradient_change` -- ICS as the change of a layer's gradient when the layers
  before it take their step (Santurkar et al. 2018, Section 3);
* :func:`gradient_variance` -- the spread of minibatch gradients at fixed parameters;
* :func:`loss_landscape_along_gradient` -- loss range, gradient predictiveness and effective
  beta-smoothness along the gradient (Santurkar et al. 2018, Section 3.1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bncourse._validation import check_int, check_real
from bncourse.state import restored  # noqa: F401 -- re-exported: probes restore the model

__all__ = [
    "percentiles",
    "PercentileRecord",
    "record_percentiles",
    "GradientRecord",
    "record_gradients",
    "GradientChange",
    "gradient_change",
    "ics_gradient_change",
    "GradientVariance",
    "gradient_variance",
    "Landscape",
    "loss_landscape_along_gradient",
    "restored",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_module(name: str, module) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected {name} to be an nn.Module (got {type(module).__name__})")


def _check_q(q) -> tuple[float, ...]:
    if isinstance(q, (int, float)) and not isinstance(q, bool):
        q = (q,)
    try:
        q = tuple(float(v) for v in q)
    except (TypeError, ValueError):
        raise TypeError(f"expected q to be a sequence of numbers in [0, 100] (got {q!r})") from None
    if not q or any(not 0.0 <= v <= 100.0 for v in q):
        raise ValueError(f"expected q to be a non-empty sequence of numbers in [0, 100] (got {q})")
    return q


def _check_unit(unit) -> tuple[int, ...] | int | None:
    if unit is None:
        return None
    if isinstance(unit, int) and not isinstance(unit, bool):
        return unit
    if isinstance(unit, Sequence) and unit and all(
            isinstance(u, int) and not isinstance(u, bool) for u in unit):
        return tuple(unit)
    raise TypeError(f"expected unit to be an int, a non-empty sequence of ints or None "
                    f"(got {unit!r})")


def _check_positive(name: str, value) -> float:
    check_real(name, value, positive=True)
    return float(value)


def _check_batch(x, y) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"expected x and y to be tensors (got {type(x).__name__}, "
                        f"{type(y).__name__})")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected x (N, *) and y (N, *) with the same N (got x "
                         f"{tuple(x.shape)}, y {tuple(y.shape)})")


# --------------------------------------------------------------------------------------------
# Activation percentiles
# --------------------------------------------------------------------------------------------


def percentiles(x: Tensor, q: Sequence[float] = (15, 50, 85), unit=None) -> Tensor:
    """Per-unit percentiles of ``x`` over the batch (and any spatial dims).

    Linear interpolation between order statistics, as ``numpy.percentile``'s default.

    Args:
        x: (N, C) or (N, C, *spatial); the units are the C channels.
        q: percentiles in [0, 100].
        unit: an int (one unit), a sequence of ints, or ``None`` (all units).

    Returns:
        float tensor (len(q),) for an int ``unit``, else (len(q), U) with U units.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected x to be a torch.Tensor (got {type(x).__name__})")
    if x.dim() < 2:
        raise ValueError(f"expected x of shape (N, C, *) (got shape {tuple(x.shape)})")
    q, unit = _check_q(q), _check_unit(unit)
    values = x.detach().transpose(0, 1).reshape(x.shape[1], -1)              # (C, N * spatial)
    if unit is not None:
        index = [unit] if isinstance(unit, int) else list(unit)
        if any(not -x.shape[1] <= u < x.shape[1] for u in index):
            raise ValueError(f"expected unit indices in [0, {x.shape[1]}) (got {unit})")
        values = values[index]
    values = values.double() if values.dtype != torch.float64 else values
    qs = torch.tensor(q, dtype=values.dtype, device=values.device) / 100
    out = torch.quantile(values, qs, dim=1)                                   # (len(q), U)
    return out[:, 0] if isinstance(unit, int) else out


class PercentileRecord:
    """What :func:`record_percentiles` collects: one row of percentiles per forward call.

    Attributes:
        q: the percentiles.
        unit: the unit(s) recorded.
        values: list of tensors (len(q),) or (len(q), U), one per forward call.
        batch_sizes: N of each call, to tell training steps from evaluations apart.
    """

    def __init__(self, q: tuple[float, ...], unit) -> None:
        self.q, self.unit = q, unit
        self.values: list[Tensor] = []
        self.batch_sizes: list[int] = []

    def __len__(self) -> int:
        return len(self.values)

    def as_array(self, batch_size: int | None = None) -> np.ndarray:
        """(calls, len(q)) or (calls, len(q), U) float64 array; only the calls on batches of
        ``batch_size`` examples if it is given."""
        rows = [v for v, n in zip(self.values, self.batch_sizes, strict=True)
                if batch_size is None or n == batch_size]
        if not rows:
            return np.empty((0, len(self.q)))
        return torch.stack(rows).cpu().numpy()


@contextlib.contextmanager
def record_percentiles(
    module: nn.Module,
    q: Sequence[float] = (15, 50, 85),
    unit=0,
    *,
    where: str = "input",
    batch_size: int | None = None,
) -> Iterator[PercentileRecord]:
    """Records percentiles of ``module``'s input (or output) at every forward inside the block.

    Ioffe & Szegedy's Figure 1 plots the input of one sigmoid: pass the activation module
    (e.g. ``model.act2``) with ``where="input"``.

    Args:
        module: the module to watch.
        q: percentiles in [0, 100]. Default: (15, 50, 85).
        unit: as in :func:`percentiles`. Default: 0.
        where: ``"input"`` (the first positional input) or ``"output"``.
        batch_size: record only the calls on batches of this many examples (e.g. the training
            steps, not the evaluations on the whole dataset in between); ``None``: every call.

    Yields:
        A :class:`PercentileRecord`; the hook is removed when the block exits, however it exits.

    Examples::

        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid())
        >>> with record_percentiles(model[1], unit=0) as rec:
        ...     _ = model(torch.randn(16, 4))
        >>> rec.as_array().shape
        (1, 3)
    """
    _check_module("module", module)
    q, unit = _check_q(q), _check_unit(unit)
    if where not in ("input", "output"):
        raise ValueError(f"expected where to be 'input' or 'output' (got {where!r})")
    check_int("batch_size", batch_size, minimum=1, allow_none=True)
    record = PercentileRecord(q, unit)

    def hook(_module, inputs, output):
        x = inputs[0] if where == "input" else output
        if batch_size is not None and x.shape[0] != batch_size:
            return
        record.values.append(percentiles(x, q, unit))
        record.batch_sizes.append(x.shape[0])

    handle = module.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


class GradientRecord:
    """What :func:`record_gradients` collects.

    Attributes:
        grads: ``{parameter name: [gradient, ...]}``, one detached copy per backward.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.grads: dict[str, list[Tensor]] = {n: [] for n in names}

    def __len__(self) -> int:
        return min((len(v) for v in self.grads.values()), default=0)

    def flat(self) -> Tensor:
        """(backwards, P): every recorded gradient, parameters concatenated in order."""
        return torch.stack([torch.cat([g[i].reshape(-1) for g in self.grads.values()])
                            for i in range(len(self))])


@contextlib.contextmanager
def record_gradients(module: nn.Module) -> Iterator[GradientRecord]:
    """Records the gradient of each of ``module``'s parameters whenever autograd computes it.

    Works for ``loss.backward()`` and ``torch.autograd.grad`` alike (tensor hooks on the
    parameters); the hooks are removed when the block exits, however it exits.

    Yields:
        A :class:`GradientRecord` keyed by ``module.named_parameters()`` names.
    """
    _check_module("module", module)
    named = list(module.named_parameters())
    if not named:
        raise ValueError(f"expected a module with parameters (got {type(module).__name__} "
                         f"without any)")
    record = GradientRecord([n for n, _ in named])
    handles = []
    try:
        for name, p in named:
            handles.append(p.register_hook(
                lambda g, name=name: record.grads[name].append(g.detach().clone())))
        yield record
    finally:
        for h in handles:
            h.remove()


class GradientChange(NamedTuple):
    """How much a gradient changed: ``l2 = ||a - b||``, ``cosine = <a, b> / (||a|| ||b||)``,
    ``relative = l2 / ||a||`` (scale-free), with ``a`` the gradient before the change."""

    l2: float
    cosine: float
    relative: float


def gradient_change(before: Sequence[Tensor], after: Sequence[Tensor]) -> GradientChange:
    r"""L2 distance and cosine similarity of two gradients given as lists of tensors.

    Each list is flattened and concatenated into one vector (``a`` and ``b``) first:

    .. math::
        \ell_2 = \lVert a - b \rVert_2, \qquad
        \cos = \frac{a^\top b}{\lVert a \rVert_2 \lVert b \rVert_2}

    Args:
        before, after: equally long lists of tensors of matching shapes.

    Returns:
        :class:`GradientChange`; ``cosine`` is NaN when either vector is zero.
    """
    before, after = list(before), list(after)
    if not before or len(before) != len(after):
        raise ValueError(f"expected two equally long, non-empty lists of tensors (got "
                         f"{len(before)} and {len(after)})")
    if any(not isinstance(t, Tensor) for t in before + after):
        raise TypeError("expected lists of torch.Tensor")
    if any(a.shape != b.shape for a, b in zip(before, after, strict=True)):
        raise ValueError("expected tensors of matching shapes, pairwise")
    a = torch.cat([t.detach().reshape(-1).double() for t in before])
    b = torch.cat([t.detach().reshape(-1).double() for t in after])
    l2, na, nb = (a - b).norm().item(), a.norm().item(), b.norm().item()
    cosine = (a @ b).item() / (na * nb) if na > 0 and nb > 0 else math.nan
    return GradientChange(l2, cosine, l2 / na if na > 0 else math.nan)


def _loss_and_grads(model, params, x, y, loss_fn) -> tuple[float, list[Tensor]]:
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.item(), [torch.zeros_like(p) if g is None else g for p, g in zip(
        params, grads, strict=True)]


def _layer_params(model: nn.Module, layer) -> tuple[list[Tensor], list[Tensor]]:
    """(parameters before ``layer`` in ``model.parameters()`` order, ``layer``'s parameters)."""
    if isinstance(layer, str):
        layer = model.get_submodule(layer)
    _check_module("layer", layer)
    own = list(layer.parameters())
    if not own:
        raise ValueError(f"expected a layer with parameters (got {type(layer).__name__})")
    params = list(model.parameters())
    ids = [id(p) for p in params]
    if id(own[0]) not in ids:
        raise ValueError("expected layer to be a submodule of model")
    return params[: ids.index(id(own[0]))], own


def ics_gradient_change(
    model: nn.Module, layer, x: Tensor, y: Tensor, loss_fn: LossFn, lr: float
) -> GradientChange:
    r"""Internal covariate shift as Santurkar et al. measure it: the change of a layer's gradient
    when every earlier layer takes its gradient step.

    With :math:`W_{<i}` the parameters before layer :math:`i` (in ``model.parameters()``
    order) and one batch :math:`(x, y)`:

    .. math::
        G = \nabla_{W_i} L(W_{<i}, W_i, W_{>i}),\qquad
        G' = \nabla_{W_i} L(W_{<i} - \eta \nabla_{W_{<i}} L, W_i, W_{>i})

    and the result compares ``G`` (before) with ``G'`` (after) by :func:`gradient_change`.
    A layer whose input distribution does not move has ``G' = G``: l2 = 0, cosine = 1.

    Args:
        model: runs in its current mode (train mode: BN uses batch statistics).
        layer: a submodule of ``model`` with parameters, or its name (``"linear2"``).
        x: (N, *) a batch; y: its targets.
        loss_fn: ``loss_fn(model(x), y)`` -> scalar.
        lr: the SGD step size :math:`\eta` of the earlier layers.

    Returns:
        :class:`GradientChange`. Parameters, buffers (BN's running statistics), ``.grad`` and
        flags of ``model`` are restored.
    """
    _check_module("model", model)
    _check_batch(x, y)
    lr = _check_positive("lr", lr)
    earlier, own = _layer_params(model, layer)
    if not earlier:
        raise ValueError("expected a layer with earlier layers before it (got the first layer)")
    with restored(model):
        _, grads = _loss_and_grads(model, earlier + own, x, y, loss_fn)
        with torch.no_grad():
            for p, g in zip(earlier, grads, strict=False):
                p.sub_(lr * g)
        _, after = _loss_and_grads(model, own, x, y, loss_fn)
    return gradient_change(grads[len(earlier):], after)


class GradientVariance(NamedTuple):
    r"""Spread of B minibatch gradients :math:`g_b` around their mean :math:`\bar g`:
    ``variance`` :math:`= \frac1B \sum_b \lVert g_b - \bar g \rVert^2`, ``mean_sq_norm``
    :math:`= \lVert \bar g \rVert^2`, ``relative`` = variance / mean_sq_norm (noise-to-signal)."""

    variance: float
    mean_sq_norm: float
    relative: float


def gradient_variance(
    model: nn.Module, xs: Tensor, ys: Tensor, loss_fn: LossFn, layer=None
) -> GradientVariance:
    """Variance of the minibatch gradient over B batches at fixed parameters.

    Args:
        model: runs in its current mode.
        xs: (B, n, *) B batches; ys: (B, n, *) their targets.
        loss_fn: ``loss_fn(model(x), y)`` -> scalar.
        layer: only this submodule's (or name's) parameters; ``None``: all parameters.

    Returns:
        :class:`GradientVariance`; the model is restored.
    """
    _check_module("model", model)
    _check_batch(xs, ys)
    if xs.dim() < 2 or xs.shape[0] < 2:
        raise ValueError(f"expected xs of shape (B, n, *) with B >= 2 (got {tuple(xs.shape)})")
    params = list(model.parameters()) if layer is None else _layer_params(model, layer)[1]
    flat = []
    with restored(model):
        for xb, yb in zip(xs, ys, strict=True):
            _, grads = _loss_and_grads(model, params, xb, yb, loss_fn)
            flat.append(torch.cat([g.reshape(-1).double() for g in grads]))
    g = torch.stack(flat)                                                    # (B, P)
    mean = g.mean(0)
    variance = (g - mean).pow(2).sum(1).mean().item()
    sq = mean.pow(2).sum().item()
    return GradientVariance(variance, sq, variance / sq if sq > 0 else math.inf)


class Landscape(NamedTuple):
    """The loss and gradient along the gradient direction, at step sizes ``eta`` (K,).

    Attributes:
        step_sizes: (K,) the step sizes.
        losses: (K,) :math:`L(w - \\eta g)`.
        grad_changes: (K,) :math:`\\lVert \\nabla L(w - \\eta g) - g \\rVert`.
        loss_range: ``max(losses) - min(losses)``, the variation of the loss.
        grad_change_max: ``max(grad_changes)``, gradient (un)predictiveness.
        beta: effective beta-smoothness, ``max(grad_changes / (eta * ||g||))``.
        grad_norm: :math:`\\lVert g \\rVert`.
    """

    step_sizes: np.ndarray
    losses: np.ndarray
    grad_changes: np.ndarray
    loss_range: float
    grad_change_max: float
    beta: float
    grad_norm: float


def loss_landscape_along_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, step_sizes: Sequence[float]
) -> Landscape:
    r"""Santurkar et al.'s smoothness probes: step along the gradient, look at loss and gradient.

    With :math:`g = \nabla L(w)` on the batch :math:`(x, y)` and each step size :math:`\eta_k`:

    .. math::
        L_k = L(w - \eta_k g),\quad d_k = \lVert \nabla L(w - \eta_k g) - g \rVert_2,\quad
        \beta_{\text{eff}} = \max_k \frac{d_k}{\eta_k \lVert g \rVert_2}

    A :math:`\beta`-smooth loss has :math:`d_k \le \beta \eta_k \lVert g \rVert`; for a quadratic
    :math:`\frac12 w^\top A w`, :math:`\beta_{\text{eff}} \le \lambda_{\max}(A)`, with equality
    when :math:`g` is an eigenvector of :math:`A` for :math:`\lambda_{\max}`.

    Args:
        model: runs in its current mode; every parameter is moved.
        x, y: one batch.
        loss_fn: ``loss_fn(model(x), y)`` -> scalar.
        step_sizes: positive step sizes (K,).

    Returns:
        :class:`Landscape`; the model is restored.
    """
    _check_module("model", model)
    _check_batch(x, y)
    try:
        etas = np.array([_check_positive("step size", float(e)) for e in step_sizes])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"expected step_sizes to be positive floats (got {step_sizes!r})") from exc
    if etas.size == 0:
        raise ValueError("expected at least one step size (got none)")
    params = [p for p in model.parameters() if p.requires_grad]
    with restored(model):
        start = [p.detach().clone() for p in params]
        _, g = _loss_and_grads(model, params, x, y, loss_fn)
        g = [t.detach() for t in g]
        g_flat = torch.cat([t.reshape(-1).double() for t in g])
        losses, changes = [], []
        for eta in etas:
            with torch.no_grad():
                for p, p0, gi in zip(params, start, g, strict=True):
                    p.copy_(p0 - eta * gi)
            loss, g_eta = _loss_and_grads(model, params, x, y, loss_fn)
            losses.append(loss)
            changes.append((torch.cat([t.reshape(-1).double() for t in g_eta]) - g_flat)
                           .norm().item())
    losses, changes = np.array(losses), np.array(changes)
    g_norm = g_flat.norm().item()
    beta = float(np.max(changes / (etas * g_norm))) if g_norm > 0 else 0.0
    return Landscape(etas, losses, changes, float(losses.max() - losses.min()),
                     float(changes.max()), beta, g_norm)
