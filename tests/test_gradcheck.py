"""Numerical gradients against known derivatives; the relative error's definition."""

import numpy as np
import pytest

from bncourse.gradcheck import numerical_gradient, rel_error

CENTRAL_DIFF_ATOL = 1e-8  # O(h^2) truncation + O(eps/h) round-off, float64, h = 1e-5


def test_numerical_gradient_of_elementwise_square_is_two_x_times_dout():
    rng = np.random.default_rng(0)
    x, dout = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    np.testing.assert_allclose(numerical_gradient(lambda v: v**2, x, dout), 2 * x * dout,
                               atol=CENTRAL_DIFF_ATOL)


def test_numerical_gradient_of_matrix_product_is_dout_times_w_transposed():
    rng = np.random.default_rng(1)
    x, w, dout = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(numerical_gradient(lambda v: v @ w, x, dout), dout @ w.T,
                               atol=CENTRAL_DIFF_ATOL)


def test_numerical_gradient_restores_x():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    before = x.copy()
    numerical_gradient(np.sin, x, np.ones_like(x))
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_rejects_non_positive_step():
    with pytest.raises(ValueError, match="expected h > 0"):
        numerical_gradient(np.sin, np.zeros(2), np.ones(2), h=0.0)


def test_rel_error_is_zero_for_equal_arrays_and_scale_free():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, 1.01 * a) == pytest.approx(rel_error(1e6 * a, 1.01e6 * a))


def test_rel_error_of_opposite_values_is_one():
    assert rel_error(np.array([2.0]), np.array([-2.0])) == pytest.approx(1.0)


def test_rel_error_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        rel_error(np.zeros(2), np.zeros(3))
