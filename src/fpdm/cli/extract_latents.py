"""`fpdm extract-latents`: encode an image folder with a VAE."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpdm.cli.common import _Formatter


def _add_extract_latents(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-latents", formatter_class=_Formatter, help="encode images with a VAE",
                       description="Encode an image folder (ADM centre crop, RGB) with a local diffusers "
                                   "AutoencoderKL into latent shards + manifest.json; train on them with "
                                   "`fpdm train --data <out>`.")
    p.add_argument("--data", required=True, help="image folder (class = sub-folder) (required)")
    p.add_argument("--vae", required=True, help="local AutoencoderKL folder, e.g. the SD VAE (required)")
    p.add_argument("--out", required=True, help="output folder for shards and manifest (required)")
    p.add_argument("--image-size", type=int, default=256, help="centre-crop size in pixels")
    p.add_argument("--flip", action="store_true", help="also encode each image's mirror image")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder call")
    p.add_argument("--shard-size", type=int, default=4096, help="latents per shard file")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    p.add_argument("--device", default="cpu", help="cpu, cuda, …")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract_latents)


def _cmd_extract_latents(a: argparse.Namespace) -> int:
    from fpdm.data.latents import extract_latents

    m = extract_latents(a.data, a.vae, a.out, a.image_size, flip=a.flip, batch_size=a.batch_size,
                        shard_size=a.shard_size, seed=a.seed, device=a.device, progress=not a.no_progress)
    print(f"wrote {m['num_samples']} latents of shape {m['latent_shape']} in {len(m['shards'])} shard(s) "
          f"and {Path(a.out) / 'manifest.json'}")
    return 0
