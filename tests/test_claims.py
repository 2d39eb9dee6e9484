"""The claim table: effect extraction on synthetic results with known answers, and every claim
decided from the stored results by the one verdict rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bncourse.experiments import registry
from bncourse.experiments.claims import (
    TARGET_FRACTION,
    USABLE_FRACTION,
    _speedup,
    claims,
    steps_to_target,
    usable_lrs,
)
from bncourse.experiments.results import Result
from bncourse.verdict import OUTCOMES, Verdict

CLAIMS = claims()
MIN_SEEDS = 5


def _result(arms: dict) -> Result:
    return Result({"name": "synthetic", "arms": arms})


def _run(seed, curve, steps_per_epoch=10, **metrics):
    return {"seed": seed, "val_acc_curve": curve, "steps_per_epoch": steps_per_epoch,
            "val_acc": curve[-1], "diverged": False, **metrics}


def test_steps_to_target_counts_steps_until_the_first_epoch_at_or_above_target():
    r = _result({"a": {"runs": [_run(0, [0.2, 0.5, 0.7, 0.8]), _run(1, [0.6, 0.6, 0.6, 0.9])]}})
    np.testing.assert_array_equal(steps_to_target(r, "a", 0.6), [30, 10])


def test_steps_to_target_counts_a_run_that_never_reaches_it_at_its_full_budget():
    r = _result({"a": {"runs": [_run(0, [0.1, 0.2, 0.3], steps_per_epoch=7)]}})
    np.testing.assert_array_equal(steps_to_target(r, "a", 0.9), [21])


def test_speedup_is_the_log2_step_ratio_to_a_target_both_arms_reach():
    slow = [_run(s, [0.1, 0.3, 0.5, 0.7, 0.8, 0.8, 0.8, 0.8]) for s in range(3)]
    fast = [_run(s, [0.5, 0.8, 0.85, 0.9, 0.9, 0.9, 0.9, 0.9]) for s in range(3)]
    r = _result({"none": {"runs": slow}, "batch": {"runs": fast}})
    target = TARGET_FRACTION * 0.8                      # 0.72: slow at epoch 5, fast at epoch 2
    assert 0.7 < target <= 0.8
    np.testing.assert_allclose(_speedup(r), [math.log2(5 / 2)] * 3)


def test_usable_lrs_keeps_the_rates_within_the_fraction_of_the_best_mean():
    grid = [0.01, 0.1, 1.0]
    accs = {0.01: [0.5, 0.7], 0.1: [0.8, 0.8], 1.0: [0.1, 0.75]}
    sweep = [{"lr": lr, "seed": s, "val_acc": a} for lr in grid for s, a in enumerate(accs[lr])]
    r = _result({"a": {"lr_grid": grid, "sweep": sweep}})
    got_grid, usable = usable_lrs(r, "a")
    threshold = USABLE_FRACTION * 0.8
    assert list(got_grid) == grid and threshold == pytest.approx(0.72)
    assert usable == [[0.1], [0.1, 1.0]]


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_every_claim_reads_registered_experiments(claim_id):
    assert set(CLAIMS[claim_id].experiments) <= set(registry())


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_every_claim_is_decided_from_at_least_five_seeds_per_setting(claim_id):
    effects = CLAIMS[claim_id].effects()
    assert effects
    for setting, samples in effects.items():
        assert len(samples) >= MIN_SEEDS, setting
        assert np.isfinite(samples).all(), setting


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_every_claim_gets_a_verdict_from_the_stored_results(claim_id):
    verdict = CLAIMS[claim_id].verdict()
    assert isinstance(verdict, Verdict) and verdict.outcome in OUTCOMES
    assert set(verdict.effects) == set(CLAIMS[claim_id].effects())


def test_claim_ids_are_unique_and_margins_positive():
    assert len({c.id for c in CLAIMS.values()}) == len(CLAIMS)
    assert all(c.margin > 0 and c.expect in ("greater", "less", "equivalent")
               for c in CLAIMS.values())
