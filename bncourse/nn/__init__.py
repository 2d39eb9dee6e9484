"""Batch normalization as PyTorch modules, written from scratch, and the variants the course needs.

One file per variant, each overriding only what differs from :class:`_BatchNormBase`
(in :mod:`bncourse.nn.batchnorm`).
"""

from bncourse.nn.batchnorm import BatchNorm, batch_norm_train
from bncourse.nn.fold import fold_batchnorm, is_batchnorm
from bncourse.nn.ghost import GhostBatchNorm
from bncourse.nn.noisy import NoisyBatchNorm
from bncourse.nn.population import PopulationStatistics
from bncourse.nn.precise import precise_bn
from bncourse.nn.renorm import BatchRenorm
from bncourse.nn.sync import SyncBatchNorm

__all__ = [
    "BatchNorm",
    "BatchRenorm",
    "GhostBatchNorm",
    "NoisyBatchNorm",
    "PopulationStatistics",
    "SyncBatchNorm",
    "batch_norm_train",
    "fold_batchnorm",
    "is_batchnorm",
    "precise_bn",
]
