"""Datasets behind one entry point: the built-in named ones (a registry: `DATASETS`), image folders and
latent folders.

Everything is returned as an :class:`ImageDataset` whose images are float32 ``[C, H, W]`` in
``[-1, 1]`` (the range the diffusion models are trained in) and whose labels are int64.

Named datasets: ``digits`` (scikit-learn's 8×8 digits, :mod:`fpdm.data.digits`) and ``fashion-mnist``
(Zalando's Fashion-MNIST from Debian's IDX files, padded to 32×32, :mod:`fpdm.data.fashion`). A name takes
precedence over a folder of that name; pass ``./digits`` for the folder. A new dataset is one module with a
``load(split, *, data_dir, image_size, channels)`` function and one line in `DATASETS`.

Image folders: see :mod:`fpdm.data.image_folder`; latent folders (``fpdm extract-latents``):
:mod:`fpdm.data.latents`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fpdm.data import digits, fashion
from fpdm.data.digits import DIGITS_NUM_TEST, load_digits
from fpdm.data.image_folder import (
    IMAGE_EXTENSIONS,
    SPLITS,
    ImageDataset,
    center_crop_resize,
    load_image_folder,
)
from fpdm.data.latents import is_latent_folder, load_latents

__all__ = [
    "DATASETS",
    "DIGITS_NUM_TEST",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ImageDataset",
    "NamedDataset",
    "center_crop_resize",
    "load_dataset",
    "load_digits",
    "load_image_folder",
]


@dataclass(frozen=True)
class NamedDataset:
    """A built-in dataset: `load(split, data_dir=…, image_size=…, channels=…)`; `reads_files` if its files
    come from a folder (`--data-dir`), else they ship with a package."""

    load: Callable[..., ImageDataset]
    reads_files: bool = False


DATASETS: dict[str, NamedDataset] = {
    "digits": NamedDataset(digits.load),
    "fashion-mnist": NamedDataset(fashion.load, reads_files=True),
}


def load_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    data_dir: str | None = None,
) -> ImageDataset:
    """Load a named dataset (`DATASETS`), a latent folder or an image folder; see the module docstring."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    named = DATASETS.get(str(name_or_path))
    if data_dir is not None and not (named and named.reads_files):
        with_files = [k for k, v in DATASETS.items() if v.reads_files]
        raise ValueError(f"--data-dir applies to {'/'.join(with_files)} only; for a folder pass "
                         f"its path to --data (got --data {name_or_path})")
    if named is not None:
        return named.load(split, data_dir=data_dir, image_size=image_size, channels=channels)
    if is_latent_folder(name_or_path):  # written by `fpdm extract-latents`
        data = load_latents(name_or_path)
        if (image_size, channels) != (None, None) and (image_size, channels) != (data.image_size,
                                                                                  data.channels):
            raise ValueError(f"latents in {name_or_path} are {data.channels}×{data.image_size}²; "
                             f"--image-size/--channels cannot change them")
        return data
    return load_image_folder(name_or_path, split=split, image_size=image_size, channels=channels)


def trained_on(ckpt: dict[str, Any]) -> str | None:
    """The `--data` a checkpoint's weights were trained on: a training checkpoint's train_config, an
    export's "data" entry, or a built-in's recipe (None when nothing says, e.g. an official file)."""
    return (ckpt.get("train_config", {}).get("data") or ckpt.get("data")
            or ckpt.get("recipe", {}).get("data"))
