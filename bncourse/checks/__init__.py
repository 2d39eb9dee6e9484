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

And of the later notebooks: :func:`check_batchnorm_module` (02, a BN ``nn.Module``;
:mod:`~bncourse.checks.module`), :func:`check_ics_measure` (03, :mod:`~bncourse.checks.ics`),
:func:`check_bn_output_std` (04, :mod:`~bncourse.checks.noise`), :func:`check_renorm_rd` (05,
:mod:`~bncourse.checks.renorm`), :func:`check_fold_linear_bn` (06,
:mod:`~bncourse.checks.folding`), :func:`check_paired_interval` (07,
:mod:`~bncourse.checks.verdict`).

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
check_relu: all 1 cases match the reference.
>>> check_relu(np.abs)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
bncourse.checks.engine.ExerciseError: check_relu: `absolute` does not match the reference ...
- `out`: You return |x|. Fix: Use np.maximum(x, 0).
"""

from bncourse.checks.backward import check_backward, check_backward_compact
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
from bncourse.checks.ics import check_ics_measure
from bncourse.checks.module import check_batchnorm_module
from bncourse.checks.noise import check_bn_output_std
from bncourse.checks.renorm import check_renorm_rd
from bncourse.checks.running import check_running_update
from bncourse.checks.verdict import check_paired_interval

__all__ = [
    "ATOL",
    "RTOL",
    "SEED",
    "Case",
    "ExerciseError",
    "Hint",
    "Mistake",
    "check_backward",
    "check_backward_compact",
    "check_batchnorm_module",
    "check_bn_output_std",
    "check_fold_linear_bn",
    "check_forward",
    "check_function",
    "check_ics_measure",
    "check_paired_interval",
    "check_renorm_rd",
    "check_running_update",
    "skip",
    "with_solution",
]
