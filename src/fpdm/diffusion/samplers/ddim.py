"""DDIM (Song et al. 2021): the deterministic (eta = 0) or partly stochastic step from the predicted x0 and
eps, over any respaced chain."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion, Index
from fpdm.diffusion.samplers.base import StepRule, check_noise, nonzero_mask


def ddim_step(diffusion: GaussianDiffusion, model_output: Tensor, x_t: Tensor, i: Index, eta: float = 0.0,
              noise: Tensor | None = None, clip_denoised: bool = False) -> tuple[Tensor, Tensor]:
    """DDIM step from chain index ``i`` to ``i - 1`` (x_0 at i == 0).

    ``abar_prev`` is this chain's previous kept timestep (1 at i == 0), and
    ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)``. The learned
    variance channels, if any, are ignored. ``noise`` is required when ``eta > 0`` (except at i == 0).
    Returns ``(x_prev, pred_xstart)``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    i = diffusion.index(i, x_t)
    if eta > 0:
        check_noise(noise, i, x_t, "ddim_step with eta > 0")
    out = diffusion.p_mean_variance(model_output, x_t, i, clip_denoised=clip_denoised)
    abar, abar_prev = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev
    sigma = eta * np.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    direction = np.sqrt(np.clip(1.0 - abar_prev - sigma**2, 0.0, None))
    x_prev = (diffusion.gather("sqrt_alphas_cumprod_prev", i, x_t) * out["pred_xstart"]
              + diffusion.gather(direction, i, x_t) * out["pred_eps"])
    if eta > 0 and noise is not None:
        x_prev = x_prev + nonzero_mask(i, x_t) * diffusion.gather(sigma, i, x_t) * noise
    return x_prev, out["pred_xstart"]


def _step(diffusion: GaussianDiffusion, model_output: Tensor, x_t: Tensor, i: int, noise: Tensor | None, *,
          eta: float = 0.0, clip_denoised: bool = False) -> Tensor:
    return ddim_step(diffusion, model_output, x_t, i, eta=eta, noise=noise, clip_denoised=clip_denoised)[0]


RULE = StepRule("ddim", _step, stochastic=lambda eta: eta > 0, takes_eta=True)
