"""Checkpoints written by the official DiT and FPDM code: a bare state dict (e.g. the public
DiT-XL-2-256x256.pt) or the FPDM trainer's file ({model, ema, opt, args, train_steps}, with args.json in
the run folder).

The architecture is read from the tensors' names and shapes: DiT or FPDM (`blocks.*` vs `blocks_pre.*` /
`block_fixed_point.*`), width and patch (the patch embedding), input size (the position table), classes
(the label table has one extra row for the null class), learned sigma (the output layer), depth and the
pre/post block counts. The heads, the pre/post timestep conditioning and, for FPDM, the DiT depth that sets
the default iteration count cannot be seen in the tensors: they come from the trainer's args (its model name,
e.g. "DiT-XL/2", fixes heads and depth) or from the caller, with the released defaults where one exists.
Files are read with `torch.load(weights_only=True)` or safetensors only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fpdm.config import DiffusionConfig, ModelConfig
from fpdm.models.registry import SIZES

__all__ = ["OfficialCheckpoint", "infer_config", "is_official", "load_official"]

_WIDTH_TO_SIZE = {width: name for name, (_, width, _) in SIZES.items() if name != "T"}


class OfficialCheckpoint(dict):
    """weights, model_config, diffusion_config and provenance of an official file (a plain dict)."""


def _count(state: dict[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def infer_config(state: dict[str, Tensor], args: dict[str, Any] | None = None, *,
                 num_heads: int | None = None, pre_post_timestep_conditioning: bool | None = None,
                 source: str = "checkpoint") -> tuple[ModelConfig, DiffusionConfig]:
    """Model and diffusion configs of an official state dict (official parameter names), from its tensors and
    the trainer's `args` when given. Raises ValueError naming what is missing or ambiguous."""
    need = ("x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight", "t_embedder.mlp.0.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"{source} is not a DiT/FPDM state dict: no {', '.join(missing)} (official "
                         "parameter names expected)")
    is_dit, is_fpdm = _count(state, "blocks") > 0, "block_fixed_point.attn.qkv.weight" in state
    if is_dit == is_fpdm:
        raise ValueError(f"{source}: cannot tell DiT from FPDM (blocks.N: {is_dit}, block_fixed_point: "
                         f"{is_fpdm})")
    args = args or {}
    width, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{source}: pos_embed has {tokens} tokens, not a square grid")
    out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(f"{source}: the output layer makes {out_channels} channels per pixel for "
                         f"{in_channels} input channels (expected {in_channels} or {2 * in_channels})")
    rows = state["y_embedder.embedding_table.weight"].shape[0] if "y_embedder.embedding_table.weight" in \
        state else 1
    name = str(args.get("model", ""))
    named = name.split("-", 1)[1].split("/")[0] if name.startswith("DiT-") and "/" in name else None
    size = named if named in SIZES and SIZES[named][1] == width else _WIDTH_TO_SIZE.get(width)
    heads = num_heads or (SIZES[size][2] if size in SIZES else None)
    if heads is None:
        why = (f"its args name {name!r} (width {SIZES[named][1]})" if named in SIZES else
               "no trainer args name the model")
        raise ValueError(f"{source}: width {width} is not a DiT size (S/B/L/XL) and {why}, so the number of "
                         "attention heads is unknown; pass --num-heads")
    mlp_ratio = state[("blocks.0" if is_dit else "block_fixed_point") + ".mlp.fc1.weight"].shape[0] / width
    pptc = args.get("fixed_point_pre_post_timestep_conditioning", False) \
        if pre_post_timestep_conditioning is None else pre_post_timestep_conditioning
    common = dict(input_size=side * patch, patch_size=patch, in_channels=in_channels, hidden_size=width,
                  num_heads=heads, mlp_ratio=mlp_ratio, num_classes=rows - 1,
                  learn_sigma=out_channels == 2 * in_channels)
    if is_dit:
        model_cfg = ModelConfig(arch="dit", depth=_count(state, "blocks"), **common)
    else:
        pre, post = _count(state, "blocks_pre"), _count(state, "blocks_post")
        depth = SIZES[size][0] if size in SIZES else pre + post + 1  # sets the default iterations only
        model_cfg = ModelConfig(arch="fpdm", depth=max(depth, pre + post + 1), pre_depth=pre, post_depth=post,
                                pre_post_timestep_conditioning=bool(pptc), **common)
    diffusion_cfg = DiffusionConfig(prediction="v" if args.get("predict_v") else "eps",
                                    zero_terminal_snr=bool(args.get("use_zero_terminal_snr", False)))
    return model_cfg, diffusion_cfg


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle of arbitrary objects, or not a torch file at all
        raise ValueError(f"{path} cannot be read as tensors and plain values (torch.load with "
                         f"weights_only=True refused it: {type(exc).__name__}); fpdm never unpickles "
                         "arbitrary objects — re-save its state dict") from None


def _args_json(path: Path) -> dict[str, Any] | None:
    """The trainer's args.json: beside the file, or in the run folder above checkpoints/."""
    for candidate in (path.parent / "args.json", path.parent.parent / "args.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def is_official(state: Any) -> bool:
    """A bare official state dict, or the official trainer's checkpoint dict."""
    if not isinstance(state, dict):
        return False
    if "x_embedder.proj.weight" in state:
        return True
    return isinstance(state.get("model"), dict) and "x_embedder.proj.weight" in state["model"] and \
        "model_config" not in state


def load_official(path: str | Path, *, use_ema: bool = True, num_heads: int | None = None,
                  pre_post_timestep_conditioning: bool | None = None, state: Any = None
                  ) -> OfficialCheckpoint:
    """Weights and configs of an official checkpoint file (`state`: its already-loaded content, if any)."""
    path = Path(path)
    state = _read(path) if state is None else state
    if not is_official(state):
        raise ValueError(f"{path} is neither an fpdm checkpoint nor an official DiT/FPDM one (no "
                         "x_embedder.proj.weight among its tensors, nor a 'model' state dict)")
    args = _args_json(path)
    if "x_embedder.proj.weight" in state:
        weights, kind, step = state, "bare state dict", None
    else:
        args = state.get("args") if isinstance(state.get("args"), dict) else args
        which = "ema" if use_ema and isinstance(state.get("ema"), dict) else "model"
        weights, kind, step = state[which], f"official trainer checkpoint ({which} weights)", \
            state.get("train_steps")
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    model_cfg, diffusion_cfg = infer_config(weights, args, num_heads=num_heads,
                                            pre_post_timestep_conditioning=pre_post_timestep_conditioning,
                                            source=str(path))
    return OfficialCheckpoint(weights=weights, model_config=model_cfg, diffusion_config=diffusion_cfg,
                              provenance={"source": str(path), "kind": kind, "train_steps": step,
                                          "args": args is not None})
