"""Fashion-MNIST (Zalando, MIT licence) read from its four original IDX files, padded to 32×32.

Where the files are looked for: ``data_dir`` (``--data-dir``), else ``$FPDM_DATA``, else
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). Each file may be gzipped
(``*.gz``, as Debian ships them) or not. The IDX headers are parsed here (big-endian magic 0x00000803 and
a 16-byte header for images, 0x00000801 and 8 bytes for labels); the counts must be the official
60,000 train / 10,000 test of 28×28, and the decoded pixels and labels must match pinned XXH3 digests, so
a damaged or different file is refused whether it is gzipped or not.

Images are padded 28 → 32 with two pixels of the background value 0 on every side (the garments are
centred on a black background), then scaled to ``[-1, 1]`` by ``x / 127.5 - 1``. They stay uint8 in
memory (61 MB for train) and :class:`~fpdm.data.image_folder.ImageDataset` converts each batch as it is
made.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xxhash

from fpdm.data.image_folder import SPLITS, ImageDataset

__all__ = ["CLASS_NAMES", "DEFAULT_DIR", "FASHION_SIZE", "OFFICIAL", "Release", "fashion_dir",
           "load_fashion_mnist", "read_idx"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_SIZE = 32  # 28×28 padded by 2 on each side: patch 4 gives 64 tokens, patch 2 gives 256
PAD = 2
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGE_MAGIC, _LABEL_MAGIC = 0x00000803, 0x00000801


@dataclass(frozen=True)
class Release:
    """What a split's files must decode to: the image count and XXH3-64 digests of the uint8 arrays
    (pixels [N, 28, 28] in C order, labels [N])."""

    count: int
    pixels: int
    labels: int


OFFICIAL = {"train": Release(60_000, 0xC11B6543AE1530F3, 0x46E784B61AA2B893),
            "test": Release(10_000, 0xACF1CD2C87A40A9B, 0xF3627F35E9CAE75F)}


def fashion_dir(data_dir: str | Path | None = None) -> Path:
    """The folder searched: `data_dir`, else $FPDM_DATA, else Debian's folder. A given folder that does
    not exist is an error here; the default one is only looked into when the files are read."""
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir} does not exist or is not a folder")
        return d
    return Path(os.environ.get("FPDM_DATA") or DEFAULT_DIR)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}: install Debian's package "
        f"(apt-get install dataset-fashion-mnist) or pass --data-dir pointing at the four IDX files")


def read_idx(path: str | Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped or not), checked against `magic` and `shape`
    (count first). Every disagreement is a one-line ValueError naming the file."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: not a readable (gzipped) IDX file ({e})") from None
    header = 4 * (1 + len(shape))  # magic, then one big-endian int32 per dimension
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise ValueError(f"{path}: IDX magic 0x{got_magic:08x}, expected 0x{magic:08x}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(len(shape)))
    if dims != shape:
        raise ValueError(f"{path}: IDX dimensions {dims}, expected {shape}")
    need = header + int(np.prod(shape))
    if len(raw) != need:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {need} for dimensions {shape} "
                         f"({'truncated' if len(raw) < need else 'trailing bytes'})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _digest(a: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(np.ascontiguousarray(a).data)


def load_split_arrays(split: str, data_dir: str | Path | None = None,
                      release: dict[str, Release] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [N, 28, 28], labels uint8 [N]) of `split` ("train" or "test"), checked against the
    official release (`release` replaces it: tests check their own small files)."""
    folder = fashion_dir(data_dir)
    img_stem, lab_stem = _FILES[split]
    want = (release or OFFICIAL)[split]
    pixels = read_idx(_find(folder, img_stem), _IMAGE_MAGIC, (want.count, 28, 28))
    labels = read_idx(_find(folder, lab_stem), _LABEL_MAGIC, (want.count,))
    if labels.max(initial=0) > 9:
        raise ValueError(f"{_find(folder, lab_stem)}: label {int(labels.max())} outside 0–9")
    got = (_digest(pixels), _digest(labels))
    if got != (want.pixels, want.labels):
        raise ValueError(f"Fashion-MNIST {split} files in {folder} decode to other data than the official "
                         f"release (digests {got[0]:#018x}/{got[1]:#018x}, expected {want.pixels:#018x}/"
                         f"{want.labels:#018x}): damaged or different files")
    return pixels, labels


def load_fashion_mnist(split: str = "train", *, data_dir: str | Path | None = None,
                       image_size: int | None = None, channels: int | None = None,
                       release: dict[str, Release] | None = None) -> ImageDataset:
    """Fashion-MNIST as ``[N, 1, 32, 32]`` in ``[-1, 1]``: the official 60k train / 10k test split
    (``all`` is both, train first)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size not in (None, FASHION_SIZE):
        raise ValueError(f"--image-size {image_size}: Fashion-MNIST is served at "
                         f"{FASHION_SIZE}×{FASHION_SIZE} (28×28 padded by {PAD}); for another size, "
                         "write the images to a folder and train on the folder")
    if channels not in (None, 1):
        raise ValueError(f"--channels {channels}: Fashion-MNIST is greyscale (1 channel)")
    parts = ["train", "test"] if split == "all" else [split]
    arrays = [load_split_arrays(s, data_dir, release) for s in parts]
    pixels = np.concatenate([a[0] for a in arrays])
    labels = np.concatenate([a[1] for a in arrays])
    padded = np.zeros((len(pixels), 1, FASHION_SIZE, FASHION_SIZE), dtype=np.uint8)  # background 0
    padded[:, 0, PAD:PAD + 28, PAD:PAD + 28] = pixels
    # uint8 until a batch is made; ImageDataset maps a batch to [-1, 1] by x / 127.5 - 1
    return ImageDataset(torch.from_numpy(padded), torch.from_numpy(labels.astype(np.int64)), num_classes=10,
                        name="fashion-mnist", split=split, class_names=CLASS_NAMES,
                        indices=torch.arange(len(labels)))


load = load_fashion_mnist  # the registry's entry point (`fpdm.data.datasets.DATASETS`)
