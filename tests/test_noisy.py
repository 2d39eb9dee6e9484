"""bncourse.nn.NoisyBatchNorm: BN in eval mode, BN plus the recipe's per-step noise in training."""

import pytest
import torch
from torch import nn

from bncourse.nn import BatchNorm, NoisyBatchNorm

FLOAT64_ATOL = 1e-12
STAT_TOL = 0.03     # sampling error of a mean over 4000 draws is ~0.005 for these ranges
JITTER_RTOL = 0.05  # relative error of a std estimated from 24000 normal draws: ~0.5%
C = 6


def seeded(seed=0, **kwargs):
    return NoisyBatchNorm(C, generator=torch.Generator().manual_seed(seed), **kwargs).double()


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g, dtype=torch.float64) * 2 + 1


def test_eval_mode_equals_batchnorm():
    noisy, plain = seeded(), BatchNorm(C).double()
    for step in range(3):
        noisy(batch(step))
        plain(batch(step))
    noisy.eval()
    plain.eval()
    torch.testing.assert_close(noisy(batch(9)), plain(batch(9)), atol=FLOAT64_ATOL, rtol=0)


def test_running_statistics_are_those_of_the_clean_input():
    noisy, plain = seeded(), BatchNorm(C).double()
    for step in range(3):
        noisy(batch(step))
        plain(batch(step))
    for name, buf in plain.named_buffers():
        torch.testing.assert_close(getattr(noisy, name), buf, atol=FLOAT64_ATOL, rtol=0)


def test_training_output_is_batchnorm_times_scale_plus_shift():
    noisy, plain = seeded(), BatchNorm(C).double()
    out = noisy(batch())
    expected = plain(batch()) * noisy.last_scale + noisy.last_shift
    torch.testing.assert_close(out, expected, atol=FLOAT64_ATOL, rtol=0)


def test_noise_changes_every_step():
    noisy = seeded()
    draws = []
    for _ in range(3):
        noisy(batch())
        draws.append((noisy.last_scale.clone(), noisy.last_shift.clone()))
    for (s0, m0), (s1, m1) in zip(draws[:-1], draws[1:], strict=True):
        assert not torch.equal(s0, s1) and not torch.equal(m0, m1)


def test_same_generator_seed_gives_same_outputs():
    torch.testing.assert_close(seeded(3)(batch()), seeded(3)(batch()), atol=0, rtol=0)
    assert not torch.equal(seeded(3)(batch()), seeded(4)(batch()))


def test_global_seed_reproduces_without_generator():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(NoisyBatchNorm(C).double()(batch()))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_noise_statistics_match_the_recipe():
    jitter, steps = 0.05, 4000
    noisy = seeded(jitter=jitter)
    scales, shifts = torch.stack(
        [torch.stack(noisy.sample_noise(torch.empty((), dtype=torch.float64)))
         for _ in range(steps)]).unbind(1)                                    # (steps, C) each
    # step centres: the channel means, U(1, 1.25) and U(-0.5, 0.5)
    s_centre, m_centre = scales.mean(1), shifts.mean(1)
    assert abs(s_centre.mean() - 1.125) < STAT_TOL
    assert abs(s_centre.std() - 0.25 / 12**0.5) < STAT_TOL
    assert abs(m_centre.mean()) < STAT_TOL
    assert abs(m_centre.std() - 1 / 12**0.5) < STAT_TOL
    # per-channel jitter around the centre: N(0, jitter^2) (the centring removes 1 of C dof)
    dev = scales - s_centre[:, None]
    assert abs(dev.std() * (C / (C - 1)) ** 0.5 / jitter - 1) < JITTER_RTOL
    # the centres stay in U's support, up to the jitter's share of a channel mean
    slack = 5 * jitter / C**0.5
    assert s_centre.min() >= 1.0 - slack and s_centre.max() <= 1.25 + slack


def test_zero_jitter_gives_one_scale_and_shift_per_step():
    noisy = seeded(jitter=0.0)
    noisy(batch())
    assert torch.all(noisy.last_scale == noisy.last_scale[0])
    assert torch.all(noisy.last_shift == noisy.last_shift[0])


def test_gradcheck_with_noise_fixed():
    noisy = seeded()
    with torch.no_grad():
        noisy.weight.normal_(1.0, 0.3)
        noisy.bias.normal_()
    x = batch(n=5).requires_grad_(True)

    def fixed_noise_forward(x, weight, bias):
        noisy.generator.manual_seed(11)  # the same draw at every call
        return noisy(x)

    assert torch.autograd.gradcheck(fixed_noise_forward, (x, noisy.weight, noisy.bias))


def test_state_dict_round_trips_with_torch_batchnorm1d():
    ref = nn.BatchNorm1d(C).double()
    with torch.no_grad():
        ref.weight.normal_()
        ref(batch())
    noisy = seeded()
    noisy.load_state_dict(ref.state_dict())
    assert noisy.state_dict().keys() == ref.state_dict().keys()
    back = nn.BatchNorm1d(C).double()
    back.load_state_dict(noisy.state_dict())
    ref.eval()
    back.eval()
    torch.testing.assert_close(back(batch(1)), ref(batch(1)), atol=0, rtol=0)


def test_conv_input_gets_per_channel_noise():
    noisy = seeded(jitter=0.1)
    x = torch.randn(4, C, 7, dtype=torch.float64)
    out = noisy(x)
    plain = BatchNorm(C).double()(x)
    expected = plain * noisy.last_scale[:, None] + noisy.last_shift[:, None]
    torch.testing.assert_close(out, expected, atol=FLOAT64_ATOL, rtol=0)


def test_eval_without_running_stats_adds_no_noise():
    noisy = seeded(track_running_stats=False).eval()
    plain = BatchNorm(C, track_running_stats=False).double().eval()
    torch.testing.assert_close(noisy(batch()), plain(batch()), atol=FLOAT64_ATOL, rtol=0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"noise_mean_range": 0.5}, TypeError, "pair of floats"),
    ({"noise_mean_range": (0.5, -0.5)}, ValueError, "low <= high"),
    ({"noise_scale_range": (0.0, 1.0)}, ValueError, "positive"),
    ({"jitter": -0.1}, ValueError, "jitter >= 0"),
    ({"jitter": "0.1"}, TypeError, "jitter to be a number"),
    ({"generator": 0}, TypeError, "torch.Generator"),
])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        NoisyBatchNorm(C, **kwargs)
