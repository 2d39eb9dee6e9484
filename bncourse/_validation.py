"""Input checks shared by the whole package.

Messages follow PyTorch's "expected ... (got ...)" style so a learner who later meets
``torch.nn.BatchNorm1d``'s errors recognises them. One rule for the exception type: a wrong type
or dtype raises ``TypeError``, a wrong value or shape ``ValueError``. (``bool`` is not accepted
where a number is expected, although Python counts it as an ``int``.)
"""

from __future__ import annotations

import math


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value, *, minimum: int | None = None, allow_none: bool = False) -> None:
    """``value`` must be an int (``TypeError``) of at least ``minimum`` (``ValueError``)."""
    if value is None and allow_none:
        return
    if not _is_int(value):
        what = "an int or None" if allow_none else "an int"
        raise TypeError(f"expected {name} to be {what} (got {type(value).__name__} {value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"expected {name} >= {minimum} (got {name}={value})")


def check_real(name: str, value, *, minimum: float | None = None, positive: bool = False,
               finite: bool = True) -> None:
    """``value`` must be a real number (``TypeError``), finite, ``> 0`` with ``positive``, and at
    least ``minimum`` (``ValueError``)."""
    if not _is_real(value):
        raise TypeError(f"expected {name} to be a number (got {type(value).__name__} {value!r})")
    if finite and not math.isfinite(value):
        raise ValueError(f"expected a finite {name} (got {name}={value})")
    if positive and not value > 0:
        raise ValueError(f"expected {name} > 0 (got {name}={value})")
    if minimum is not None and value < minimum:
        raise ValueError(f"expected {name} >= {minimum} (got {name}={value})")


def check_eps(eps: float) -> None:
    """``eps`` must be a finite number > 0: it is what keeps ``1 / sqrt(var + eps)`` finite."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"expected eps to be a float (got {type(eps).__name__})")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"expected eps > 0 (got eps={eps})")


def check_eps_type(eps: float) -> None:
    """``eps`` must be a real number; its value is checked where it is used (PyTorch accepts any
    value at construction: training needs ``eps > 0``, eval mode ``eps >= 0``)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"expected eps to be a float (got {type(eps).__name__})")


def check_momentum(momentum: float | None, *, allow_none: bool = True) -> None:
    """``momentum`` weights the new batch, in [0, 1]; ``None`` means a cumulative average."""
    if momentum is None:
        if allow_none:
            return
        raise TypeError("expected momentum to be a float in [0, 1] (got None)")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise TypeError(f"expected momentum to be a float or None (got {type(momentum).__name__})")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected momentum in [0, 1] (got momentum={momentum})")


def check_num_features(num_features: int) -> None:
    check_int("num_features", num_features, minimum=1)


def check_input_shape(
    shape: tuple[int, ...], num_features: int | None, *, training: bool
) -> None:
    """Checks a (N, C) or (N, C, *spatial) shape.

    Args:
        shape: the input's shape.
        num_features: the expected channel count C, or ``None`` to accept any.
        training: whether batch statistics will be computed; they need more than one value
            per channel (N * prod(spatial) > 1), exactly as PyTorch requires.
    """
    if len(shape) < 2:
        raise ValueError(
            f"expected 2D or higher input of shape (N, C, *) (got {len(shape)}D input)"
        )
    if num_features is not None and shape[1] != num_features:
        raise ValueError(
            f"expected input with {num_features} channels in dim 1 (got {shape[1]} channels, "
            f"input shape {tuple(shape)})"
        )
    if training:
        values_per_channel = shape[0] * math.prod(shape[2:])
        if values_per_channel == 1:   # an empty batch (0 values) is allowed, as in PyTorch
            raise ValueError(
                "expected more than 1 value per channel when training "
                f"(got input shape {tuple(shape)}); use a batch larger than 1, or eval mode"
            )


def check_param_shape(name: str, shape: tuple[int, ...], num_features: int) -> None:
    if tuple(shape) != (num_features,):
        raise ValueError(f"expected {name} of shape ({num_features},) (got {tuple(shape)})")
