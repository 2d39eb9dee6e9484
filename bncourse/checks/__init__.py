"""Exercise checkers: run a learner's function against the reference and say what is wrong.

Each checker calls the learner's function on a few fixed float64 inputs built so that mistakes
show: non-zero means, unequal channel scales, one channel with a tiny variance (~1e-4, where a
missing ``eps`` changes the output by percents), ``gamma`` and ``beta`` far from 1 and 0, random
upstream gradients. When the outputs differ from the reference, they are compared with a
catalogue of known mistakes -- each one a copy of the reference with that one bug -- so the
message can name the bug and its fix instead of just "mismatch". Where a checker computes batch
norm in numpy, its reference is the package's one numpy reference, :mod:`bncourse.functional`
(the module checker's is ``torch.nn.BatchNorm1d``, the module the exercise rebuilds).

On success a checker prints one deterministic line; on failure it raises :class:`ExerciseError`
(an ``AssertionError``, so an nbval run of a broken solution fails loudly) with the diagnosis,
which IPython shows without a traceback. A stuck learner continues with ``skip(checker)``, which
returns the exercise's reference solution (attached to the checker by :func:`with_solution`).

The checkers of notebook 01:

* :func:`check_forward` (:mod:`~bncourse.checks.forward`) -- the training-mode forward pass;
* :func:`check_backward` and :func:`check_backward_compact` (:mod:`~bncourse.checks.backward`)
  -- the staged and closed-form backward passes;
* :func:`check_running_update` (:mod:`~bncourse.checks.running`) -- PyTorch's
  running-statistics update.

And of the later notebooks, one module per concept:

* 02: :func:`check_channel_stats` (per-channel statistics of a conv input),
  :func:`check_cumulative_running_mean` (``momentum=None``), :func:`check_batchnorm_module`
  (a BN ``nn.Module``);
* 03: :func:`check_percentile_hook` (the percentile recorder), :func:`check_noisy_bn_forward`
  (noisy BN), :func:`check_ics_measure` (the gradient-change measure of ICS);
* 04: :func:`check_bn_output_std` (batch-mate noise), :func:`check_ghost_batchnorm` (ghost BN),
  :func:`check_direction_step` (the effective learning rate under weight decay);
* 05: :func:`check_precise_statistics` (population statistics from batch statistics),
  :func:`check_renorm_rd` (batch renorm), :func:`check_sync_statistics` (what synchronized BN
  all-reduces);
* 06: :func:`check_fold_linear_bn`, :func:`check_fold_conv1d_bn` (folding),
  :func:`check_bn_bytes` (the bytes-moved cost model);
* 07: :func:`check_paired_interval`, :func:`check_classify_setting` (the verdict rule for one
  setting), :func:`check_seeds_needed` (designing a decisive experiment);
* 08: :func:`check_layernorm_backward` (layer norm's backward pass),
  :func:`check_groupnorm_forward` (group norm of a conv input), :func:`check_rms_norm`
  (RMSNorm).

A checker for another exercise is a reference, a few :class:`Case` s and, optionally, a few
:class:`Mistake` s and :class:`Hint` s handed to :func:`check_function` (all in
:mod:`~bncourse.checks.engine`):

>>> import numpy as np
>>> def check_relu(fn):
...     x = np.random.default_rng(0).normal(size=(4, 3))
...     check_function(
...         fn, lambda x: np.maximum(x, 0), [Case("x of shape (4, 3)", (x,))],
...         [Mistake("abs", "You return |x|.", "Use np.maximum(x, 0).", np.abs)],
...         name="check_relu",
...     )
>>> check_relu(lambda x: x * (x > 0))
check_relu: the case matches the reference.
>>> check_relu(np.abs)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
bncourse.checks.engine.ExerciseError: check_relu: `absolute` does not match the reference ...
- `out`: You return |x|. Fix: Use np.maximum(x, 0).
"""

from bncourse.checks.adabn import check_adabn
from bncourse.checks.backward import check_backward, check_backward_compact
from bncourse.checks.channels import check_channel_stats
from bncourse.checks.conv_folding import check_fold_conv1d_bn
from bncourse.checks.cumulative import check_cumulative_running_mean
from bncourse.checks.engine import (
    ATOL,
    RTOL,
    SEED,
    Case,
    ExerciseError,
    Hint,
    Mistake,
    check_function,
    skip,
    with_solution,
)
from bncourse.checks.folding import check_fold_linear_bn
from bncourse.checks.forward import check_forward
from bncourse.checks.freeze import check_freeze_bn
from bncourse.checks.ghost import check_ghost_batchnorm
from bncourse.checks.groupnorm import check_groupnorm_forward
from bncourse.checks.ics import check_ics_measure
from bncourse.checks.layernorm import check_layernorm_backward
from bncourse.checks.memory_traffic import check_bn_bytes
from bncourse.checks.module import check_batchnorm_module
from bncourse.checks.noise import check_bn_output_std
from bncourse.checks.noisy import check_noisy_bn_forward
from bncourse.checks.percentiles import check_percentile_hook
from bncourse.checks.power import check_seeds_needed
from bncourse.checks.precise import check_precise_statistics
from bncourse.checks.renorm import check_renorm_rd
from bncourse.checks.rmsnorm import check_rms_norm
from bncourse.checks.running import check_running_update
from bncourse.checks.scale_invariance import check_direction_step
from bncourse.checks.sync import check_sync_statistics
from bncourse.checks.tent import check_tent_step
from bncourse.checks.verdict import check_paired_interval
from bncourse.checks.verdict_rule import check_classify_setting

__all__ = [
    "ATOL",
    "Case",
    "ExerciseError",
    "Hint",
    "Mistake",
    "RTOL",
    "SEED",
    "check_adabn",
    "check_backward",
    "check_backward_compact",
    "check_batchnorm_module",
    "check_bn_bytes",
    "check_bn_output_std",
    "check_channel_stats",
    "check_classify_setting",
    "check_cumulative_running_mean",
    "check_direction_step",
    "check_fold_conv1d_bn",
    "check_fold_linear_bn",
    "check_forward",
    "check_freeze_bn",
    "check_function",
    "check_ghost_batchnorm",
    "check_groupnorm_forward",
    "check_ics_measure",
    "check_layernorm_backward",
    "check_noisy_bn_forward",
    "check_paired_interval",
    "check_percentile_hook",
    "check_precise_statistics",
    "check_renorm_rd",
    "check_rms_norm",
    "check_running_update",
    "check_seeds_needed",
    "check_sync_statistics",
    "check_tent_step",
    "skip",
    "with_solution",
]
