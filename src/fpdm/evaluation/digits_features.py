"""The digits feature network: a small CNN trained here, on the digits train split only, that gives
"digits-FID" (its 128-d penultimate layer) and class consistency (its classifier) for 8×8 samples.

The weights ship in `fpdm/assets/digits_features.safetensors` together with the features of the held-out
split (the default reference, computed once at training time). `fpdm train-features` regenerates the file:
seeded, one thread, full-batch-order determinism, so the same torch build on the same kind of CPU gives the
same bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm import tqdm

from fpdm.common.checkpoint import atomic_write
from fpdm.common.digest import check_safetensors, safetensors_metadata
from fpdm.data.datasets import ImageDataset, load_dataset

WEIGHTS = Path(__file__).parents[1] / "assets" / "digits_features.safetensors"


class DigitsNet(nn.Module):
    """conv 3×3 (32) → conv 3×3 (64) → max-pool 2 → fc 128 (the features) → fc 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)  # (N, 64, 4, 4)
        return F.relu(self.fc1(h.flatten(1)))  # (N, 128)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))  # (N, 10) logits


@dataclass(frozen=True)
class FeatureTrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_classifier(make_net: Callable[[], nn.Module], train: ImageDataset, test: ImageDataset,
                     cfg: FeatureTrainConfig, desc: str, progress: bool = False) -> tuple[nn.Module, float]:
    """Train `make_net()` (built after seeding) on `train` with AdamW and cross-entropy; return it in eval
    mode and its accuracy on `test`.

    Runs with one intra-op thread (restored afterwards): reductions then happen in one fixed order, which is
    what makes the result reproducible bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)  # initialisation
        net = make_net()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        order = torch.Generator().manual_seed(cfg.seed + 1)
        for _ in tqdm(range(cfg.epochs), desc=desc, disable=not progress):
            perm = torch.randperm(len(train), generator=order)
            for lo in range(0, len(perm), cfg.batch_size):
                idx = perm[lo:lo + cfg.batch_size]
                loss = F.cross_entropy(net(train.batch(idx)), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(test.batch(slice(i, i + 1000))).argmax(1)
                              for i in range(0, len(test), 1000)])
        return net, (pred == test.labels).float().mean().item()
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def batched_features(net: nn.Module, images: Tensor, batch: int = 1000) -> Tensor:
    """`net.features` of many images, `batch` at a time (the same values as one call)."""
    return torch.cat([net.features(images[i:i + batch].float().cpu()) for i in range(0, len(images), batch)])


def train_digits_net(cfg: FeatureTrainConfig = FeatureTrainConfig(), progress: bool = False
                     ) -> tuple[DigitsNet, float]:
    """Train on the digits train split; return the net (eval mode) and its held-out accuracy."""
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    return train_classifier(DigitsNet, train, test, cfg, "train digits features", progress)


def save_feature_net(net: nn.Module, accuracy: float, cfg: FeatureTrainConfig, path: str | Path,
                     reference: Tensor | None = None, store_reference: bool = True,
                     **provenance: Any) -> None:
    """Weights, the reference images' features (default: the digits held-out split; none with
    `store_reference=False`, for references too large to ship) and how they were made."""
    tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
    if store_reference:
        if reference is None:
            reference = load_dataset("digits", split="test").images
        tensors["reference.test.features"] = batched_features(net, reference).contiguous()
    meta = safetensors_metadata(tensors, config=asdict(cfg), test_accuracy=round(accuracy, 6),
                                torch=torch.__version__, **provenance)

    def write(f) -> None:
        from safetensors.torch import save

        f.write(save(tensors, metadata=meta))

    atomic_write(path, write)


def load_net(path: str | Path, make_net: Callable[[], nn.Module], regenerate: str
             ) -> tuple[nn.Module, np.ndarray | None]:
    """A feature net written by `save_feature_net` (digests checked) and its stored reference features (None
    if it stores none);
    `regenerate` is the command that writes the file, named in the errors."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"feature weights not found at {p}; regenerate them with "
                                f"`{regenerate} --out {p}`")
    try:
        with safe_open(str(p), "pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(p))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{p} is not a valid safetensors file ({e}); regenerate it with "
                         f"`{regenerate} --out {p}`") from None
    check_safetensors(p, tensors, metadata)
    net = make_net()
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    ref = tensors.get("reference.test.features")
    return net.eval(), None if ref is None else ref.double().numpy()


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[DigitsNet, np.ndarray]:
    return load_net(path, DigitsNet, "fpdm train-features")


def load_feature_net(path: str | Path = WEIGHTS) -> DigitsNet:
    return _load(str(path))[0]


def reference_features(path: str | Path = WEIGHTS) -> np.ndarray:
    """Features (297, 128) of the held-out digits, as stored with the weights."""
    return _load(str(path))[1]


@torch.no_grad()
def digits_features(images: Tensor, path: str | Path = WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128) float64, predicted classes (N,)) of 8×8 greyscale images in [-1, 1]."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits features need images of shape (N, 1, 8, 8), got {tuple(images.shape)}")
    net = load_feature_net(path)
    feats = net.features(images.float().cpu())
    return feats.double().numpy(), net.fc2(feats).argmax(1).numpy()


__all__ = ["DigitsNet", "FeatureTrainConfig", "WEIGHTS", "digits_features", "load_feature_net", "load_net",
           "reference_features", "save_feature_net", "train_classifier", "train_digits_net"]
