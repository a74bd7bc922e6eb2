"""Evaluation of generated samples against a reference: digits-FID and friends for the built-in dataset
(the project's own feature network), and loading of sample files written by `fpdm sample`/`sweep`.

Every result dict carries the settings that affect its numbers (feature extractor, reference, sample count),
so a number is never separated from what it means."""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fpdm.config import ModelConfig
from fpdm.data.datasets import load_dataset
from fpdm.evaluation.digits_features import WEIGHTS, digits_features, reference_features
from fpdm.evaluation.metrics import (
    bootstrap_fid,
    frechet_distance,
    gaussian_stats,
    kid,
    knn_radii,
    precision_recall,
)

DIGITS_REFERENCES = ("digits", "digits-train")


def _reference(name: str, weights: str | Path) -> np.ndarray:
    if name == "digits":
        return reference_features(weights)  # the held-out split, stored with the weights
    if name == "digits-train":
        return digits_features(load_dataset("digits", split="train").images, weights)[0]
    raise ValueError(f"unknown digits reference {name!r}; expected one of {DIGITS_REFERENCES}")


def _feature_metrics(feats: np.ndarray, pred: np.ndarray, ref: np.ndarray, labels: Tensor | None, name: str,
                     kid_subset_size: int, kid_subsets: int, bootstrap: int, k: int,
                     radii: Tensor | None = None) -> dict[str, Any]:
    """FID (± bootstrap s.e.) as `<name>_fid`, KID, precision/recall and class consistency of sample
    features against reference features of the same network."""
    mu, sigma = gaussian_stats(ref)
    # The cubic kernel is scale-sensitive and these ReLU features are large; measuring both sets in units of
    # the reference's RMS feature value keeps x·y/d near 1, as for Inception features.
    scale = float(np.sqrt((ref**2).mean()))
    kid_mean, kid_std = kid(feats / scale, ref / scale, subset_size=kid_subset_size, subsets=kid_subsets)
    precision, recall = precision_recall(ref, feats, k=k, real_radii=radii)
    out: dict[str, Any] = {
        f"{name}_fid": frechet_distance(*gaussian_stats(feats), mu, sigma),
        f"{name}_fid_se": bootstrap_fid(feats, mu, sigma, n=bootstrap),
        "kid": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall,
        "num_samples": len(feats), "reference_size": len(ref),
        "kid_subset_size": min(kid_subset_size, len(feats), len(ref)),
    }
    if labels is not None:
        out["class_consistency"] = float((pred == np.asarray(labels)).mean())
    return out


def digits_metrics(samples: Tensor, labels: Tensor | None = None, *, reference: str = "digits",
                   weights: str | Path = WEIGHTS, kid_subset_size: int = 1000, kid_subsets: int = 100,
                   bootstrap: int = 50, k: int = 3) -> dict[str, Any]:
    """digits-FID (± bootstrap s.e.), KID (mean, std over subsets), precision/recall (k-NN), and class
    consistency (share of samples the feature net classifies as their label) for (N, 1, 8, 8) samples in
    [-1, 1]. `reference`: "digits" (the 297 held-out images) or "digits-train" (1,500)."""
    feats, pred = digits_features(samples, weights)
    out = _feature_metrics(feats, pred, _reference(reference, weights), labels, "digits", kid_subset_size,
                           kid_subsets, bootstrap, k)
    return {**out, "reference": reference, "features": f"digits CNN ({Path(weights).name}), 128-d"}


def fashion_metrics(samples: Tensor, labels: Tensor | None = None, *, weights: str | Path | None = None,
                    kid_subset_size: int = 1000, kid_subsets: int = 100, bootstrap: int = 50,
                    k: int = 3) -> dict[str, Any]:
    """fashion-FID and the same companions as `digits_metrics` for (N, 1, 32, 32) samples, against the
    10,000 Fashion-MNIST test images (features stored with the network; the network never saw them). The
    floor to expect: 10,000 training images against the test set."""
    from fpdm.evaluation import fashion_features as ff

    weights = ff.WEIGHTS if weights is None else weights
    feats, pred = ff.fashion_features(samples, weights)
    out = _feature_metrics(feats, pred, ff.reference_features(weights), labels, "fashion", kid_subset_size,
                           kid_subsets, bootstrap, k, radii=_fashion_radii(str(weights), k))
    return {**out, "reference": "fashion-mnist test (10,000)",
            "features": f"Fashion-MNIST CNN ({Path(weights).name}), 256-d"}


@functools.lru_cache(maxsize=2)
def _fashion_radii(weights: str, k: int) -> Tensor:
    """The 10,000 test images' k-NN radii: a fixed set's, computed once per process (3 s on one thread,
    most of a small evaluation's cost)."""
    from fpdm.evaluation import fashion_features as ff

    return knn_radii(ff.reference_features(weights), k)


