"""`fpdm export`, `fpdm import` and `fpdm build-weights`: weights in and out."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fpdm.cli.common import _add_official_options, _Formatter


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", formatter_class=_Formatter, help="checkpoint → safetensors + JSON config",
                       description="Write a training checkpoint's weights as <out>/model.safetensors and its "
                                   "configs as <out>/config.json: the form to publish (loading it cannot run "
                                   "code). `fpdm sample --ckpt <out>` reads it.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `fpdm train` (…/ckpt.pt)")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace an export that --out already holds "
                   "(refused by default)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(a: argparse.Namespace) -> int:
    from fpdm.weights.export import export_weights

    cfg = export_weights(a.ckpt, a.out, use_ema=not a.no_ema, overwrite=a.overwrite)
    print(f"wrote {Path(a.out) / 'model.safetensors'} ({cfg['weights']} weights, step {cfg['step']}) and "
          f"{Path(a.out) / 'config.json'}")
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", formatter_class=_Formatter, help="official DiT/FPDM checkpoint → our format",
                       description="Read an official DiT/FPDM checkpoint (a bare state dict such as "
                                   "DiT-XL-2-256x256.pt, or the official trainer's checkpoint with args.json "
                                   "in its run folder), infer its architecture, and write "
                                   "<out>/model.safetensors + config.json with the provenance. `fpdm sample "
                                   "--ckpt` also reads official files directly.")
    p.add_argument("src", help="official .pt/.pth/.safetensors file")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--no-ema", action="store_true", help="trainer checkpoints: the raw weights, not the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace an export that --out already holds "
                   "(refused by default)")
    _add_official_options(p)
    p.set_defaults(func=_cmd_import)


def _cmd_import(a: argparse.Namespace) -> int:
    from fpdm.weights.export import import_official

    cfg = import_official(a.src, a.out, use_ema=not a.no_ema, num_heads=a.num_heads,
                          pre_post_timestep_conditioning=a.pre_post_timestep_conditioning,
                          overwrite=a.overwrite)
    m = cfg["model_config"]
    print(f"wrote {Path(a.out) / 'model.safetensors'} and config.json: {m['arch']} width {m['hidden_size']}, "
          f"depth {m['depth']}, heads {m['num_heads']}, patch {m['patch_size']}, input {m['input_size']}, "
          f"{m['num_classes']} classes ({cfg['weights']})")
    return 0


def _add_build_weights(sub: argparse._SubParsersAction) -> None:
    from fpdm.weights.builtin import BUILTINS

    p = sub.add_parser("build-weights", formatter_class=_Formatter,
                       help="(re)build the built-in weights",
                       description="Train built-in models by their recipe on one thread (digits: "
                                   "3,000 steps, batch 64, AdamW 1e-3, a few minutes; fashion-*: "
                                   "configs/fashion32-*.json, 10,000 steps, hours) and write their EMA "
                                   "weights into the package (or --out), with the recipe and the FID "
                                   "measured at the stated budget. On the same torch build this "
                                   "regenerates the shipped files bit for bit.")
    p.add_argument("names", nargs="*", default=["digits-fpdm", "digits-dit"], choices=list(BUILTINS),
                   help="which built-ins (default: the digits ones)")
    p.add_argument("--out", default=None,
                   help="parent folder of the built-ins (default: the package's assets)")
    p.add_argument("--bf16", action="store_true", help="store the weights as bfloat16 (half the size; the "
                   "fashion built-ins are stored as float16 without it)")
    p.add_argument("--from-run", default=None, help="instead of training, export this finished `fpdm train` "
                   "run folder (it must have been trained by the built-in's recipe; one name only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_weights)


def _cmd_build_weights(a: argparse.Namespace) -> int:
    from fpdm.weights.build import build, ship

    if a.from_run is not None and len(a.names) != 1:
        raise ValueError(f"--from-run exports one run as one built-in; name exactly one, got {len(a.names)}")
    for name in a.names:
        out, dtype = None if a.out is None else Path(a.out) / name, torch.bfloat16 if a.bf16 else None
        cfg = ship(name, a.from_run, out, dtype=dtype) if a.from_run else \
            build(name, out, dtype=dtype, progress=not a.no_progress)
        key = next(k for k in cfg if k.endswith("_eval"))
        ev, fid = cfg[key], key.replace("_eval", "_fid")
        print(f"{name}: {fid.replace('_', '-')} {ev[fid]:.2f} ± {ev[fid + '_se']:.2f} at budget "
              f"{ev['budget']} (seeds 0-99), trained in {cfg['train_wall_s']:.0f} s")
    return 0
