"""Folding BN in float32 on a trained CNN: as accurate as the unfolded float32 model.

A fixed absolute bound (the goal's 1e-5) cannot hold on a trained network: its logits reach tens,
where neighbouring float32 numbers are several 1e-6 apart (one *ulp*), and the unfolded float32
model is itself a few ulps from the exact answer, sometimes more than 1e-5. So the criterion,
the same as notebook 06 §2's, compares both float32 models with the exact answer (the unfolded
model in float64):

1. the fold is exact algebra: in float64, folded and unfolded agree to ``ALGEBRA_ATOL``;
2. in float32 the folded model is no further from the exact answer than the unfolded one, plus
   ``ALLOWANCE_ULPS`` ulps of the largest logit (the fold rounds every weight once more; over
   22 trained seeds the excess was at most 1.5 ulps).
"""

import copy
import math

import pytest
import torch

from bncourse.models import cnn1d
from bncourse.nn import fold_batchnorm
from bncourse.train import train

ALGEBRA_ATOL = 1e-10
ALLOWANCE_ULPS = 4


def ulp(value: float) -> float:
    """Spacing of float32 numbers at ``|value|``: 2**(floor(log2 |value|) - 23)."""
    return 2.0 ** (math.floor(math.log2(abs(value))) - 23)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def fold_errors(model, x) -> dict:
    """Max abs errors of the folded and unfolded models against the exact answer."""
    exact_model = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = exact_model(x.double())
        out = {"top": exact.abs().max().item(),
               "algebra": max_error(fold_batchnorm(exact_model)(x.double()), exact),
               "unfolded": max_error(model(x), exact),
               "folded": max_error(fold_batchnorm(model)(x), exact)}
    out["excess_ulps"] = (out["folded"] - out["unfolded"]) / ulp(out["top"])
    return out


def test_ulp_is_the_float32_spacing():
    for v in (1.0, 3.0, 37.7, 1000.0):
        x = torch.tensor(v, dtype=torch.float32)
        assert (torch.nextafter(x, torch.tensor(math.inf)) - x).item() == ulp(v)


@pytest.fixture
def one_thread():
    """Train on one thread, as the notebooks do: on a shared 2-core machine, faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_float32_cnn_is_as_accurate_as_unfolded(mnist1d, one_thread, seed):
    torch.manual_seed(seed)
    model = cnn1d(norm="batch")
    train(model, mnist1d, epochs=2, lr=0.1, seed=seed)
    model.eval()
    e = fold_errors(model, mnist1d.x_test)
    assert e["top"] > 16, e                  # logits of tens: float32's spacing is >= 2e-6
    assert e["algebra"] <= ALGEBRA_ATOL, e
    assert e["excess_ulps"] <= ALLOWANCE_ULPS, e