def fid_name(cfg: ModelConfig, data: str | None = None) -> str | None:
    """Which FID a model's samples get, by what it was trained on (`data`, when known): "fashion_fid" for
    a Fashion-MNIST model (32×32, 1 channel), "digits_fid" for a digits-shaped one (8×8, 1 channel), else
    None (no feature network here: Inception via `fpdm eval --inception-weights`)."""
    if data == "fashion-mnist" and (cfg.input_size, cfg.in_channels) == (32, 1):
        return "fashion_fid"
    return "digits_fid" if (cfg.input_size, cfg.in_channels) == (8, 1) else None


def digits_eval(x: Tensor, labels: Tensor, cfg: ModelConfig, data: str | None = None) -> dict[str, Any]:
    """The metrics a model's samples are scored with (`fid_name`): its FID ± s.e., KID, precision/recall
    and class consistency; {} for a model without a feature network."""
    keys = ("kid", "kid_std", "precision", "recall", "class_consistency")
    name = fid_name(cfg, data)
    if name is None:
        return {}
    metric = fashion_metrics if name == "fashion_fid" else digits_metrics
    m = metric(x, labels if cfg.num_classes == 10 else None)
    return {k: m[k] for k in (name, f"{name}_se", *keys) if k in m}


def sampler_record(samples: str | Path) -> dict[str, Any] | None:
    """The settings from the record `fpdm sample` wrote beside a samples .npz, if there is one."""
    sidecar = Path(str(samples).removesuffix(".npz") + ".json")
    if not sidecar.exists():
        return None
    rec = json.loads(sidecar.read_text())
    return {k: rec.get(k) for k in ("ckpt", "budget", "steps", "iters_run", "settings", "seeds") if k in rec}


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """An evaluation's numbers and settings as indented JSON, with the versions and command behind it."""
    from fpdm.version import provenance

    Path(path).write_text(json.dumps({**result, **provenance()}, indent=1) + "\n")


def load_samples(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Samples (N, C, H, W) float in [-1, 1] and labels (or None) from a `.npz` written by `fpdm sample`
    (`samples`, `labels`), an ADM-style `.npz` (`arr_0`, uint8 N×H×W×C), or a folder of images."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no samples at {p}")
    if p.is_dir():
        from fpdm.data.image_folder import load_image_folder

        ds = load_image_folder(p)
        return ds.images, None
    if p.suffix != ".npz":
        raise ValueError(f"{p}: expected a .npz file or a folder of images")
    try:
        data = dict(np.load(p))  # every member read now: a damaged one fails its zip CRC-32 here
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{p} cannot be read ({e}); it may be damaged or truncated: sample again") from None
    if "samples" in data:
        x = data["samples"]
        labels = data["labels"] if "labels" in data else None
        check_samples(x, labels, f"{p}: samples")
        return torch.from_numpy(x).float(), None if labels is None else torch.from_numpy(labels).long()
    if "arr_0" in data:
        arr = data["arr_0"]
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise ValueError(f"{p}: arr_0 must be uint8 N×H×W×C, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x, None
    raise ValueError(f"{p}: expected a 'samples' (fpdm) or 'arr_0' (ADM) array, found {list(data.keys())}")


SMALL_N = 200  # below this, FID's bias and noise swamp the differences worth comparing


def check_samples(x: np.ndarray, labels: np.ndarray | None, what: str) -> None:
    """Refuse what would be scored as garbage: a ValueError naming the problem and the layout expected
    (float N×C×H×W in [-1, 1], finite; labels one integer per sample)."""
    layout = "float N×C×H×W in [-1, 1], as `fpdm sample` writes"
    if x.ndim != 4:
        raise ValueError(f"{what} has shape {x.shape}; expected {layout}")
    if x.dtype == np.uint8:
        raise ValueError(f"{what} holds uint8 values (0–255); expected {layout} (rescale with x / 127.5 - 1, "
                         "or store uint8 N×H×W×C images as ADM's arr_0)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} has dtype {x.dtype}; expected {layout}")
    bad = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
    if bad:
        raise ValueError(f"{what}: {bad} of {len(x)} samples contain NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{what} range from {lo:.4g} to {hi:.4g}; expected {layout}")
    if labels is not None and (labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{what}: labels have shape {labels.shape} and dtype {labels.dtype}; expected one "
                         "integer class per sample")


def check_digit_labels(labels: Tensor | None, what: str) -> None:
    """Digits classes are 0–9: labels outside would make class consistency a silent 0."""
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"{what}: labels range from {int(labels.min())} to {int(labels.max())}; digits "
                         "classes are 0–9")


