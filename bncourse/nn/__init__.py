"""Batch normalization as PyTorch modules, written from scratch, and the variants the course needs.

One file per variant, each overriding only what differs from :class:`_BatchNormBase`
(in :mod:`bncourse.nn.batchnorm`).
"""

from bncourse.nn.batchnorm import BatchNorm, _BatchNormBase, batch_norm_train

__all__ = ["BatchNorm", "batch_norm_train", "_BatchNormBase"]
