"""Inception-v3 metrics (FID, KID, IS, precision/recall) for real datasets, through torch-fidelity.

Why this shape:

- torch-fidelity (the optional ``eval`` extra) is imported lazily, so the rest of the package never needs it.
- The Inception weights always come from a LOCAL file (``weights_path``): nothing is downloaded, ever.
  torch-fidelity reads it with ``torch.load`` and expects the plain ``state_dict`` of its
  ``FeatureExtractorInceptionV3`` (the file it would otherwise fetch, ``weights-inception-2015-12-05-*.pth``).
- The network runs once per image set: pool3 (2048-d) and unbiased logits are taken in one pass, and FID, KID
  and IS come from torch-fidelity's own metric functions on those features (the functions its
  ``calculate_metrics`` calls, so the numbers are the same as ``calculate_metrics(isc=True, fid=True,
  kid=True)`` with the same settings).
- Precision/recall is computed here, on the same Inception pool3 features (k-NN manifolds, Kynkäänniemi et
  al. 2019, as in the ADM evaluation suite): torch-fidelity's own precision/recall defaults to a VGG16
  extractor, which cannot use a local Inception weights file.
- ``export_adm_npz`` writes samples in the layout the ADM/guided-diffusion evaluation suite reads, for
  numbers comparable with published ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fpdm.common.checkpoint import atomic_write
from fpdm.common.images import to_uint8
from fpdm.evaluation import metrics

__all__ = [
    "IMAGE_EXTENSIONS",
    "export_adm_npz",
    "inception_features",
    "inception_metrics",
    "load_images",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registry name for its TF-compatible Inception
_INSTALL_HINT = 'torch-fidelity is needed for Inception metrics: pip install "fpdm[eval]"'

ImageSource = str | os.PathLike[str] | Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------------
# Image I/O (no torch-fidelity needed)
# ----------------------------------------------------------------------------------------------------


def _to_rgb_nchw(x: Tensor, what: str) -> Tensor:
    """uint8 (N, 1|3, H, W) -> uint8 (N, 3, H, W); Inception takes RGB only, so greyscale is replicated."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{what}: no images")
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


def _uint8_nhwc_to_nchw(arr: np.ndarray, what: str) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, 1|3) -> uint8 (N, 3, H, W)."""
    if arr.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 N×H×W×C pixels, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: expected uint8 N×H×W×C with C in (1, 3), got shape {arr.shape}")
    return _to_rgb_nchw(torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2), what)


def _float_nchw_to_uint8(x: Tensor, what: str) -> Tensor:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, 3, H, W), by the project's one pixel mapping (images.py)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected float images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    return _to_rgb_nchw(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2), what)


def export_adm_npz(images: Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save images as ``arr_0``: uint8 N×H×W×3, the file the ADM (guided-diffusion) evaluation suite reads.

    ``images``: a float tensor (N, C, H, W) in [-1, 1] (what the samplers return), or uint8 pixels — a NumPy
    array (N, H, W[, C]) or a tensor (N, C, H, W). Greyscale is replicated to 3 channels, since the suite
    feeds RGB to Inception. The write is atomic (temp file + rename), so an interrupted export never leaves a
    truncated file that a later evaluation would read. Returns the path written (exactly ``path``: no
    ``.npz`` is appended).
    """
    what = "export_adm_npz"
    if isinstance(images, np.ndarray):
        x = _uint8_nhwc_to_nchw(images, what)
    elif isinstance(images, Tensor):
        x = images.detach().cpu()
        x = _to_rgb_nchw(x, what) if x.dtype == torch.uint8 else _float_nchw_to_uint8(x, what)
    else:
        raise TypeError(f"{what}: expected a torch.Tensor or numpy.ndarray, got {type(images).__name__}")
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, arr_0=arr))
    return path