def small_sample_warning(n: int) -> str | None:
    """A warning when n samples are too few for FID differences to mean anything."""
    if n >= SMALL_N:
        return None
    return (f"only {n} samples: FID is strongly biased and noisy at this size (see its ± s.e.); compare "
            f"runs at {SMALL_N} samples or more, on the same seeds")


def as_digits(x: Tensor) -> Tensor:
    """Check (and, for 3 identical channels, reduce) samples to the digits shape (N, 1, 8, 8)."""
    if x.shape[1] == 3 and torch.equal(x[:, :1].expand_as(x), x):
        x = x[:, :1]
    if tuple(x.shape[1:]) == (1, 32, 32):
        raise ValueError("digits metrics need 8×8 greyscale samples, got (1, 32, 32); for Fashion-MNIST "
                         "samples pass --ref fashion-mnist")
    if tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits metrics need 8×8 greyscale samples, got {tuple(x.shape[1:])}; use "
                         f"--inception-weights for other data")
    return x


def evaluate_file(samples: str | Path, ref: str = "digits", *, inception_weights: str | None = None,
                  kid_subset_size: int = 1000, device: str = "cpu",
                  warn: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """`fpdm eval`: score a samples file (.npz from `fpdm sample`, an ADM .npz, or an image folder) against
    `ref`: digits or fashion-mnist with the project's feature nets, or with `inception_weights` any folder /
    .npz through torch-fidelity. The settings `fpdm sample` recorded beside the file are kept in the result;
    a sample too small to trust is said through `warn`."""
    if inception_weights:
        from fpdm.evaluation.inception import inception_metrics

        result = inception_metrics(samples, ref, inception_weights, kid_subset_size=kid_subset_size,
                                   device=device)
        result.update(features="Inception-v3 pool3 (torch-fidelity)", weights=inception_weights,
                      samples=samples, reference=ref)
        return result
    x, labels = load_samples(samples)
    fashion = ref == "fashion-mnist"
    if fashion and tuple(x.shape[1:]) != (1, 32, 32):
        raise ValueError(f"--ref fashion-mnist needs 32×32 greyscale samples, got {tuple(x.shape[1:])} "
                         f"in {samples}")
    x = x if fashion else as_digits(x)
    check_digit_labels(labels, samples)
    if (warning := small_sample_warning(len(x))) is not None:
        warn(warning)
    result = fashion_metrics(x, labels, kid_subset_size=kid_subset_size) if fashion else \
        digits_metrics(x, labels, reference=ref, kid_subset_size=kid_subset_size)
    result["samples"] = samples
    sampler = sampler_record(samples)
    if sampler is not None:
        result["sampler"] = sampler
    return result


# held-out accuracy below which `train_feature_net` warns
FEATURE_ACCURACY = {"digits": 0.97, "fashion-mnist": 0.91}


def train_feature_net(data: str = "digits", *, data_dir: str | None = None, out: str | None = None,
                      epochs: int | None = None, seed: int = 0, progress: bool = False,
                      warn: Callable[[str], None] = lambda m: None) -> tuple[str, float]:
    """`fpdm train-features`: (re)train a dataset's feature network with its shipped settings (`epochs`
    and `seed` may change) and write it to `out` (default: the package's file). Returns the path and the
    held-out accuracy (below `FEATURE_ACCURACY` said through `warn`)."""
    from dataclasses import replace

    from fpdm.common.checkpoint import into_the_package
    from fpdm.evaluation import digits_features, fashion_features

    if data not in FEATURE_ACCURACY:
        raise ValueError(f"--data {data!r}: feature networks exist for {', '.join(FEATURE_ACCURACY)}")
    if data == "digits":
        if data_dir is not None:
            raise ValueError("--data-dir applies to --data fashion-mnist only")
        cfg = digits_features.FeatureTrainConfig(seed=seed)
        cfg = replace(cfg, epochs=epochs or cfg.epochs)
        out = out or str(into_the_package(digits_features.WEIGHTS, "--out"))
        net, acc = digits_features.train_digits_net(cfg, progress=progress)
        digits_features.save_feature_net(net, acc, cfg, out)
    else:
        cfg = replace(fashion_features.CONFIG, seed=seed, epochs=epochs or fashion_features.CONFIG.epochs)
        out = out or str(into_the_package(fashion_features.WEIGHTS, "--out"))
        net, acc = fashion_features.train_fashion_net(cfg, data_dir, progress=progress)
        fashion_features.save_fashion_net(net, acc, cfg, out)
    if acc < FEATURE_ACCURACY[data]:
        warn(f"held-out accuracy {acc:.4f} is below {FEATURE_ACCURACY[data]}")
    return out, acc
