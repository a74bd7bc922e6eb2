"""The Fashion-MNIST feature network: a small CNN trained here on the 60,000 training images only (no test
image), whose 256-d penultimate layer gives "fashion-FID" and whose classifier gives class consistency for
32×32 samples.

The weights ship in `fpdm/assets/fashion_features.safetensors` with the digests of the data they were made
from. The reference is the 10,000 test images (a model's samples are compared with images it never trained
on): their features (10 MB) are computed from the installed files on first use and cached in
`$FPDM_CACHE` (default `~/.cache/fpdm`), keyed by the network's and the data's digests.
`fpdm train-features --data fashion-mnist` regenerates the weights: seeded, one thread, so the same torch
build on the same kind of CPU gives the same bytes. A domain network's FID is not
comparable with the Inception FIDs of papers (`fpdm eval --inception-weights` gives those).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xxhash
from torch import Tensor, nn

from fpdm.data.fashion import OFFICIAL, load_fashion_mnist
from fpdm.evaluation.digits_features import (
    FeatureTrainConfig,
    batched_features,
    load_net,
    save_feature_net,
    train_classifier,
)

WEIGHTS = Path(__file__).parents[1] / "assets" / "fashion_features.safetensors"
# 6 epochs of 469 batches: about 12 minutes on one core of the project machine
CONFIG = FeatureTrainConfig(epochs=6, batch_size=128, lr=2e-3, weight_decay=1e-4, seed=0)
REGENERATE = "fpdm train-features --data fashion-mnist"


class FashionNet(nn.Module):
    """Three conv 3×3 + max-pool stages (32, 64, 128 channels: 32² → 4²) → fc 256 (the features) → fc 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, 16, 16)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (N, 64, 8, 8)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)  # (N, 128, 4, 4)
        return F.relu(self.fc1(h.flatten(1)))  # (N, 256)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))  # (N, 10) logits


def train_fashion_net(cfg: FeatureTrainConfig = CONFIG, data_dir: str | Path | None = None,
                      progress: bool = False) -> tuple[FashionNet, float]:
    """Train on the 60k training images; return the net (eval mode) and its 10k test images' accuracy."""
    train = load_fashion_mnist("train", data_dir=data_dir)
    test = load_fashion_mnist("test", data_dir=data_dir)
    return train_classifier(FashionNet, train, test, cfg, "train fashion features", progress)


def save_fashion_net(net: FashionNet, accuracy: float, cfg: FeatureTrainConfig, path: str | Path) -> None:
    """The weights and the digests of the data they were trained and tested on (no reference features:
    `reference_features` computes and caches them)."""
    data = {split: f"{r.pixels:016x}/{r.labels:016x}" for split, r in OFFICIAL.items()}
    save_feature_net(net, accuracy, cfg, path, store_reference=False, dataset="fashion-mnist", data=data)


@functools.lru_cache(maxsize=4)
def _load(path: str) -> FashionNet:
    return load_net(path, FashionNet, REGENERATE)[0]


def _cache_dir() -> Path:
    return Path(os.environ.get("FPDM_CACHE") or Path.home() / ".cache" / "fpdm")


def reference_features(path: str | Path = WEIGHTS, data_dir: str | Path | None = None) -> np.ndarray:
    """Features (10000, 256) of the Fashion-MNIST test images: computed once, then read from the cache
    (a file named by the network's and the test split's digests, so other weights or data never match)."""
    net = _load(str(path))
    digest = xxhash.xxh3_64_hexdigest(b"".join(v.numpy().tobytes() for v in net.state_dict().values()))
    test = OFFICIAL["test"]
    cached = _cache_dir() / f"fashion-test-features-{digest}-{test.pixels:016x}.npy"
    if cached.exists():
        return np.load(cached)
    feats = batched_features(net, load_fashion_mnist("test", data_dir=data_dir).images).double().numpy()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # written whole, then renamed: a reader never sees half a file
        np.save(f, feats)
    os.replace(tmp, cached)
    return feats


@torch.no_grad()
def fashion_features(images: Tensor, path: str | Path = WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 256) float64, predicted classes (N,)) of 32×32 greyscale images in [-1, 1]."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 32, 32):
        raise ValueError(f"fashion features need images of shape (N, 1, 32, 32), got {tuple(images.shape)}")
    net = _load(str(path))
    feats = batched_features(net, images)
    return feats.double().numpy(), net.fc2(feats).argmax(1).numpy()


__all__ = ["CONFIG", "FashionNet", "WEIGHTS", "fashion_features", "reference_features", "save_fashion_net",
           "train_fashion_net"]