def _load_npz(p: Path) -> Tensor:
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: not a readable .npz file ({e})") from e
    with data:
        if "arr_0" in data.files:
            return _uint8_nhwc_to_nchw(data["arr_0"], f"{p} (arr_0)")
        if "samples" in data.files:
            s = data["samples"]
            if not np.issubdtype(s.dtype, np.floating):
                raise ValueError(f"{p}: 'samples' must be float N×C×H×W in [-1, 1], got dtype {s.dtype}")
            return _float_nchw_to_uint8(torch.from_numpy(s), f"{p} (samples)")
        raise ValueError(f"{p}: expected an 'arr_0' (ADM, uint8 N×H×W×C) or 'samples' (fpdm sample, float "
                         f"N×C×H×W) array, found {data.files}")


def _load_folder(root: Path) -> Tensor:
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{root}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    out: Tensor | None = None
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)  # greyscale/palette/RGBA -> RGB
        except OSError as e:
            raise ValueError(f"{f}: cannot read image ({e})") from e
        if out is None:
            out = torch.empty(len(files), 3, *arr.shape[:2], dtype=torch.uint8)
        elif arr.shape[:2] != tuple(out.shape[2:]):
            raise ValueError(f"{f}: image is {arr.shape[1]}×{arr.shape[0]} but {files[0]} is "
                             f"{out.shape[3]}×{out.shape[2]}; all images in {root} must have one size")
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    assert out is not None
    return out


def load_images(source: ImageSource) -> Tensor:
    """Images as uint8 (N, 3, H, W), the input torch-fidelity's Inception takes.

    ``source``: a ``.npz`` with ``arr_0`` (uint8 N×H×W×C, ADM layout) or ``samples`` (float N×C×H×W in
    [-1, 1], as written by ``fpdm sample``); a folder searched recursively, in sorted path order, for
    ``IMAGE_EXTENSIONS`` files of one size; or images already in memory (a uint8 or [-1, 1] float tensor
    (N, C, H, W), or a uint8 NumPy array N×H×W[×C]). Greyscale becomes 3 identical channels.
    """
    if isinstance(source, Tensor):
        x = source.detach().cpu()
        return _to_rgb_nchw(x, "images") if x.dtype == torch.uint8 else _float_nchw_to_uint8(x, "images")
    if isinstance(source, np.ndarray):
        return _uint8_nhwc_to_nchw(source, "images")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path, torch.Tensor or numpy.ndarray, got {type(source).__name__}")
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"no images at {p}")
    if p.is_dir():
        return _load_folder(p)
    if p.suffix.lower() != ".npz":
        raise ValueError(f"{p}: expected a .npz file or a folder of images")
    return _load_npz(p)


# ----------------------------------------------------------------------------------------------------
# Inception via torch-fidelity
# ----------------------------------------------------------------------------------------------------


def _import_torch_fidelity() -> Any:
    try:
        import torch_fidelity
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    return torch_fidelity


def _check_weights(weights_path: str | os.PathLike[str]) -> Path:
    p = Path(weights_path)
    if not p.is_file():
        raise FileNotFoundError(f"no Inception weights file at {p}; nothing is downloaded: give a local "
                                "torch-fidelity Inception state_dict (weights-inception-2015-12-05-*.pth)")
    return p


def _extractor(weights_path: Path, device: str | torch.device) -> torch.nn.Module:
    tf = _import_torch_fidelity()
    # A path is always given, so torch-fidelity's download branch is never reached.
    net = tf.FeatureExtractorInceptionV3(_EXTRACTOR_NAME, ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(weights_path))
    return net.to(device).eval().requires_grad_(False)  # torch-fidelity 0.3 leaves .eval() to its caller


def _run_extractor(net: torch.nn.Module, images: Tensor, batch_size: int,
                   device: str | torch.device) -> dict[str, Tensor]:
    pools, logits = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            pool, logit = net(images[i:i + batch_size].to(device))
            pools.append(pool.float().cpu())
            logits.append(logit.float().cpu())
    return {"pool3": torch.cat(pools), "logits_unbiased": torch.cat(logits)}


