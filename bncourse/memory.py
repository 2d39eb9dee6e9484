"""What autograd keeps for the backward pass: the activation memory of a training step.

:func:`saved_tensor_bytes` runs a forward under ``torch.autograd.graph.saved_tensors_hooks`` and
adds up the tensors autograd saves, each storage once, parameters excluded (they exist anyway).
Notebook 06 measures BN's activation memory with it, and the tests of
:class:`bncourse.nn.InPlaceABN` its saving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = ["saved_tensor_bytes"]


def saved_tensor_bytes(forward: Callable[[], Tensor],
                       exclude: Iterable[Tensor] = ()) -> tuple[int, int]:
    """Runs ``forward()`` and returns ``(bytes, count)`` of the distinct storages autograd saved
    for its backward, without those of ``exclude`` (say, the model's parameters).

    Examples::

        >>> x = torch.randn(4, 3, requires_grad=True)
        >>> saved_tensor_bytes(lambda: (x * x).sum())     # x, saved once for both factors
        (48, 1)
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(saved.values()), len(saved)
