"""DPM-Solver++(2M) (Lu et al. 2022): the multistep second-order solver of the probability-flow ODE in
data prediction, over the chain's kept timesteps.

In λ = log(α/σ), a step from s to t (h = λ_t − λ_s) is exact for the linear part and integrates the
predicted x0 D by a first-order term plus, from the second step on, a difference with the previous
prediction: x_t = (σ_t/σ_s) x_s + α_t (1 − e^{−h}) (D_s + (D_s − D_prev) / (2 r)), r = h_prev / h (the
"midpoint" form). The first step has no history and the last, to σ = 0, is first order (x_0 = D_s), as
diffusers' `final_sigmas_type="zero"`. The history is the previous prediction and its λ.
"""

from __future__ import annotations

import math

from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers.base import Evaluate, StepRule, alpha_sigma, denoised


def log_snr(diffusion: GaussianDiffusion, i: int) -> float:
    """λ = log(α/σ) at chain index i (+inf at the clean end, −inf at a zero-SNR terminal step)."""
    alpha, sigma = alpha_sigma(diffusion, i)
    if sigma == 0.0:
        return math.inf
    return math.log(alpha) - math.log(sigma) if alpha > 0 else -math.inf


def dpmpp_2m_update(x: Tensor, d: Tensor, history: tuple, lam_s: float, lam_t: float,
                    alpha_t: float, sigma_s: float, sigma_t: float) -> Tensor:
    """One DPM-Solver++(2M) update from s to t given this step's prediction `d` and `history` (empty, or
    (previous prediction, its λ)); first order when the history is empty or t is the clean end."""
    if sigma_t == 0.0:  # to x0: the prediction itself (first order, e^{-h} = 0)
        return alpha_t * d
    h = lam_t - lam_s
    phi = -math.expm1(-h)  # 1 - e^{-h}, accurate for small h
    ratio = sigma_t / sigma_s  # (a zero-SNR start, h = ∞: σ_t x + α_t D, DDIM's step from ᾱ = 0)
    if not history:
        return ratio * x + (alpha_t * phi) * d
    d_prev, lam_prev = history
    r = (lam_s - lam_prev) / h
    return ratio * x + (alpha_t * phi) * d + (alpha_t * phi * 0.5 / r) * (d - d_prev)


def advance(diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int, history: tuple, *,
            clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    d, _ = denoised(diffusion, evaluate(x, i), x, i, clip_denoised)
    lam_s, lam_t = log_snr(diffusion, i), log_snr(diffusion, i - 1)
    (_, sigma_s), (alpha_t, sigma_t) = alpha_sigma(diffusion, i), alpha_sigma(diffusion, i - 1)
    usable = history if history and math.isfinite(history[1]) and math.isfinite(lam_s) else ()
    x_next = dpmpp_2m_update(x, d, usable, lam_s, lam_t, alpha_t, sigma_s, sigma_t)
    return x_next, (d, lam_s)


RULE = StepRule("dpm++2m", None, stochastic=lambda eta: False, advance=advance, ode=True)  # noqa: ARG005
