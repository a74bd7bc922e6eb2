"""The built-in ``digits`` dataset.

scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``): 1,797 greyscale
images, 10 classes, pixel values 0..16, mapped to ``[-1, 1]`` by ``x / 8 - 1``. It ships with
scikit-learn, so it needs no download and lets the whole pipeline run in seconds on a CPU.

The split is fixed and deterministic: ``train_test_split(arange(1797), test_size=297,
stratify=labels, random_state=0)``, each side then sorted by original index.

===========  =====  =============================================
split        size   images per class 0..9
===========  =====  =============================================
``train``    1,500  149 152 148 153 151 152 151 149 145 150
``test``       297   29  30  29  30  30  30  30  30  29  30
``all``      1,797  178 182 177 183 181 182 181 179 174 180
===========  =====  =============================================

The name ``digits`` takes precedence over a folder of that name; pass ``./digits`` for the folder.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fpdm.data.image_folder import SPLITS, ImageDataset

DIGITS_NUM_TEST = 297
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the bundled CSV once per process; returns (pixels 0..16, labels, train idx, test idx)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float32).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_NUM_TEST, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return pixels, labels, np.sort(train_idx), np.sort(test_idx)


def load_digits(
    split: str = "train", *, image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """The 8x8 scikit-learn digits as ``[N, 1, 8, 8]`` in ``[-1, 1]`` with the fixed split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size not in (None, 8):
        raise ValueError(f"the digits dataset is 8x8 only; image_size must be None or 8, got {image_size!r}")
    if channels not in (None, 1):
        raise ValueError(f"the digits dataset is greyscale; channels must be None or 1, got {channels!r}")
    pixels, labels, train_idx, test_idx = _digits_arrays()
    idx = {"train": train_idx, "test": test_idx, "all": np.arange(len(labels))}[split]
    images = torch.from_numpy(pixels[idx] / 8.0 - 1.0)
    return ImageDataset(
        images,
        torch.from_numpy(labels[idx]),
        num_classes=10,
        name="digits",
        split=split,
        class_names=[str(i) for i in range(10)],
        indices=torch.from_numpy(idx.astype(np.int64)),
    )


def load(split: str = "train", *, data_dir: str | None = None, image_size: int | None = None,  # noqa: ARG001
         channels: int | None = None) -> ImageDataset:
    """The registry's entry point (`fpdm.data.datasets.DATASETS`); digits ship with scikit-learn."""
    return load_digits(split, image_size=image_size, channels=channels)
