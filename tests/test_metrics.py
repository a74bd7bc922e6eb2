import numpy as np
import pytest

from fpdm.evaluation.metrics import (
    bootstrap_fid,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid,
    precision_recall,
)


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_closed_form_commuting():
    # Same eigenbasis: FD = |m1 - m2|² + Σ (sqrt(l1) - sqrt(l2))²
    r = _rotation(5, 0)
    l1, l2 = np.array([1.0, 2, 3, 4, 5]), np.array([0.5, 4, 1, 9, 2])
    m1, m2 = np.arange(5.0), np.ones(5)
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum()
    got = frechet_distance(m1, r @ np.diag(l1) @ r.T, m2, r @ np.diag(l2) @ r.T)
    assert abs(got - want) / want < 1e-6


def test_frechet_closed_form_non_commuting_2d():
    # tr sqrt(M) for a 2×2 matrix with non-negative eigenvalues = sqrt(tr M + 2 sqrt(det M)), M = S1 S2
    s1 = np.array([[2.0, 0.3], [0.3, 1.0]])
    s2 = np.array([[1.0, -0.6], [-0.6, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    want = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2)
    assert abs(got - want) / want < 1e-6


def test_frechet_singular_and_identical():
    s = np.diag([1.0, 0.0, 2.0])  # singular: a constant feature
    assert abs(frechet_distance(np.ones(3), s, np.ones(3), s)) < 1e-9
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_fid_of_samples_approaches_population_value():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 4)), rng.normal(loc=0.5, size=(20000, 4))
    assert abs(fid_from_features(a, b) - 4 * 0.25) < 0.05
    mu, sigma = gaussian_stats(a)
    se = bootstrap_fid(b[:500], mu, sigma, n=30)
    assert 0 < se < 0.5


def test_kid_same_distribution_is_zero_within_error():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = kid(a, b, subset_size=200, subsets=50)
    assert abs(mean) < 2 * std / np.sqrt(50) + 1e-3
    shifted, _ = kid(a, b + 1.0, subset_size=200, subsets=50)
    assert shifted > 10 * std


def test_precision_recall():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 8))
    assert precision_recall(a, a) == (1.0, 1.0)
    far = a + 100.0
    assert precision_recall(a, far) == (0.0, 0.0)
    # fakes collapsed onto a few real points: high precision, low recall
    collapsed = a[:5].repeat(60, axis=0)
    p, r = precision_recall(a, collapsed)
    assert p == 1.0 and r < 0.2


def test_precision_recall_blocks_do_not_change_the_result(monkeypatch):
    import fpdm.evaluation.metrics as m

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 6)), rng.normal(loc=0.3, size=(350, 6))
    whole = precision_recall(a, b)
    monkeypatch.setattr(m, "_row_chunks", lambda n_cols, max_elems=0: 3)  # many 3-row blocks
    assert precision_recall(a, b) == whole and 0 < whole[0] < 1


def test_precision_recall_takes_the_reference_radii_computed_once():
    import torch

    from fpdm.evaluation.metrics import knn_radii

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 6)), rng.normal(loc=0.4, size=(120, 6))
    radii = knn_radii(a, 3)
    # the 4th smallest distance per row (the first is the point itself), by brute force
    d = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))
    np.testing.assert_allclose(radii.numpy(), np.sort(d, axis=1)[:, 3], rtol=1e-12)
    assert precision_recall(a, b, real_radii=radii) == precision_recall(a, b)
    # radii of another set change the answer: they are used, not recomputed
    assert precision_recall(a, b, real_radii=radii * 0.5)[0] < precision_recall(a, b)[0]
    with pytest.raises(ValueError, match="real_radii has shape"):
        precision_recall(a, b, real_radii=torch.ones(5, dtype=torch.float64))


def _spd(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


def test_frechet_against_scipy_sqrtm_on_non_commuting_covariances():
    from scipy.linalg import sqrtm

    s1, s2 = _spd(16, 5), _spd(16, 6)
    assert np.abs(s1 @ s2 - (s1 @ s2).T).max() > 0.1  # S1 S2 not symmetric: the matrices do not commute
    m1, m2 = np.random.default_rng(7).normal(size=(2, 16))
    want = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(sqrtm(s1 @ s2)).real
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-9)


def test_kid_equals_the_unbiased_mmd_written_out():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(25, 5)), rng.normal(loc=0.3, size=(25, 5))

    def k(u, v):  # cubic polynomial kernel
        return (u @ v / 5 + 1) ** 3

    n = len(x)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    # subsets as large as the sets are permutations of them, and MMD ignores the order
    mean, std = kid(x, y, subset_size=25, subsets=3)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == pytest.approx(0, abs=1e-12)


def test_knn_balls_are_closed():
    # 1-d reals 0, 1, 2, 3: every 1-NN radius is exactly 1, so fakes at 4 and -1 lie on the balls around
    # 3 and 0 (inside, closed), 1.5 is well inside and 4.5 outside: precision 3/4 (open balls: 1/4)
    real = np.arange(4.0)[:, None]
    assert precision_recall(real, np.array([[4.0], [4.5], [-1.0], [1.5]]), k=1)[0] == 0.75


def test_bootstrap_equals_the_fids_of_its_resamples():
    # the bootstrap takes the reference's square root once and swaps the roles of the covariances; the
    # resampled FIDs must be the ones frechet_distance gives, in the usual order
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    samples = rng.standard_normal((120, 6)) @ rng.standard_normal((6, 6)) + 0.5
    mu, sigma = gaussian_stats(ref)
    draw = np.random.default_rng(7)
    direct = [frechet_distance(*gaussian_stats(samples[draw.integers(0, 120, 120)]), mu, sigma)
              for _ in range(12)]
    assert abs(bootstrap_fid(samples, mu, sigma, n=12, seed=7) - np.std(direct, ddof=1)) < 1e-9
