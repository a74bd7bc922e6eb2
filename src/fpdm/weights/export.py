"""Released-weights format: `model.safetensors` (no code can run on load) plus `config.json`.

`fpdm export` turns a training checkpoint into it; `fpdm sample --ckpt DIR` (or the .safetensors file) loads
it like a checkpoint. Only tensors and JSON cross this boundary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fpdm.common.checkpoint import atomic_write, load_checkpoint
from fpdm.common.digest import DamagedFile, check_safetensors, safetensors_metadata
from fpdm.config import DiffusionConfig, ModelConfig
from fpdm.version import provenance

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "fpdm-weights/1"


def export_weights(ckpt_path: str | Path, out_dir: str | Path, use_ema: bool = True, *,
                   dtype: Any = None, extra: dict[str, Any] | None = None, overwrite: bool = False
                   ) -> dict[str, Any]:
    """Write `out_dir`/model.safetensors (EMA weights by default, stored as `dtype` if given, e.g.
    torch.bfloat16; loading casts back to the model's float32) and `out_dir`/config.json (with `extra`
    entries); return the config written. An export already in `out_dir` is replaced only with
    `overwrite`."""
    from fpdm.weights.builtin import BUILTINS, builtin_folder

    src = Path(ckpt_path)
    if str(ckpt_path) in BUILTINS and not src.exists():
        raise ValueError(f"--ckpt {ckpt_path} is a built-in, already exported (the folder "
                         f"{builtin_folder(str(ckpt_path))}): copy that folder, or sample it by name")
    if is_exported(src):
        raise ValueError(f"--ckpt {ckpt_path} is already an export (model.safetensors + config.json): copy "
                         "the folder instead")
    refuse_existing_export(out_dir, overwrite)
    state = load_checkpoint(ckpt_path)
    for key in ("model_config", "diffusion_config", "model", "ema"):
        if key not in state:
            raise ValueError(f"{ckpt_path} is not an fpdm training checkpoint (no {key!r} entry)")
    ModelConfig.from_dict(state["model_config"])  # refuse to export something we could not load back
    weights = {k: (v if dtype is None or not v.is_floating_point() else v.to(dtype)).contiguous()
               for k, v in state["ema" if use_ema else "model"].items()}
    config = {"format": FORMAT, **provenance(), "weights": "ema" if use_ema else "model",
              "step": state.get("step"), "model_config": state["model_config"],
              "diffusion_config": state["diffusion_config"],
              # what the weights were trained on: which metrics `sample --eval` scores them with
              "data": state.get("train_config", {}).get("data"),
              **({"class_names": state["class_names"]} if state.get("class_names") else {}), **(extra or {})}
    write_exported(out_dir, weights, config)
    return config


def import_official(src: str | Path, out_dir: str | Path, *, use_ema: bool = True,
                    num_heads: int | None = None, pre_post_timestep_conditioning: bool | None = None,
                    overwrite: bool = False) -> dict[str, Any]:
    """An official DiT/FPDM checkpoint (`fpdm.weights.official`) written in our export format, with where
    it came
    from and how its architecture was read recorded in config.json; returns that config."""
    from fpdm.models.registry import build_model
    from fpdm.weights.official import load_official

    refuse_existing_export(out_dir, overwrite)
    off = load_official(src, use_ema=use_ema, num_heads=num_heads,
                        pre_post_timestep_conditioning=pre_post_timestep_conditioning)
    try:  # refuse to write what would not load back
        build_model(off["model_config"]).load_state_dict(off["weights"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"{src}: its tensors do not fit the architecture read from them ({first})") from None
    config = {"format": FORMAT, **provenance(), "weights": off["provenance"]["kind"],
              "step": off["provenance"]["train_steps"], "model_config": off["model_config"].to_dict(),
              "diffusion_config": off["diffusion_config"].to_dict(),
              "provenance": {**off["provenance"],
                             "num_heads": "given" if num_heads else "from the model size",
                             "pre_post_timestep_conditioning": "given" if pre_post_timestep_conditioning
                             is not None else "from args.json or the released default (off)"}}
    write_exported(out_dir, {k: v.contiguous() for k, v in off["weights"].items()}, config)
    return config


def refuse_existing_export(out_dir: str | Path, overwrite: bool) -> None:
    """An export in `out_dir` is never replaced silently: a FileExistsError naming its step, unless
    `overwrite`."""
    weights = Path(out_dir) / WEIGHTS_NAME
    if weights.exists() and not overwrite:
        try:
            step = f" (step {json.loads((weights.parent / CONFIG_NAME).read_text()).get('step')})"
        except (OSError, ValueError):
            step = ""
        raise FileExistsError(f"--out {out_dir} already holds an export{step}; pass --overwrite to replace "
                              "it, or choose another --out")


def write_exported(out_dir: str | Path, weights: dict[str, Any], config: dict[str, Any]) -> None:
    """Write `out_dir`/model.safetensors and `out_dir`/config.json, the hashes of both in the former (a
    config changed later must be written through here again, or it no longer matches)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    blob = save(weights, metadata=safetensors_metadata(weights, config, format=FORMAT))
    atomic_write(out / WEIGHTS_NAME, lambda f: f.write(blob))
    atomic_write(out / CONFIG_NAME, lambda f: f.write((json.dumps(config, indent=1) + "\n").encode()))


def is_exported(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" or (p / WEIGHTS_NAME).exists()


def load_exported(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, config) from an export folder or its model.safetensors (config.json beside it)."""
    p = Path(path)
    weights = p if p.suffix == ".safetensors" else p / WEIGHTS_NAME
    config_path = weights.parent / CONFIG_NAME
    for f in (weights, config_path):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: an exported model is a folder with {WEIGHTS_NAME} and "
                                    f"{CONFIG_NAME} (`fpdm export`)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{config_path} is not valid JSON ({e}); it may be damaged: use an intact copy "
                         "or export again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not an fpdm export config (expected format {FORMAT!r})")
    try:
        with safe_open(str(weights), "pt") as f:
            metadata = f.metadata()
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights} is not a valid safetensors file ({e})") from None
    try:
        check_safetensors(weights, state, metadata, config, config_path)  # before trusting either
    except DamagedFile as e:
        builtin = config.get("builtin")
        hint = f"reinstall fpdm, or regenerate it with `fpdm build-weights {builtin}`" if builtin else \
            "use an intact copy, or export it again from its training checkpoint"
        raise e.with_hint(hint) from None
    for key in ("model_config", "diffusion_config"):
        if key not in config:
            raise ValueError(f"{config_path} has no {key!r} entry")
    ModelConfig.from_dict(config["model_config"])
    DiffusionConfig.from_dict(config["diffusion_config"])
    return state, config


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_weights", "import_official", "is_exported", "load_exported",
           "write_exported"]
