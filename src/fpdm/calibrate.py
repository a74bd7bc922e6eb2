"""Calibrated allocation of a block budget (beyond the paper): iterations go where they reduce the error.

The seed's profiles are hand-shaped ramps. Here the allocation comes from a measured table: for each
sampling step j and each iteration count k, the predicted error `errors[j, k - 1]` that running step j with
k iterations adds to the final sample. Given a total number of iterations, `allocate_by_table` returns the
integer counts (>= 1 each, summing exactly to the total) that minimise the summed predicted error — an exact
dynamic programme, since the tables are small (steps × iterations).
"""

from __future__ import annotations

import numpy as np

from .budget import BudgetError

__all__ = ["allocate_by_table"]


def allocate_by_table(errors: np.ndarray, total: int) -> list[int]:
    """Iterations per step minimising sum_j errors[j, k_j - 1] subject to sum_j k_j == total and
    1 <= k_j <= errors.shape[1]. Exact (dynamic programme over steps and iterations spent); among equal
    optima the one that gives more iterations to earlier steps is chosen, so the result is deterministic."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 1 or e.shape[1] < 1:
        raise ValueError(f"errors must be a (steps, max_iters) table, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("errors must be finite")
    steps, kmax = e.shape
    if not steps <= total <= steps * kmax:
        raise BudgetError(f"{total} iterations cannot be spread over {steps} steps with 1..{kmax} each")
    # best[t]: least error of the steps so far having spent t iterations; choice[j, t]: step j's k there
    inf = np.inf
    best = np.full(total + 1, inf)
    best[0] = 0.0
    choice = np.zeros((steps, total + 1), dtype=np.int64)
    for j in range(steps):
        new = np.full(total + 1, inf)
        for k in range(1, min(kmax, total) + 1):  # smaller k first: on ties a later step takes fewer
            cand = np.full(total + 1, inf)
            cand[k:] = best[:total + 1 - k] + e[j, k - 1]
            better = cand < new
            new[better] = cand[better]
            choice[j, better] = k
        best = new
    alloc = []
    t = total
    for j in range(steps - 1, -1, -1):
        k = int(choice[j, t])
        alloc.append(k)
        t -= k
    assert t == 0
    return alloc[::-1]
