"""Batch normalization as PyTorch modules, written from scratch, and the variants the course needs.

One file per variant, each overriding only what differs from :class:`_BatchNormBase`
(in :mod:`bncourse.nn.batchnorm`); and beyond BN, normalizations without batch statistics:
:class:`RMSNorm`, :class:`DyT` and weight standardization.
"""

from bncourse.nn.batchnorm import BatchNorm, batch_norm_train
from bncourse.nn.dyt import DyT
from bncourse.nn.fold import fold_batchnorm, is_batchnorm
from bncourse.nn.fused import FusedBatchNorm
from bncourse.nn.ghost import GhostBatchNorm
from bncourse.nn.inplace_abn import InPlaceABN
from bncourse.nn.noisy import NoisyBatchNorm
from bncourse.nn.population import PopulationStatistics
from bncourse.nn.precise import precise_bn
from bncourse.nn.renorm import BatchRenorm
from bncourse.nn.rmsnorm import RMSNorm
from bncourse.nn.sync import SyncBatchNorm
from bncourse.nn.weight_standardization import (
    StandardizedWeight,
    WSConv1d,
    WSConv2d,
    weight_standardization,
)

__all__ = [
    "BatchNorm",
    "BatchRenorm",
    "DyT",
    "FusedBatchNorm",
    "GhostBatchNorm",
    "InPlaceABN",
    "NoisyBatchNorm",
    "PopulationStatistics",
    "RMSNorm",
    "StandardizedWeight",
    "SyncBatchNorm",
    "WSConv1d",
    "WSConv2d",
    "batch_norm_train",
    "fold_batchnorm",
    "is_batchnorm",
    "precise_bn",
    "weight_standardization",
]
