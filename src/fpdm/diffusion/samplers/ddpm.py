"""Ancestral DDPM (Ho et al. 2020): x_{t-1} ~ N(mean_θ(x_t), σ_t²) with the model's (learned or fixed)
variance, over any respaced chain."""

from __future__ import annotations

import torch
from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion, Index
from fpdm.diffusion.samplers.base import StepRule, check_noise, nonzero_mask


def ddpm_step(diffusion: GaussianDiffusion, model_output: Tensor, x_t: Tensor, i: Index, noise: Tensor | None,
              clip_denoised: bool = False) -> tuple[Tensor, Tensor]:
    """Ancestral step x_t -> x_{t-1} at chain index ``i`` with the caller's noise (none added at i == 0).

    Returns ``(x_prev, pred_xstart)``. ``noise`` may be None only if every index is 0.
    """
    i = diffusion.index(i, x_t)
    check_noise(noise, i, x_t, "ddpm_step")
    out = diffusion.p_mean_variance(model_output, x_t, i, clip_denoised=clip_denoised)
    if noise is None:
        return out["mean"], out["pred_xstart"]
    x_prev = out["mean"] + nonzero_mask(i, x_t) * torch.exp(0.5 * out["log_variance"]) * noise
    return x_prev, out["pred_xstart"]


def _step(diffusion: GaussianDiffusion, model_output: Tensor, x_t: Tensor, i: int, noise: Tensor | None, *,
          eta: float = 0.0, clip_denoised: bool = False) -> Tensor:  # noqa: ARG001 - DDPM has no eta
    return ddpm_step(diffusion, model_output, x_t, i, noise, clip_denoised)[0]


RULE = StepRule("ddpm", _step, stochastic=lambda eta: True)  # noqa: ARG005
