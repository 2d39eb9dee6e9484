"""Noisy batch normalization: BN followed by a random per-step shift and scale (Santurkar 2018).

Santurkar et al. injected distributional instability on purpose after every BN layer, a shift
and scale that change at every training step, to test whether BN's benefit comes from keeping
layer-input distributions stable. This module is that experiment's layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bncourse._validation import check_real
from bncourse.nn.batchnorm import _as_channel, _BatchNormBase

__all__ = ["NoisyBatchNorm"]


def _check_range(name: str, value, *, positive: bool = False) -> tuple[float, float]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
        raise TypeError(f"expected {name} to be a pair of floats (low, high) (got {value!r})")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"expected {name} = (low, high) with finite low <= high (got {value!r})")
    if positive and low <= 0:
        raise ValueError(f"expected {name} to be positive (got {value!r})")
    return low, high


class NoisyBatchNorm(_BatchNormBase):
    r"""Batch normalization followed, in training mode, by a shift and scale redrawn every step.

    At each training forward ``t`` one centre per step is drawn for the scale and the shift,
    and each channel ``c`` gets its own value jittered around them:

    .. math::
        s_t \sim U(s_{lo}, s_{hi}),\quad \mu_t \sim U(\mu_{lo}, \mu_{hi}),\quad
        s_{t,c} = s_t + \sigma_j \varepsilon_{t,c},\quad
        m_{t,c} = \mu_t + \sigma_j \delta_{t,c},\quad \varepsilon, \delta \sim N(0, 1)

    .. math::
        y_c = s_{t,c} \left(\frac{x_c - \mathrm{E}[x_c]}{\sqrt{\mathrm{Var}[x_c] + \epsilon}}
              \gamma_c + \beta_c\right) + m_{t,c}

    with ``sigma_j = jitter``. The noise is the same for every example of the batch (it shifts
    the *distribution* of each unit, it is not per-example noise), and is drawn anew at every
    training-mode call. The running statistics are those of the
    un-noised input, exactly as in :class:`~bncourse.nn.BatchNorm`; eval mode adds no noise
    and equals :class:`~bncourse.nn.BatchNorm`. Gradients flow through the noise as through
    constants.

    Args:
        num_features, eps, momentum, affine, track_running_stats, bias: as
            :class:`~bncourse.nn.BatchNorm`.
        noise_mean_range: ``(mu_lo, mu_hi)`` of the per-step shift centre. Default:
            (-0.5, 0.5).
        noise_scale_range: ``(s_lo, s_hi)`` of the per-step scale centre, positive. Default:
            (1.0, 1.25).
        jitter: standard deviation ``sigma_j >= 0`` of the per-channel values around the
            step's centres. Default: 0.05.
        generator: a ``torch.Generator`` for the noise (reproducible and independent of the
            rest of training); ``None`` draws from the global RNG (seed with
            ``torch.manual_seed``).

    Attributes:
        last_scale, last_shift: (C,) the noise of the latest training forward, or ``None``
            before the first one. Not part of the ``state_dict``, which stays that of
            ``torch.nn.BatchNorm1d``.

    Shape:
        Input (N, C) or (N, C, *spatial); output the same. The noise is per channel.

    Examples::

        >>> bn = NoisyBatchNorm(16, generator=torch.Generator().manual_seed(0))
        >>> bn(torch.randn(8, 16)).shape
        torch.Size([8, 16])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        noise_mean_range: tuple[float, float] = (-0.5, 0.5),
        noise_scale_range: tuple[float, float] = (1.0, 1.25),
        jitter: float = 0.05,
        generator: torch.Generator | None = None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.noise_mean_range = _check_range("noise_mean_range", noise_mean_range)
        self.noise_scale_range = _check_range("noise_scale_range", noise_scale_range,
                                              positive=True)
        check_real("jitter", jitter, minimum=0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"expected generator to be a torch.Generator or None (got "
                f"{type(generator).__name__})"
            )
        self.jitter = float(jitter)
        self.generator = generator
        self.last_scale: Tensor | None = None
        self.last_shift: Tensor | None = None

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, noise_mean_range={self.noise_mean_range}, "
                f"noise_scale_range={self.noise_scale_range}, jitter={self.jitter}")

    def sample_noise(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Draws one step's ``(scale, shift)``, each (C,), with ``like``'s dtype and device.

        The draws always happen on the CPU (so a seeded CPU generator gives the same noise on
        every device) and are then moved.
        """
        g, c = self.generator, self.num_features
        u = torch.rand(2, generator=g, dtype=torch.float64)               # the step's centres
        eps = torch.randn(2, c, generator=g, dtype=torch.float64)         # per-channel jitter
        (s_lo, s_hi), (m_lo, m_hi) = self.noise_scale_range, self.noise_mean_range
        scale = s_lo + (s_hi - s_lo) * u[0] + self.jitter * eps[0]
        shift = m_lo + (m_hi - m_lo) * u[1] + self.jitter * eps[1]
        return (scale.to(like.device, like.dtype), shift.to(like.device, like.dtype))

    def _normalize_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        out, mean, var, count = super()._normalize_batch(x)
        if self.training:  # also reached in eval mode when track_running_stats=False
            scale, shift = self.sample_noise(out)
            self.last_scale, self.last_shift = scale, shift
            out = torch.addcmul(_as_channel(shift, x.dim()), out, _as_channel(scale, x.dim()))
        return out, mean, var, count
