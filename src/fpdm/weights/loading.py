"""One `load_model(path_or_name)` for every format fpdm reads: training checkpoints (EMA or raw weights),
`fpdm export` folders and .safetensors files, official DiT/FPDM files, and the built-in names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from fpdm.common.checkpoint import load_checkpoint
from fpdm.config import DiffusionConfig, ModelConfig
from fpdm.diffusion.gaussian import GaussianDiffusion, make_diffusion
from fpdm.models.dit import DiT
from fpdm.models.fpdm import FPDM
from fpdm.models.registry import build_model
from fpdm.weights.export import CONFIG_NAME, is_exported, load_exported
from fpdm.weights.official import is_official, load_official


def load_model(path: str | Path, use_ema: bool = True, *, num_heads: int | None = None,
               pre_post_timestep_conditioning: bool | None = None
               ) -> tuple[DiT | FPDM, GaussianDiffusion, dict]:
    """Rebuild the model and its diffusion from a training checkpoint (EMA weights by default), an
    `fpdm export` folder / .safetensors file (whatever weights were exported), or an official DiT/FPDM file
    (bare state dict or the official trainer's checkpoint; `num_heads` and `pre_post_timestep_conditioning`
    fill in what its tensors do not say — see `fpdm.weights.official`)."""
    from fpdm.weights.builtin import resolve

    given, path = path, resolve(path)  # a built-in name, e.g. "digits-fpdm", is its folder in the package
    p = Path(path)
    if p.is_dir() and not is_exported(p):
        hint = f"pass {p / 'ckpt.pt'} (its training checkpoint)" if (p / "ckpt.pt").exists() else \
            "expected a checkpoint file or an `fpdm export` folder (with model.safetensors)"
        raise ValueError(f"{p} is a folder: {hint}")
    official_kw = dict(use_ema=use_ema, num_heads=num_heads,
                       pre_post_timestep_conditioning=pre_post_timestep_conditioning)
    if is_exported(p) and not (p.suffix == ".safetensors" and not (p.parent / CONFIG_NAME).exists()):
        weights, ckpt = load_exported(path)
        kind = ckpt.get("weights", "ema")
        if not use_ema and kind == "ema":  # an export holds one set of weights: say so, do not pretend
            raise ValueError(f"--no-ema: {given} holds only the EMA weights it was exported with; export the "
                             "raw ones with `fpdm export --no-ema`")
    elif p.suffix == ".safetensors":  # a bare state dict without our config.json: the official layout
        weights, ckpt = _official(load_official(p, **official_kw))
    else:
        # an official file has no digest; of ours, only the weights sampling uses are hashed (resume and
        # export check the rest), which makes the check ~2.5x cheaper
        ckpt = load_checkpoint(path, foreign_ok=True, only=("ema" if use_ema else "model",))
        if "model_config" not in ckpt and is_official(ckpt):
            weights, ckpt = _official(load_official(p, state=ckpt, **official_kw))
        else:
            for key in ("model_config", "diffusion_config", "model"):
                if key not in ckpt:
                    raise ValueError(f"{path} is not an fpdm training checkpoint (no {key!r} entry)")
            weights = ckpt["ema" if use_ema else "model"]
    model_cfg = ModelConfig.from_dict(ckpt["model_config"])
    model = build_model(model_cfg)
    load_weights(model, weights, str(path))
    diffusion = make_diffusion(DiffusionConfig.from_dict(ckpt["diffusion_config"]), model_cfg.learn_sigma)
    return model.eval(), diffusion, ckpt


def _official(off: dict) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(weights, checkpoint-like dict) of an official file, so the rest of fpdm sees one shape."""
    ckpt = {"model_config": off["model_config"].to_dict(),
            "diffusion_config": off["diffusion_config"].to_dict(),
            "step": off["provenance"]["train_steps"], "official": off["provenance"]}
    return off["weights"], ckpt


def load_weights(model: DiT | FPDM, state: dict[str, Tensor], source: str) -> None:
    """Strict load with a one-line error that names the file, the model and the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        cfg = model.config
        what = "; ".join(f"{name}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
                         for name, items in (("missing", missing), ("unexpected", unexpected),
                                             ("shape (file vs model)", shapes)) if items)
        raise ValueError(f"{source}: weights do not fit the {cfg.arch} model (width {cfg.hidden_size}, depth "
                         f"{cfg.depth}) its config describes — {what}")
    model.load_state_dict(state)


def init_weights(path: str | Path) -> dict[str, Any]:
    """The weights `fpdm train --init-from` starts from: the EMA weights of a training checkpoint, an
    export, an official DiT/FPDM file or a built-in name, as a state dict in float32."""
    model, _, _ = load_model(path)
    return {k: v.float() for k, v in model.state_dict().items()}
