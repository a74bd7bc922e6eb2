"""Image folders as datasets (no torchvision needed), and the image helpers the latent pipeline shares.

Image folders (no torchvision needed)
    * A directory of class sub-folders (``root/<class>/**/*.png``): sorted folder names become class
      indices ``0..K-1`` and ``num_classes == K``.
    * A directory holding image files directly: unconditional, every label 0 and ``num_classes == 0``.

    Extensions ``png jpg jpeg bmp webp`` are recognised case-insensitively; other files and names
    starting with ``.`` are ignored. Images are converted to ``L`` (``channels=1``) or ``RGB``
    (``channels=3``; alpha is dropped), then resized ADM/DiT-style: box-downsampled by 2 while the
    short side is at least ``2 * image_size``, bicubic-resized so the short side equals
    ``image_size``, and centre-cropped to a square.

    Defaults: ``image_size=None`` uses the smallest short side found in the folder; ``channels=None``
    uses 1 when every image is greyscale and 3 otherwise.

    Folders are loaded eagerly into one tensor (``N * C * H * W * 4`` bytes) because the intended
    folders are small and it keeps ``__getitem__`` trivial and fast. Only ``split="all"`` or
    ``"train"`` is accepted for a folder; both mean the whole folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "ImageDataset", "center_crop_resize", "load_image_folder"]

SPLITS = ("train", "test", "all")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageDataset(Dataset):
    """Images in ``[-1, 1]`` held in one tensor, with labels and the metadata models need.

    Images given as uint8 (0..255) are kept as uint8 and mapped to ``x / 127.5 - 1`` only when a batch is
    made (``batch``), a quarter of the memory of float32 (Fashion-MNIST's 60k: 61 MB instead of 246 MB).

    Attributes:
        images: float32 ``[N, C, H, W]`` in ``[-1, 1]``: the whole set (converted on each access when the
            images are held as uint8: take ``batch(index)`` in loops).
        labels: int64 ``[N]``; all zeros when unconditional.
        num_classes: number of classes, 0 for an unconditional dataset.
        image_size: ``H == W``.
        channels: ``C`` (1 or 3).
        name: ``"digits"`` or the folder path as given.
        split: the split that was requested.
        class_names: one name per class (empty when unconditional).
        indices: for ``digits``, each image's index in ``load_digits()`` order; ``None`` for folders.
        files: for folders, each image's path; ``None`` for ``digits``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        name: str,
        split: str,
        class_names: Sequence[str] = (),
        indices: torch.Tensor | None = None,
        files: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be [N, C, S, S], got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N={images.shape[0]}], got shape {tuple(labels.shape)}")
        self.images = images  # held as `pixels` (N, C, S, S): uint8, or float32 already in [-1, 1]
        self.labels = labels.to(torch.int64).contiguous()
        self.num_classes = int(num_classes)
        self.image_size = int(images.shape[-1])
        self.channels = int(images.shape[1])
        self.name = name
        self.split = split
        self.class_names = list(class_names)
        self.indices = indices
        self.files = None if files is None else list(files)

    @property
    def images(self) -> torch.Tensor:
        return self.batch(slice(None))

    @images.setter
    def images(self, value: torch.Tensor) -> None:
        self.pixels = (value if value.dtype == torch.uint8 else value.to(torch.float32)).contiguous()

    def digest(self) -> str:
        """SHA-256 of what training sees: the pixels as held (shape and dtype too), the labels and the class
        names; the same data gives the same digest wherever its files lie."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.pixels.shape), str(self.pixels.dtype), self.class_names]).encode())
        h.update(self.pixels.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()

    def batch(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        """float32 images in [-1, 1] at `index` (uint8 pixels converted here, the same values as converting
        the whole set first)."""
        x = self.pixels[index]
        return x.float().div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else x

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(index), self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"channels={self.channels}, image_size={self.image_size}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------- image folders


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _visible_children(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def _images_under(directory: Path) -> list[Path]:
    """All image files below ``directory`` (recursively, hidden entries skipped), in sorted order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(p for p in (Path(root) / f for f in sorted(files)) if _is_image(p))
    return found


def _scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Return (files, labels, class_names); class_names is empty for an unconditional folder."""
    if not root.exists():
        raise FileNotFoundError(f"dataset path does not exist: {root} (expected 'digits' or an image folder)")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path is not a directory: {root} (expected an image folder)")
    children = _visible_children(root)
    class_dirs = [p for p in children if p.is_dir()]
    top_images = [p for p in children if _is_image(p)]
    if class_dirs and top_images:
        raise ValueError(
            f"image folder {root} mixes image files ({top_images[0].name}, ...) with class sub-folders "
            f"({class_dirs[0].name}, ...); expected either class sub-folders or images, not both"
        )
    if top_images:
        return top_images, [0] * len(top_images), []
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        class_files = _images_under(class_dir)
        if not class_files:
            raise ValueError(
                f"class folder {class_dir} holds no images (expected {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    if not files:
        raise ValueError(
            f"no images found in {root}: expected image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            "or class sub-folders containing them"
        )
    return files, labels, [p.name for p in class_dirs]


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning any decoder failure into a ValueError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc


def _header(path: Path) -> tuple[int, str]:
    """(short side, mode) without decoding pixel data, so defaults can be inferred cheaply."""
    try:
        with Image.open(path) as img:
            return min(img.size), img.mode
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc


MIN_INFERRED_SIZE = 4  # the smallest image side a folder's default size may come from


def center_crop_resize(image: Image.Image, image_size: int) -> Image.Image:
    """ADM/DiT centre crop: box-halve while the short side >= 2x target, bicubic to target, crop."""
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC)
    left = (image.size[0] - image_size) // 2
    top = (image.size[1] - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 PIL image -> float32 [C, H, W] in [-1, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    split: str = "all",
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """Eagerly load an image folder (class sub-folders or flat) as ``[N, C, S, S]`` in ``[-1, 1]``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "test":
        raise ValueError(
            f"image folder {path} has no test split; use split='all' or 'train' (both mean the whole folder)"
        )
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    root = Path(path)
    files, labels, class_names = _scan_folder(root)
    if image_size is None or channels is None:
        headers = [_header(f) for f in files]
        if image_size is None:
            image_size, smallest = min((side, i) for i, (side, _) in enumerate(headers))
            if image_size < MIN_INFERRED_SIZE:  # one stray thumbnail would shrink every image to it
                raise ValueError(f"{files[smallest]} is {image_size} px on its short side, and images are "
                                 "resized to the smallest one found; remove it or pass --image-size")
        if channels is None:
            channels = 1 if all(mode in _GREY_MODES for _, mode in headers) else 3
    mode = "L" if channels == 1 else "RGB"
    images = torch.empty(len(files), channels, image_size, image_size, dtype=torch.float32)
    for i, file in enumerate(files):
        images[i] = _to_tensor(center_crop_resize(_to_mode(_open_image(file), mode), image_size))
    return ImageDataset(
        images,
        torch.tensor(labels, dtype=torch.int64),
        num_classes=len(class_names),
        name=str(path),
        split=split,
        class_names=class_names,
        files=[str(f) for f in files],
    )


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to 'L'/'RGB'; 16-bit greyscale (PNG ``I;16``) is rescaled to 8 bits, not clipped."""
    if image.mode.startswith("I"):
        arr = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        image = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)
