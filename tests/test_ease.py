"""EASE's closed form against its definition: one ridge regression per item on the other items."""

from __future__ import annotations

import numpy as np
import pytest

from udfs.ease import ease_weights, spd_inverse


def ridge_per_column(x: np.ndarray, l2: float) -> np.ndarray:
    """Column j of B = argmin_b ||x_j - X_{-j} b||² + l2 ||b||² (item j itself excluded)."""
    n = x.shape[1]
    out = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        out[others, j] = np.linalg.solve(a.T @ a + l2 * np.eye(n - 1), a.T @ x[:, j])
    return out


@pytest.mark.parametrize("l2", [0.5, 3.0, 250.0])
def test_closed_form_equals_one_ridge_regression_per_item(l2):
    rng = np.random.default_rng(3)
    x = (rng.random((40, 7)) < 0.3).astype(float)
    got = ease_weights(x.T @ x, l2)
    np.testing.assert_allclose(got, ridge_per_column(x, l2), atol=1e-12)
    assert np.all(np.diag(got) == 0.0)


def test_two_items_always_bought_together_predict_each_other():
    # users 0-2 buy a and b; user 3 buys c alone: a and b point at each other, c at nothing
    x = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=float)
    b = ease_weights(x.T @ x, 1.0)
    # by hand: column a regresses x_a on (b, c): G_-a = [[3, 0], [0, 1]], Xᵀx_a = [3, 0]
    assert b[1, 0] == pytest.approx(3.0 / 4.0)
    assert b[2, 0] == pytest.approx(0.0)
    assert b[0, 1] == pytest.approx(3.0 / 4.0)
    assert b[:, 2] == pytest.approx([0.0, 0.0, 0.0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="square"):
        ease_weights(np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        ease_weights(np.eye(2), 0.0)


@pytest.mark.parametrize(("n", "block"), [(1, 4), (7, 3), (10, 10), (11, 4), (40, 64)])
def test_the_cholesky_inverse_equals_numpy_s_in_place_across_row_blocks(n, block):
    rng = np.random.default_rng(n)
    x = (rng.random((60, n)) < 0.3).astype(float)
    a = x.T @ x + 2.5 * np.eye(n)
    expected = np.linalg.inv(a)
    work = a.copy()
    got = spd_inverse(work, block=block)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    assert np.array_equal(got, got.T)  # both triangles filled, exactly symmetric
    assert np.shares_memory(got, work) and got.flags.c_contiguous  # no second n x n array


def test_a_gram_that_is_not_positive_definite_falls_back_to_the_general_inverse():
    gram = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalue -1
    assert spd_inverse(gram + 0.5 * np.eye(3)) is None
    p = np.linalg.inv(gram + 0.5 * np.eye(3))
    expected = -p / np.diag(p)[np.newaxis, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(gram, 0.5), expected, atol=1e-12)
