import itertools

import numpy as np
import pytest

from fpdm.budget import BudgetError
from fpdm.calibrate import allocate_by_table


def _brute_force(errors, total):
    steps, kmax = errors.shape
    options = [ks for ks in itertools.product(range(1, kmax + 1), repeat=steps) if sum(ks) == total]
    return min(sum(errors[j, k - 1] for j, k in enumerate(ks)) for ks in options)


def test_spends_exactly_and_is_optimal_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps, kmax = rng.integers(1, 5), rng.integers(1, 6)
        total = int(rng.integers(steps, steps * kmax + 1))
        errors = rng.random((steps, kmax)) * rng.choice([1.0, 100.0])
        alloc = allocate_by_table(errors, total)
        assert len(alloc) == steps and sum(alloc) == total and all(1 <= k <= kmax for k in alloc)
        got = sum(errors[j, k - 1] for j, k in enumerate(alloc))
        assert got == pytest.approx(_brute_force(errors, total), rel=1e-12)


def test_iterations_go_where_the_table_says_they_pay():
    # errors w_j 2^-k: an iteration at step j buys w_j 2^-(k+1), so with w = (8, 1) the first three extra
    # iterations all go to step 0 (gains 2, 1, 0.5 beat step 1's 0.25), the fourth is a tie (0.25 each)
    w = np.array([8.0, 1.0])
    errors = w[:, None] * 2.0 ** -np.arange(1, 9)[None]
    assert allocate_by_table(errors, 2) == [1, 1]
    assert allocate_by_table(errors, 5) == [4, 1]
    assert allocate_by_table(errors, 6) == [5, 1]  # tie broken toward the earlier step
    assert allocate_by_table(errors[::-1], 5) == [1, 4]
    flat = np.ones((3, 4))
    assert allocate_by_table(flat, 7) == [4, 2, 1]  # nothing to gain anywhere: earlier steps first


def test_errors_named():
    with pytest.raises(BudgetError, match="cannot be spread over 3 steps"):
        allocate_by_table(np.ones((3, 2)), 7)
    with pytest.raises(ValueError, match="finite"):
        allocate_by_table(np.array([[1.0, np.nan]]), 2)
    with pytest.raises(ValueError, match="table"):
        allocate_by_table(np.ones(3), 3)
