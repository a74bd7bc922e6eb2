"""Sample-quality metrics on feature vectors, independent of the feature extractor.

- Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's),
  in float64, through the eigenvalues of the symmetric matrix S1^½ S2 S1^½ (stable where a general sqrtm
  of S1 S2 picks up imaginary parts or fails on singular covariances).
- KID: the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over subsets.
- Precision / recall on k-NN manifolds (Kynkäänniemi et al. 2019).
- A bootstrap standard error for FID over the generated samples.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (N, d) features, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features of shape (N >= 2, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1^½ S2 S1^½)^½) — the squared 2-Wasserstein distance
    between the two Gaussians. tr((S1 S2)^½) is computed from the eigenvalues of the similar symmetric
    matrix S1^½ S2 S1^½, so no complex square roots or ad-hoc offsets are needed."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_cross)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def bootstrap_fid(samples: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, n: int = 50,
                  seed: int = 0) -> float:
    """Standard error of FID over resampling the generated samples with replacement (the reference
    statistics held fixed): how much the number would move with another draw of the same size."""
    rng = np.random.default_rng(seed)
    f = np.asarray(samples, np.float64)
    vals = [frechet_distance(*gaussian_stats(f[rng.integers(0, len(f), len(f))]), ref_mu, ref_sigma)
            for _ in range(n)]
    return float(np.std(vals, ddof=1))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(a: np.ndarray, b: np.ndarray, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation over `subsets` random subsets (without
    replacement) of size min(subset_size, len(a), len(b))."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    vals = [_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def _row_chunks(n_rows: int, n_cols: int, max_elems: int = 1 << 24) -> range:
    """Row offsets so that a (rows × n_cols) float64 block stays near 128 MB (50k × 50k sets are fine)."""
    return range(0, n_rows, max(1, max_elems // max(n_cols, 1)))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in x (itself excluded)."""
    step = _row_chunks(len(x), len(x)).step
    return np.concatenate([np.partition(_pairwise(x[i:i + step], x), k, axis=1)[:, k]
                           for i in range(0, len(x), step)])


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of points within radii[j] of some centre j."""
    step = _row_chunks(len(points), len(centres)).step
    hits = [(_pairwise(points[i:i + step], centres) <= radii[None]).any(axis=1)
            for i in range(0, len(points), step)]
    return float(np.concatenate(hits).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (share of fake samples inside the real manifold: within the k-NN radius of some
    real point) and recall (share of real samples inside the fake manifold). Distances are computed in
    row blocks, so memory stays bounded for large sets."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _covered(fake, real, _knn_radii(real, k))
    recall = _covered(real, fake, _knn_radii(fake, k))
    return precision, recall
