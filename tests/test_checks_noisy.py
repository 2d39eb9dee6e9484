"""check_noisy_bn_forward (notebook 03): the reference passes, each known mistake is named."""

import numpy as np
import pytest
import torch

from bncourse.checks.engine import ExerciseError
from bncourse.checks.noisy import (
    _NOISY_MISTAKES,
    _noisy_cases,
    _noisy_reference,
    check_noisy_bn_forward,
)


def _c(v, x):
    return np.asarray(v).reshape(1, -1, *[1] * (x.ndim - 2))


def _learner(*, axes=None, ddof=0, order="right", noise_on_input=False):
    """A learner's noisy BN forward, correct unless an option adds one mistake."""
    def noisy_bn_forward(x, gamma, beta, scale, shift, eps=1e-5):
        if noise_on_input:
            x = _c(scale, x) * x + _c(shift, x)
        ax = (0, *range(2, x.ndim)) if axes is None else axes
        x_hat = (x - x.mean(axis=ax, keepdims=True)) / np.sqrt(
            x.var(axis=ax, ddof=ddof, keepdims=True) + eps)
        s, m, g, b = _c(scale, x), _c(shift, x), _c(gamma, x), _c(beta, x)
        y = g * x_hat + b
        if noise_on_input or order == "none":
            return y
        return {"right": lambda: s * y + m,
                "before_affine": lambda: g * (s * x_hat + m) + b,
                "shift_first": lambda: s * (y + m),
                "swapped": lambda: m * y + s}[order]()
    return noisy_bn_forward


_BUGS = [
    (_learner(order="none"), "no_noise", "plain BN"),
    (_learner(noise_on_input=True), "noise_on_input", "applied to x, before normalizing"),
    (_learner(order="before_affine"), "noise_before_affine", "before gamma and beta"),
    (_learner(order="shift_first"), "shift_before_scale", "shift is added before the scale"),
    (_learner(order="swapped"), "noise_swapped", "swapped"),
    (_learner(ddof=1), "unbiased_variance", "unbiased variance"),
    (_learner(axes=0), "axis0_stats", "over axis 0 only"),
]


def test_reference_solution_passes_with_one_line(capsys):
    check_noisy_bn_forward(check_noisy_bn_forward.solution)
    assert capsys.readouterr().out == "check_noisy_bn_forward: all 3 cases match the reference.\n"


def test_learner_style_solution_passes(capsys):
    check_noisy_bn_forward(_learner())
    assert "all 3 cases match" in capsys.readouterr().out


def test_reference_is_the_package_layer_with_the_given_noise():
    # the layer's own draw, replayed through the reference, gives the layer's output
    from bncourse.nn import NoisyBatchNorm

    layer = NoisyBatchNorm(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(1.5, 2.5)
        layer.bias.uniform_(-1.0, 1.0)
    x = torch.randn(10, 3, 4, dtype=torch.float64)
    out = layer.train()(x).detach().numpy()
    expected = _noisy_reference(x.numpy(), layer.weight.detach().numpy(),
                                layer.bias.detach().numpy(), layer.last_scale.numpy(),
                                layer.last_shift.numpy())
    np.testing.assert_allclose(expected, out, rtol=1e-12, atol=1e-12)


def test_cases_have_noise_far_from_identity():
    for case in _noisy_cases():
        scale, shift = case.args[3], case.args[4]
        assert np.abs(scale - 1).max() > 0.2 and np.abs(shift).min() >= 0.3


def test_every_catalogued_mistake_has_a_learner_mutant():
    assert {key for _, key, _ in _BUGS} == {m.key for m in _NOISY_MISTAKES}


@pytest.mark.parametrize("fn, key, phrase", _BUGS, ids=[k for _, k, _ in _BUGS])
def test_mistake_is_named(fn, key, phrase):
    with pytest.raises(ExerciseError) as info:
        check_noisy_bn_forward(fn)
    assert key in info.value.mistakes
    assert phrase in str(info.value)


def test_stub_says_not_implemented_yet():
    def noisy_bn_forward(x, gamma, beta, scale, shift, eps=1e-5):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match="not implemented yet"):
        check_noisy_bn_forward(noisy_bn_forward)


def test_returning_none_asks_for_the_return():
    with pytest.raises(ExerciseError, match="returned None"):
        check_noisy_bn_forward(lambda x, gamma, beta, scale, shift, eps=1e-5: None)


def test_wrong_output_shape_is_reported_with_both_shapes():
    def noisy_bn_forward(x, gamma, beta, scale, shift, eps=1e-5):
        return _learner()(x, gamma, beta, scale, shift, eps).mean(axis=0)

    with pytest.raises(ExerciseError, match=r"has shape \(5,\) .*expected \(16, 5\)"):
        check_noisy_bn_forward(noisy_bn_forward)


def test_unreshaped_noise_gets_the_broadcast_hint():
    def noisy_bn_forward(x, gamma, beta, scale, shift, eps=1e-5):
        y = _learner(order="none")(x, gamma, beta, scale, shift, eps)
        return scale * y + shift                     # (C,) against (N, C, L): broadcast error

    with pytest.raises(ExerciseError, match=r"\(1, C, 1\) for \(N, C, L\)"):
        check_noisy_bn_forward(noisy_bn_forward)


def test_missing_eps_argument_shows_how_the_checker_calls_it():
    def noisy_bn_forward(x, gamma, beta, scale, shift):
        return _learner()(x, gamma, beta, scale, shift)

    with pytest.raises(ExerciseError, match="eps=..."):
        check_noisy_bn_forward(noisy_bn_forward)
