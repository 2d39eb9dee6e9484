"""BN with (almost) no batch noise: training statistics over the batch plus a fixed reference set.

The control for "BN regularizes through the noise of its batch statistics": everything as in BN
except that the statistics barely depend on which examples share the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PopulationStatistics"]


class PopulationStatistics(nn.Module):
    """Wraps a BN network so that, in training mode, every batch is normalized together with a
    fixed reference set.

    Training mode: ``net(cat([x, reference]))[:len(x)]``: each BN layer takes its statistics over
    the N batch rows and the R reference rows, and only the batch's outputs are returned, so the
    loss sees only the batch. A batch then moves a channel's mean by about
    :math:`\\sqrt{N}/(N + R)` standard deviations instead of :math:`1/\\sqrt{N}`: with N = 50 and
    the R = 500 training examples as reference, about ten times less noise. The running statistics
    follow the batch-plus-reference statistics, which are close to the population's.
    Eval mode: ``net(x)``, unchanged.

    Args:
        net: the network, with its BN layers.
        reference: (R, *) inputs appended to every training batch (kept as a non-persistent
            buffer: it moves with ``.to()`` and is not saved in ``state_dict``).

    Shape:
        Input (N, *) as ``net``'s; output ``net``'s output for the N inputs.
    """

    def __init__(self, net: nn.Module, reference: Tensor) -> None:
        super().__init__()
        if not isinstance(reference, Tensor) or reference.dim() < 1 or reference.shape[0] < 1:
            raise ValueError(
                "expected reference to be a tensor of shape (R, *) with R >= 1 "
                f"(got {type(reference).__name__} {getattr(reference, 'shape', '')})"
            )
        self.net = net
        self.register_buffer("reference", reference.detach().clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.net(x)
        if x.shape[1:] != self.reference.shape[1:]:
            raise ValueError(
                f"expected inputs of shape (N, {', '.join(map(str, self.reference.shape[1:]))}) "
                f"like the reference (got {tuple(x.shape)})"
            )
        return self.net(torch.cat([x, self.reference]))[: x.shape[0]]     # (N, *out)
