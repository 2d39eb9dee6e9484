"""check_bn_output_std (notebook 04): the batch noise of one example's normalized output.

The reference is the delta-method formula, not a batch-norm computation: there is nothing in
:mod:`bncourse.functional` to call (a Monte-Carlo estimate would be neither exact nor fast).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bncourse.checks.engine import Case, Hint, Mistake, _fn_name, check_function, with_solution

__all__ = ["check_bn_output_std"]


def _bn_output_std_reference(z, batch_size, kurtosis=3.0):
    """sqrt((B - 1) / B^2 * (1 + z^2 (kurtosis - 1) / 4)): the delta-method standard deviation
    of ``(x - mu_B) / sigma_B`` for an example at z population standard deviations, whose
    B - 1 batch mates are drawn at random."""
    z, b = np.asarray(z, dtype=np.float64), np.asarray(batch_size, dtype=np.float64)
    return np.sqrt((b - 1) / b**2 * (1 + z**2 * (kurtosis - 1) / 4))


def _noise_variant(*, mates=lambda b: b - 1, var_term=lambda z, k: z**2 * (k - 1) / 4,
                   root=True):
    def fn(z, batch_size, kurtosis=3.0):
        z, b = np.asarray(z, dtype=np.float64), np.asarray(batch_size, dtype=np.float64)
        v = np.broadcast_to(mates(b) / b**2 * (1 + var_term(z, kurtosis)), np.broadcast(z, b).shape)
        return np.sqrt(v) if root else v
    return fn


_NOISE_MISTAKES = (
    Mistake("no_sqrt", "You return the variance of the normalized output, not its standard "
                       "deviation.",
            "Take the square root of the whole expression at the end.",
            _noise_variant(root=False)),
    Mistake("n_not_n_minus_1",
            "You use 1/B for the variance of the batch mean, as if all B values were random. "
            "The example itself is fixed; only its B - 1 batch mates are random, so the "
            "fluctuating part of the mean is (sum of B - 1 values) / B, with variance "
            "(B - 1) / B^2 (the two differ most for small batches: at B = 2, 1/4 vs 1/2).",
            "Use (B - 1) / B**2 in place of 1 / B.",
            _noise_variant(mates=lambda b: b)),
    Mistake("std_of_a_mean",
            "You return 1 / sqrt(B), the textbook standard deviation of a mean of B random "
            "values: it counts the example as random and leaves out the noise of the batch "
            "variance.",
            "Use (B - 1) / B**2 for the mean and add the variance term z**2 (kurtosis - 1) / 4.",
            _noise_variant(mates=lambda b: b, var_term=lambda z, k: 0)),
    Mistake("mean_noise_only",
            "You keep only the noise of the batch mean. The batch variance is noisy too, and "
            "its noise moves an example in proportion to how far it is from the mean (z).",
            "Multiply by (1 + z**2 * (kurtosis - 1) / 4).",
            _noise_variant(var_term=lambda z, k: 0)),
    Mistake("half_not_quarter",
            "The variance term has (kurtosis - 1) / 2: you took the derivative of 1/sqrt(v), "
            "-1/2, but did not square it. A variance picks up the square of the derivative, "
            "1/4.",
            "Use z**2 * (kurtosis - 1) / 4.",
            _noise_variant(var_term=lambda z, k: z**2 * (k - 1) / 2)),
    Mistake("kurtosis_not_minus_1",
            "You use the kurtosis itself for the variance of the squared deviations. "
            "Var[(x - mu)^2] = E[(x - mu)^4] - sigma^4 = (kurtosis - 1) sigma^4.",
            "Use (kurtosis - 1), which is 2 for a Gaussian.",
            _noise_variant(var_term=lambda z, k: z**2 * k / 4)),
    Mistake("z_not_squared",
            "The variance term uses z, not z**2, so an example below the mean (z < 0) gets "
            "less noise than the mean itself. The noise of the scale moves x_hat by -z/2 times "
            "the relative change of the variance; its variance has z**2.",
            "Use z**2.",
            _noise_variant(var_term=lambda z, k: z * (k - 1) / 4)),
    Mistake("gaussian_only",
            "You hard-code a Gaussian (kurtosis - 1 = 2) and ignore the `kurtosis` argument: "
            "real features are often heavier- or lighter-tailed.",
            "Use the `kurtosis` argument: z**2 * (kurtosis - 1) / 4.",
            _noise_variant(var_term=lambda z, k: z**2 / 2)),
)

_NOISE_HINTS = (
    Hint("gaussian", "your function is right for kurtosis 3 (a Gaussian) but not for other "
                     "kurtoses: is the `kurtosis` argument used?"),
)


def _noise_cases() -> list[Case]:
    return [
        Case("z = [0, 0.5, -1.5, 2.5], batch_size = 16, kurtosis = 3",
             (np.array([0.0, 0.5, -1.5, 2.5]), 16, 3.0), tags=frozenset({"gaussian"})),
        Case("z = 1.5, batch_size = [2, 4, 8, 64, 256], kurtosis = 3",
             (1.5, np.array([2, 4, 8, 64, 256]), 3.0), tags=frozenset({"gaussian"})),
        Case("z = [-1, 0.3, 2], batch_size = 32, kurtosis = 6",
             (np.array([-1.0, 0.3, 2.0]), 32, 6.0)),
        Case("z = [1.2, -0.7], batch_size = 10, kurtosis = 1.8",
             (np.array([1.2, -0.7]), 10, 1.8)),
    ]


@with_solution(_bn_output_std_reference)
def check_bn_output_std(fn: Callable[..., Any]) -> None:
    """Check ``fn(z, batch_size, kurtosis=3.0)``: the standard deviation, over random batch
    mates, of the normalized output of one example that lies ``z`` population standard
    deviations from the mean, for a feature with the given kurtosis (delta method,
    ``sqrt((B - 1) / B**2 * (1 + z**2 * (kurtosis - 1) / 4))``). ``z`` and ``batch_size`` may be
    arrays that broadcast.

    On success prints one deterministic line.

    Raises:
        ExerciseError: naming the mistake (variance instead of standard deviation, 1/B instead
            of (B - 1)/B^2, a missing variance term, 1/2 instead of 1/4, ...).
    """
    def per_input(z, batch_size, kurtosis=3.0):
        # a formula that leaves z out returns one value for all z: spread it over the inputs
        out = fn(z, batch_size, kurtosis)
        try:
            shape = np.broadcast(np.asarray(z), np.asarray(batch_size)).shape
            return np.broadcast_to(np.asarray(out, dtype=np.float64), shape)
        except (TypeError, ValueError):
            return out

    per_input.__name__ = _fn_name(fn)
    check_function(
        per_input, _bn_output_std_reference, _noise_cases(), _NOISE_MISTAKES, _NOISE_HINTS,
        name="check_bn_output_std", outputs=("std",),
        advice="write it as sqrt(var_mean + var_scale): the batch mean's noise (B - 1) / B**2 "
               "plus z**2 / 4 times the noise of the batch variance, (B - 1) / B**2 * "
               "(kurtosis - 1).",
    )
