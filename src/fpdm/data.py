"""Datasets: the built-in ``digits`` set, image folders and latent folders, behind one entry point.

Everything is returned as an :class:`ImageDataset` whose images are float32 ``[C, H, W]`` in
``[-1, 1]`` (the range the diffusion models are trained in) and whose labels are int64.

Built-in ``digits``
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

Built-in ``fashion-mnist``
    Zalando's Fashion-MNIST from its IDX files (Debian's ``dataset-fashion-mnist``), padded to 32×32:
    :mod:`fpdm.fashion`.

Image folders: see :mod:`fpdm.image_folder`; latent folders (``fpdm extract-latents``): :mod:`fpdm.latents`.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .fashion import load_fashion_mnist
from .image_folder import IMAGE_EXTENSIONS, SPLITS, ImageDataset, center_crop_resize, load_image_folder
from .latents import is_latent_folder, load_latents

__all__ = [
    "DIGITS_NUM_TEST",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ImageDataset",
    "center_crop_resize",
    "load_dataset",
    "load_digits",
    "load_image_folder",
]

NAMED_WITH_FILES = ("fashion-mnist",)  # built-in names whose files are read from --data-dir
DIGITS_NUM_TEST = 297
DIGITS_SPLIT_SEED = 0


def load_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    data_dir: str | None = None,
) -> ImageDataset:
    """Load ``"digits"``, ``"fashion-mnist"`` (its files from `data_dir`, see :mod:`fpdm.fashion`) or an
    image folder; see the module docstring for the exact rules."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data_dir is not None and str(name_or_path) not in NAMED_WITH_FILES:
        raise ValueError(f"--data-dir applies to {'/'.join(NAMED_WITH_FILES)} only; for a folder pass "
                         f"its path to --data (got --data {name_or_path})")
    if str(name_or_path) == "digits":
        return load_digits(split=split, image_size=image_size, channels=channels)
    if str(name_or_path) == "fashion-mnist":
        return load_fashion_mnist(split, data_dir=data_dir, image_size=image_size, channels=channels)
    if is_latent_folder(name_or_path):  # written by `fpdm extract-latents`
        data = load_latents(name_or_path)
        if (image_size, channels) != (None, None) and (image_size, channels) != (data.image_size,
                                                                                  data.channels):
            raise ValueError(f"latents in {name_or_path} are {data.channels}×{data.image_size}²; "
                             f"--image-size/--channels cannot change them")
        return data
    return load_image_folder(name_or_path, split=split, image_size=image_size, channels=channels)


# --------------------------------------------------------------------------------------- digits


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
