"""MLP and 1-D CNN builders for MNIST-1D, with the normalization layer as a choice.

Both return an ``nn.Sequential`` with named layers, so probes and notebooks can reach into them
(``model.norm0``, ``model.act1``, ``model.head``)::

    mlp:    linear0, norm0, act0, [drop0], linear1, norm1, act1, [drop1], ..., head
    cnn1d:  unflatten, conv0, norm0, act0, conv1, ..., flatten, head

``norm_position="after"`` swaps each ``norm{i}`` and ``act{i}``; ``norm="none"`` leaves the norm
layers out. Norm layers follow every hidden layer, never the head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from bncourse._validation import check_int
from bncourse.nn import BatchNorm

__all__ = ["mlp", "cnn1d", "NORMS", "ACTIVATIONS", "INITS", "NORM_POSITIONS"]

NORMS = ("none", "batch", "scratch", "group", "layer")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITS = ("default", "he", "xavier", "normal")
NORM_POSITIONS = ("before", "after")

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def _num_groups(num_channels: int) -> int:
    """GroupNorm's group count: the largest of 8, 4, 2, 1 that divides C."""
    return next(g for g in (8, 4, 2, 1) if num_channels % g == 0)


def _norm_factory(norm, *, conv: bool) -> Callable[[int], nn.Module] | None:
    """``num_features -> norm module`` for the chosen ``norm``, or ``None`` for no norm."""
    if callable(norm) and not isinstance(norm, str):
        return norm
    if norm == "none":
        return None
    if norm == "batch":
        return nn.BatchNorm1d  # handles (N, C) and (N, C, L) alike
    if norm == "scratch":
        return BatchNorm
    if norm == "group":
        return lambda c: nn.GroupNorm(_num_groups(c), c)
    if norm == "layer":
        # for a conv layer, "layer norm" normalizes over channels and length together, with a
        # per-channel affine (Wu & He's LN baseline); nn.LayerNorm(C) would need channels last
        return (lambda c: nn.GroupNorm(1, c)) if conv else nn.LayerNorm
    raise ValueError(
        f"expected norm to be one of {NORMS} or a callable num_features -> module (got {norm!r})"
    )


def _activation_factory(activation) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        if activation in _ACTIVATIONS:
            return _ACTIVATIONS[activation]
    elif callable(activation):
        return activation
    raise ValueError(
        f"expected activation to be one of {ACTIVATIONS} or a zero-argument callable returning "
        f"a module (got {activation!r})"
    )


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"expected {name} to be one of {allowed} (got {value!r})")


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(sizes)
    for i, s in enumerate(sizes):
        check_int(f"{name}[{i}]", s, minimum=1)
    return sizes


def _init_weights(model: nn.Module, init: str, init_std: float) -> None:
    """Re-initializes every Linear/Conv1d (head included); biases zeroed unless "default"."""
    if init == "default":
        return
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d)):
            continue
        if init == "he":
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif init == "xavier":
            nn.init.xavier_normal_(m.weight)
        else:  # "normal"
            nn.init.normal_(m.weight, mean=0.0, std=init_std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _check_common(norm_position: str, init: str, init_std: float) -> None:
    _check_choice("norm_position", norm_position, NORM_POSITIONS)
    _check_choice("init", init, INITS)
    if init == "normal" and not init_std > 0:
        raise ValueError(f"expected init_std > 0 (got init_std={init_std})")


def _hidden_block(
    layers: OrderedDict, i: int, width: int, make_norm, make_act, norm_position: str
) -> None:
    """Appends norm{i} and act{i} in the chosen order (the weight layer is already in)."""
    norm = None if make_norm is None else make_norm(width)
    if norm is not None and norm_position == "before":
        layers[f"norm{i}"] = norm
    layers[f"act{i}"] = make_act()
    if norm is not None and norm_position == "after":
        layers[f"norm{i}"] = norm


def mlp(
    hidden: Sequence[int] = (100, 100),
    *,
    in_features: int = 40,
    num_classes: int = 10,
    norm="none",
    activation="relu",
    init: str = "default",
    init_std: float = 0.01,
    bias: bool = True,
    norm_position: str = "before",
    dropout: float = 0.0,
    dropout_position: str = "every",
) -> nn.Sequential:
    """A fully connected network: ``(Linear -> Norm -> Act [-> Dropout]) * len(hidden) -> head``.

    Args:
        hidden: widths of the hidden layers; ``()`` gives a linear classifier.
        in_features: input size. Default: 40 (MNIST-1D).
        num_classes: output size. Default: 10.
        norm: ``"none"``, ``"batch"`` (``nn.BatchNorm1d``), ``"scratch"``
            (:class:`bncourse.nn.BatchNorm`), ``"group"`` (``nn.GroupNorm`` with the largest of
            8, 4, 2, 1 groups dividing the width), ``"layer"`` (``nn.LayerNorm``), or a callable
            ``num_features -> nn.Module``.
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"``, or a zero-argument callable returning
            a module (e.g. ``nn.GELU``).
        init: ``"default"`` (PyTorch's), ``"he"`` (Kaiming normal, fan-in, ReLU gain),
            ``"xavier"`` (Xavier normal), ``"normal"`` (N(0, init_std^2)); all but ``"default"``
            zero the biases. Applied to every Linear, the head included.
        init_std: standard deviation for ``init="normal"``. Default: 0.01.
        bias: whether the hidden Linear layers have a bias (the head always has one); a bias
            directly before BN is redundant, as BN subtracts the mean.
        norm_position: ``"before"`` the activation (Ioffe & Szegedy) or ``"after"`` it.
        dropout: if > 0, ``nn.Dropout(dropout)`` after each hidden block, as ``drop{i}``.
        dropout_position: ``"every"`` hidden block, or only the ``"last"`` one (after the last
            norm layer, before the head): then no dropout feeds a norm layer, which avoids BN's
            variance shift between training and inference (Li et al. 2019).

    Shape:
        Input (N, in_features); output (N, num_classes) logits.

    Examples::

        >>> model = mlp((100, 100), norm="batch")
        >>> [name for name, _ in model.named_children()]
        ['linear0', 'norm0', 'act0', 'linear1', 'norm1', 'act1', 'head']
    """
    hidden = _check_sizes("hidden", hidden)
    make_norm = _norm_factory(norm, conv=False)
    make_act = _activation_factory(activation)
    _check_common(norm_position, init, init_std)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"expected dropout in [0, 1) (got dropout={dropout})")
    _check_choice("dropout_position", dropout_position, ("every", "last"))

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, h in enumerate(hidden):
        layers[f"linear{i}"] = nn.Linear(width, h, bias=bias)  # (N, width) -> (N, h)
        _hidden_block(layers, i, h, make_norm, make_act, norm_position)
        if dropout > 0 and (dropout_position == "every" or i == len(hidden) - 1):
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["head"] = nn.Linear(width, num_classes)             # (N, width) -> (N, classes)
    model = nn.Sequential(layers)
    _init_weights(model, init, init_std)
    return model


