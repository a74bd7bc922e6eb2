"""Latent-space data: encode an image folder once with a VAE (diffusers' `AutoencoderKL`, loaded offline
from a local folder — the SD VAE when you have it), train on the latents, decode samples through the same
VAE.

A latent folder holds `manifest.json` and shards `latents-00000.safetensors`, each with `latents`
(N, C, h, w) float32, already multiplied by the VAE's scaling factor, and their `labels` (N,), kept together
so a shard is never out of step with its labels. `fpdm train --data <folder>` reads it like images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from tqdm import tqdm

from fpdm.common.checkpoint import atomic_write
from fpdm.common.digest import check_safetensors, read_json, safetensors_metadata, with_json_digest
from fpdm.data.image_folder import (
    ImageDataset,
    _open_image,
    _scan_folder,
    _to_mode,
    _to_tensor,
    center_crop_resize,
)

MANIFEST = "manifest.json"
FORMAT = "fpdm-latents/1"


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """`AutoencoderKL` from a local folder (config.json + weights), never from the network."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError("latents need diffusers: pip install -e '.[vae]'") from e
    p = Path(path)
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"--vae {p}: expected a diffusers AutoencoderKL folder with config.json "
                                "(e.g. saved by save_pretrained)")
    vae = AutoencoderKL.from_pretrained(str(p), local_files_only=True)
    return vae.to(device).eval().requires_grad_(False)


def scaling_factor(vae: Any) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


def _batches(files: list[Path], labels: list[int], image_size: int, batch: int
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for lo in range(0, len(files), batch):
        chunk = files[lo:lo + batch]
        x = torch.stack([_to_tensor(center_crop_resize(_to_mode(_open_image(f), "RGB"), image_size))
                         for f in chunk])  # (B, 3, S, S) in [-1, 1]
        yield x, torch.tensor(labels[lo:lo + batch], dtype=torch.int64)


@torch.no_grad()
def extract_latents(data: str | Path, vae_path: str | Path, out: str | Path, image_size: int,
                    flip: bool = False, batch_size: int = 32, shard_size: int = 4096, seed: int = 0,
                    device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Encode every image of a folder (ADM centre crop to `image_size`, RGB), and with `flip` its mirror
    image too; write shards and the manifest. Latents are draws from the encoder's posterior with a
    seeded generator, times the VAE's scaling factor (as DiT's feature extraction)."""
    if image_size < 8 or image_size % 8:
        raise ValueError(f"--image-size must be a positive multiple of 8, got {image_size}")
    out = Path(out)
    if (out / MANIFEST).exists():
        raise FileExistsError(f"--out {out} already holds latents ({MANIFEST}); choose another folder")
    files, labels, class_names = _scan_folder(Path(data))
    vae = load_vae(vae_path, device)
    scale = scaling_factor(vae)
    gen = torch.Generator(device=device).manual_seed(seed)
    shards: list[dict[str, Any]] = []
    buf_x: list[torch.Tensor] = []
    buf_y: list[torch.Tensor] = []

    def flush() -> None:
        if not buf_x:
            return
        x, y = torch.cat(buf_x), torch.cat(buf_y)
        name = f"latents-{len(shards):05d}.safetensors"
        tensors = {"latents": x.contiguous(), "labels": y.contiguous()}
        blob = save(tensors, metadata=safetensors_metadata(tensors))
        atomic_write(out / name, lambda f: f.write(blob))
        shards.append({"file": name, "num": len(y)})
        buf_x.clear()
        buf_y.clear()

    shape = None
    bar = tqdm(total=len(files) * (2 if flip else 1), desc="encode", disable=not progress)
    for x, y in _batches(files, labels, image_size, batch_size):
        for view in ([x, x.flip(-1)] if flip else [x]):
            z = vae.encode(view.to(device)).latent_dist.sample(generator=gen) * scale  # (B, C, h, w)
            shape = list(z.shape[1:])
            buf_x.append(z.float().cpu())
            buf_y.append(y)
            bar.update(len(y))
            if sum(len(v) for v in buf_y) >= shard_size:
                flush()
    flush()
    bar.close()
    manifest = {"format": FORMAT, "vae": str(vae_path), "scaling_factor": scale, "image_size": image_size,
                "latent_shape": shape, "flip": flip, "seed": seed, "source": str(data),
                "num_samples": sum(s["num"] for s in shards), "num_classes": len(class_names),
                "class_names": class_names, "shards": shards}
    text = json.dumps(with_json_digest(manifest), indent=1) + "\n"
    atomic_write(out / MANIFEST, lambda f: f.write(text.encode()))
    return manifest


def is_latent_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).exists()


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MANIFEST
    manifest = read_json(p)  # DamagedFile (a ValueError naming it) if it is not valid JSON or damaged
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{p} is not an fpdm latents manifest (expected format {FORMAT!r})")
    return manifest


def training_vae(ckpt: dict[str, Any]) -> str | None:
    """The VAE that encoded a checkpoint's training latents, when that latent folder is still where it
    was (sampling decodes through it); None for pixel-space training data."""
    data = ckpt.get("train_config", {}).get("data")
    if data and data != "digits" and is_latent_folder(data):
        return read_manifest(data)["vae"]
    return None


def load_latents(path: str | Path) -> ImageDataset:
    """A latent folder as an `ImageDataset` (images = scaled latents, C = latent channels)."""
    manifest = read_manifest(path)
    xs, ys = [], []
    for shard in manifest["shards"]:
        f = Path(path) / shard["file"]
        try:
            with safe_open(str(f), "pt") as handle:
                metadata = handle.metadata()
            data = load_file(str(f))
        except Exception as e:  # missing or corrupt shard
            raise ValueError(f"latent shard {f} cannot be read ({e}); extract the latents again") from None
        check_safetensors(f, data, metadata)
        if len(data["labels"]) != shard["num"] or len(data["latents"]) != shard["num"]:
            raise ValueError(f"latent shard {f} holds {len(data['labels'])} samples, the manifest says "
                             f"{shard['num']}")
        xs.append(data["latents"])
        ys.append(data["labels"])
    return ImageDataset(torch.cat(xs), torch.cat(ys), num_classes=manifest["num_classes"], name=str(path),
                        split="train", class_names=manifest["class_names"])


@torch.no_grad()
def decode(vae: Any, z: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Scaled latents (N, C, h, w) → images (N, 3, H, W) in [-1, 1]."""
    scale = scaling_factor(vae)
    dev = next(vae.parameters()).device
    out = [vae.decode(z[i:i + batch_size].to(dev) / scale).sample.float().cpu()
           for i in range(0, len(z), batch_size)]
    return torch.cat(out).clamp(-1, 1)


__all__ = ["decode", "extract_latents", "is_latent_folder", "load_latents", "load_vae", "read_manifest",
           "training_vae"]
