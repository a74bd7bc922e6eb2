"""Minimal ancestral (DDPM) and DDIM sampling with a fixed number of fixed-point iterations per step.

One random generator per sample seed draws that sample's initial noise and every step's noise, so a seed
gives the same image whatever the batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from .checkpoint import load_checkpoint
from .config import DiffusionConfig, ModelConfig
from .diffusion import GaussianDiffusion
from .dit import DiT
from .fpdm import FPDM
from .registry import build_model
from .schedules import space_timesteps
from .train import make_diffusion

SAMPLERS = ("ddpm", "ddim")


def load_model(path: str | Path, use_ema: bool = True) -> tuple[DiT | FPDM, GaussianDiffusion, dict]:
    """Rebuild the model (EMA weights by default) and its diffusion from a training checkpoint."""
    ckpt = load_checkpoint(path)
    for key in ("model_config", "diffusion_config", "model"):
        if key not in ckpt:
            raise ValueError(f"{path} is not an fpdm training checkpoint (no {key!r} entry)")
    model_cfg = ModelConfig.from_dict(ckpt["model_config"])
    model = build_model(model_cfg)
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    diffusion = make_diffusion(DiffusionConfig.from_dict(ckpt["diffusion_config"]), model_cfg.learn_sigma)
    return model.eval(), diffusion, ckpt


def _per_sample_randn(generators: Sequence[torch.Generator], shape: Sequence[int]) -> Tensor:
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])  # (N, *shape)


@torch.no_grad()
def sample(model: DiT | FPDM, diffusion: GaussianDiffusion, labels: Tensor, seeds: Sequence[int], *,
           steps: int | str = 50, iters: int | None = None, sampler: str = "ddpm", eta: float = 0.0,
           clip_denoised: bool = True, device: str | torch.device = "cpu", progress: bool = False) -> Tensor:
    """Draw len(seeds) samples (N, C, H, W) in [-1, 1] (clipped) for the given labels.

    `steps` picks timesteps with `space_timesteps` (an int or an ADM spec such as "ddim25"); `iters` is the
    number of fixed-point iterations per step for FPDM (default: the model's DiT-equivalent count)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if len(labels) != len(seeds):
        raise ValueError(f"got {len(labels)} labels for {len(seeds)} seeds")
    if iters is not None and iters < 0:
        raise ValueError(f"--iters must be >= 0, got {iters}")
    spaced = diffusion.respace(space_timesteps(diffusion.num_timesteps, steps))
    cfg = model.config
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    x = _per_sample_randn(generators, shape).to(device)  # (N, C, H, W)
    y = labels.to(device)
    fwd = {"iters": iters} if isinstance(model, FPDM) else {}
    for i in tqdm(range(spaced.num_timesteps - 1, -1, -1), desc="sample", disable=not progress):
        t = torch.full((len(seeds),), int(spaced.timesteps[i]), dtype=torch.long, device=device)
        out = model(x, t, y, **fwd)
        noise = _per_sample_randn(generators, shape).to(device) if (sampler == "ddpm" or eta > 0) else None
        if sampler == "ddpm":
            x, _ = spaced.ddpm_step(out, x, i, noise, clip_denoised=clip_denoised)
        else:
            x, _ = spaced.ddim_step(out, x, i, eta=eta, noise=noise, clip_denoised=clip_denoised)
    return x.clamp(-1, 1).cpu()