def inception_features(images: ImageSource, weights_path: str | os.PathLike[str], *, batch_size: int = 64,
                       device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Inception-v3 features of one image set, via torch-fidelity's TF-compatible network with LOCAL weights:
    ``pool3`` (N, 2048), used by FID/KID/precision/recall, and ``logits_unbiased`` (N, 1008), used by IS.
    Images of any size are resized to 299×299 inside the network (TF1-style bilinear)."""
    path = _check_weights(weights_path)
    net = _extractor(path, device)
    return _run_extractor(net, load_images(images), _positive(batch_size, "batch_size"), device)


def _positive(v: int, name: str) -> int:
    if not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def inception_metrics(samples: ImageSource, reference: ImageSource, weights_path: str | os.PathLike[str], *,
                      kid_subset_size: int = 1000, kid_subsets: int = 100, isc_splits: int = 10,
                      batch_size: int = 64, device: str | torch.device = "cpu", precision_recall: bool = True,
                      k: int = 3, rng_seed: int = 2020) -> dict[str, Any]:
    """FID, KID (mean, std), IS (mean, std) and k-NN precision/recall of ``samples`` against ``reference``.

    Both sets are anything ``load_images`` takes. The Inception weights come from the local file
    ``weights_path`` (never downloaded). FID/KID/IS are torch-fidelity's definitions and defaults
    (``rng_seed`` 2020 for the KID subsets and IS split shuffle); IS is of ``samples`` only. Precision and
    recall use the same pool3 features with ``k`` neighbours. ``kid_subset_size`` is clipped to the smaller
    set and ``isc_splits`` to the number of samples, so small sets still give numbers; the values used are
    returned with the metrics, so a number never loses what it means.
    """
    path = _check_weights(weights_path)
    tf = _import_torch_fidelity()
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    batch_size = _positive(batch_size, "batch_size")
    for v, name in ((kid_subset_size, "kid_subset_size"), (kid_subsets, "kid_subsets"),
                    (isc_splits, "isc_splits"), (k, "k")):
        _positive(v, name)
    x_s, x_r = load_images(samples), load_images(reference)
    n_s, n_r = len(x_s), len(x_r)
    need = max(2, k + 1) if precision_recall else 2  # checked before the costly Inception pass
    if min(n_s, n_r) < need:
        why = f" (precision/recall with k={k})" if precision_recall else ""
        raise ValueError(f"need at least {need} images per set{why}, got {n_s} samples and {n_r} reference "
                         "images")

    net = _extractor(path, device)
    f_s = _run_extractor(net, x_s, batch_size, device)
    del x_s
    f_r = _run_extractor(net, x_r, batch_size, device)
    del x_r, net

    kid_size = min(kid_subset_size, n_s, n_r)
    splits = min(isc_splits, n_s)
    fid = fid_statistics_to_metric(fid_features_to_statistics(f_s["pool3"]),
                                   fid_features_to_statistics(f_r["pool3"]), False)
    kid = kid_features_to_metric(f_s["pool3"], f_r["pool3"], kid_subset_size=kid_size,
                                 kid_subsets=kid_subsets, rng_seed=rng_seed, verbose=False)
    isc = isc_features_to_metric(f_s["logits_unbiased"], splits=splits, shuffle=True, rng_seed=rng_seed)
    out: dict[str, Any] = {
        "fid": float(fid[tf.KEY_METRIC_FID]),
        "kid": float(kid[tf.KEY_METRIC_KID_MEAN]),
        "kid_std": float(kid[tf.KEY_METRIC_KID_STD]),
        "inception_score": float(isc[tf.KEY_METRIC_ISC_MEAN]),
        "inception_score_std": float(isc[tf.KEY_METRIC_ISC_STD]),
    }
    if precision_recall:
        precision, recall = metrics.precision_recall(f_r["pool3"], f_s["pool3"], k=k, device=device)
        out.update(precision=precision, recall=recall, k=k)
    out.update(num_samples=n_s, reference_size=n_r, kid_subset_size=kid_size, kid_subsets=kid_subsets,
               isc_splits=splits, rng_seed=rng_seed, torch_fidelity_version=str(tf.__version__))
    return out
