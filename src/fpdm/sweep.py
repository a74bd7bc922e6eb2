"""Tables for budget sweeps, and the quality number they report until the evaluation issue lands.

The placeholder metrics, for the built-in digits only, until digits-FID replaces them:
- *class consistency*: the share of samples that an SVC trained on the digits train split (raw pixels;
  0.9899 on the held-out split) assigns to the class they were drawn for — robust to noise, blind to it;
- *pixel FD*: the Fréchet distance between Gaussians fitted to the raw 64-pixel vectors (0..16 scale) of the
  samples and of the 297 held-out digits — sensitive to noise and to diversity, but no perceptual feature."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .config import ModelConfig


@functools.lru_cache(maxsize=1)
def _digits_svc():
    from sklearn.svm import SVC

    from .data import load_dataset

    train = load_dataset("digits", split="train")
    return SVC(gamma=0.001).fit(_pixels(train.images.numpy()), train.labels.numpy())


def _pixels(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x) + 1) * 8).reshape(len(x), -1)  # back to the 0..16 scale of the raw data


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a and b (float64)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    # Pixels that never vary (digit borders) make the covariances singular; a 1e-6 ridge keeps sqrtm stable.
    eye = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


@functools.lru_cache(maxsize=1)
def _digits_test_pixels() -> np.ndarray:
    from .data import load_dataset

    return _pixels(load_dataset("digits", split="test").images.numpy()).astype(np.float64)


def placeholder_metric(samples: Tensor, labels: Tensor, cfg: ModelConfig) -> dict[str, Any]:
    """{"class_consistency", "pixel_fd", "pixel_fd_se"} for 8×8 greyscale 10-class models (digits), the
    last a bootstrap standard error over the samples; {} otherwise."""
    if (cfg.input_size, cfg.in_channels, cfg.num_classes) != (8, 1, 10):
        return {}
    pix = _pixels(samples.numpy()).astype(np.float64)
    pred = _digits_svc().predict(pix)
    ref = _digits_test_pixels()
    rng = np.random.default_rng(0)  # bootstrap over the samples: the spread a different seed range gives
    boot = [frechet_distance(pix[rng.integers(0, len(pix), len(pix))], ref) for _ in range(20)]
    return {"class_consistency": float((pred == labels.numpy()).mean()),
            "pixel_fd": frechet_distance(pix, ref), "pixel_fd_se": float(np.std(boot, ddof=1))}


def write_table(rows: list[dict[str, Any]], prefix: str | Path, settings: dict[str, Any]) -> None:
    """`<prefix>.json` (rows + settings) and `<prefix>.md` (a Markdown table)."""
    prefix = Path(prefix)
    Path(f"{prefix}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    head = ", ".join(f"{k}={v}" for k, v in settings.items())
    Path(f"{prefix}.md").write_text(f"{head}\n\n" + "\n".join(lines) + "\n")