def cnn1d(
    channels: Sequence[int] = (32, 32, 32),
    *,
    kernel_size: int = 5,
    in_length: int = 40,
    num_classes: int = 10,
    norm="none",
    activation="relu",
    init: str = "default",
    init_std: float = 0.01,
    bias: bool = True,
    norm_position: str = "before",
) -> nn.Sequential:
    """A small 1-D CNN: ``(Conv1d stride 2 -> Norm -> Act) * len(channels) -> flatten -> head``.

    Each convolution has stride 2 and padding ``kernel_size // 2``, so with the defaults the
    length goes 40 -> 20 -> 10 -> 5 and the head sees 32 * 5 = 160 features.

    Args:
        channels: output channels of the conv layers; ``()`` gives a linear classifier.
        kernel_size: conv kernel size. Default: 5.
        in_length: input length L. Default: 40 (MNIST-1D).
        num_classes: output size. Default: 10.
        norm: as in :func:`mlp`, per channel; ``"batch"`` normalizes each channel over batch and
            length; ``"layer"`` is ``nn.GroupNorm(1, C)``: each example normalized over all its
            channels and positions, with a per-channel affine.
        activation, init, init_std, bias, norm_position: as in :func:`mlp` (init applies to
            every Conv1d and the head).

    Shape:
        Input (N, in_length) -- a batch of 1-D signals without a channel dim; output
        (N, num_classes) logits.

    Examples::

        >>> import torch
        >>> cnn1d(norm="batch")(torch.randn(8, 40)).shape
        torch.Size([8, 10])
    """
    channels = _check_sizes("channels", channels)
    check_int("kernel_size", kernel_size, minimum=1)
    check_int("in_length", in_length, minimum=1)
    make_norm = _norm_factory(norm, conv=True)
    make_act = _activation_factory(activation)
    _check_common(norm_position, init, init_std)

    padding = kernel_size // 2
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["unflatten"] = nn.Unflatten(1, (1, in_length))    # (N, L) -> (N, 1, L)
    c_in, length = 1, in_length
    for i, c in enumerate(channels):
        # (N, c_in, L) -> (N, c, L_out), L_out = floor((L + 2p - k) / 2) + 1
        layers[f"conv{i}"] = nn.Conv1d(c_in, c, kernel_size, stride=2, padding=padding, bias=bias)
        length = (length + 2 * padding - kernel_size) // 2 + 1          # >= 1 for any L >= 1
        _hidden_block(layers, i, c, make_norm, make_act, norm_position)
        c_in = c
    layers["flatten"] = nn.Flatten()                            # (N, C, L) -> (N, C * L)
    layers["head"] = nn.Linear(c_in * length, num_classes)
    model = nn.Sequential(layers)
    _init_weights(model, init, init_std)
    return model
