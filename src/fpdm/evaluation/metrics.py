"""Sample-quality metrics on feature vectors, independent of the feature extractor.

- Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's),
  in float64, through the eigenvalues of the symmetric matrix S1^½ S2 S1^½ (stable where a general sqrtm
  of S1 S2 picks up imaginary parts or fails on singular covariances).
- KID: the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over subsets.
- Precision / recall on k-NN manifolds (Kynkäänniemi et al. 2019).
- A bootstrap standard error for FID over the generated samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


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
    return _frechet(mu1, s1, mu2, s2, _psd_sqrt(s1))


def _frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, root1: np.ndarray) -> float:
    """frechet_distance with S1^½ given. S1 S2 and S2 S1 have the same eigenvalues, so the roles may be
    swapped: the bootstrap passes the fixed reference as S1 and computes its root once."""
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
    ref_mu, ref_sigma = np.asarray(ref_mu, np.float64), np.asarray(ref_sigma, np.float64)
    ref_root = _psd_sqrt(ref_sigma)  # once, not per resample (the eigendecompositions were most of the cost)
    vals = [_frechet(ref_mu, ref_sigma, *gaussian_stats(f[rng.integers(0, len(f), len(f))]), ref_root)
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


def _row_chunks(n_cols: int, max_elems: int = 1 << 25) -> int:
    """Rows per distance block, so one float64 block stays near 256 MiB (50k × 50k sets are fine)."""
    return max(1, max_elems // max(1, n_cols))


def _distance_blocks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(row slice, ||a_i - b_j|| block) in float64, a bounded block at a time."""
    b2 = (b * b).sum(1)
    step = _row_chunks(len(b))
    for i in range(0, len(a), step):
        blk = a[i:i + step]
        sq = (blk * blk).sum(1)[:, None] + b2[None] - 2.0 * blk @ b.T
        yield slice(i, i + len(blk)), sq.clamp_min_(0).sqrt_()


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    radii = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for rows, d in _distance_blocks(x, x):
        radii[rows] = d.kthvalue(k + 1, dim=1).values  # the smallest distance is the point to itself
    return radii


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of points inside at least one ball (centre, radius)."""
    inside = sum(int((d <= radii[None]).any(dim=1).sum()) for _, d in _distance_blocks(points, centres))
    return inside / len(points)


def knn_radii(real: np.ndarray | torch.Tensor, k: int = 3, device: str | torch.device = "cpu"
              ) -> torch.Tensor:
    """Each real point's distance to its k-th nearest neighbour (float64): the real manifold of
    `precision_recall`, which a fixed reference set may compute once and pass as `real_radii`."""
    return _knn_radii(torch.as_tensor(real).to(device=device, dtype=torch.float64), k)


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     device: str | torch.device = "cpu", real_radii: torch.Tensor | None = None
                     ) -> tuple[float, float]:
    """Improved precision (share of fake samples inside the real manifold: within the k-NN radius of some
    real point) and recall (share of real samples inside the fake manifold), Kynkäänniemi et al. 2019.
    Float64, distances in bounded row blocks, on `device` (a GPU makes 50k-sample sets quick).
    `real_radii`: `knn_radii(real, k)` if already known (for a 10,000-image reference it is most of the
    cost)."""
    r = torch.as_tensor(real).to(device=device, dtype=torch.float64)
    f = torch.as_tensor(fake).to(device=device, dtype=torch.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"need (M, d) and (N, d) features, got {tuple(r.shape)} and {tuple(f.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set, got {len(r)} and "
                         f"{len(f)}")
    if real_radii is None:
        real_radii = _knn_radii(r, k)
    elif real_radii.shape != (len(r),):
        raise ValueError(f"real_radii has shape {tuple(real_radii.shape)}, expected ({len(r)},)")
    return _coverage(f, r, real_radii.to(r)), _coverage(r, f, _knn_radii(f, k))
