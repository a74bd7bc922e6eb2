"""Euler and Heun (Karras et al. 2022, "EDM"): the probability-flow ODE in σ = √((1 − ᾱ)/ᾱ), on the
chain's kept (integer) timesteps.

With x̃ = x / α (x = α x̃ is what the model sees at the timestep of σ), the ODE is dx̃/dσ = ε̂(x̃, σ). Euler
takes x̃ ← x̃ + (σ_next − σ) ε̂; Heun corrects with the slope at the Euler point, a second evaluation at the
next timestep, x̃ ← x̃ + (σ_next − σ) (ε̂ + ε̂') / 2, except on the last step (σ_next = 0), which is Euler:
x_0 = the predicted x0. So Heun costs 2 evaluations per step and 1 on the last: 2n − 1 for n steps.
A zero-SNR terminal step has σ = ∞ and cannot start these solvers.
"""

from __future__ import annotations

from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers.base import Evaluate, StepRule, alpha_sigma, denoised


def karras_sigma(diffusion: GaussianDiffusion, i: int) -> float:
    """σ = √((1 − ᾱ)/ᾱ) at chain index i (0 at the clean end, index −1)."""
    alpha, sigma = alpha_sigma(diffusion, i)
    if alpha == 0.0:
        raise ValueError("the Euler and Heun samplers start from a finite σ; a zero-terminal-SNR model's "
                         "first step has σ = ∞: use --sampler ddim, ddpm or dpm++2m")
    return sigma / alpha


def _slope(diffusion: GaussianDiffusion, evaluate: Evaluate, xs: Tensor, i: int,
           clip_denoised: bool) -> Tensor:
    """ε̂ at scaled state x̃ and chain index i: (x̃ − D) / σ, with D the (clipped) predicted x0."""
    alpha, _ = alpha_sigma(diffusion, i)
    x = alpha * xs
    d, _ = denoised(diffusion, evaluate(x, i), x, i, clip_denoised)
    return (xs - d) / karras_sigma(diffusion, i)


def _advance(heun: bool, diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int,
             history: tuple, *, clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    alpha, _ = alpha_sigma(diffusion, i)
    sigma, sigma_next = karras_sigma(diffusion, i), karras_sigma(diffusion, i - 1) if i > 0 else 0.0
    xs = x / alpha
    slope = _slope(diffusion, evaluate, xs, i, clip_denoised)
    xs_next = xs + (sigma_next - sigma) * slope
    if heun and sigma_next > 0.0:  # the corrector: the slope at the Euler point, at the next timestep
        slope_next = _slope(diffusion, evaluate, xs_next, i - 1, clip_denoised)
        xs_next = xs + (sigma_next - sigma) * 0.5 * (slope + slope_next)
    alpha_next, _ = alpha_sigma(diffusion, i - 1)
    return alpha_next * xs_next, history


def euler_advance(diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int, history: tuple, *,
                  clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    return _advance(False, diffusion, evaluate, x, i, history, clip_denoised=clip_denoised)


def heun_advance(diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int, history: tuple, *,
                 clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    return _advance(True, diffusion, evaluate, x, i, history, clip_denoised=clip_denoised)


def heun_evaluations(steps: int) -> int:
    return max(0, 2 * steps - 1)


EULER = StepRule("euler", None, stochastic=lambda eta: False, advance=euler_advance, ode=True)  # noqa: ARG005
HEUN = StepRule("heun", None, stochastic=lambda eta: False, advance=heun_advance,  # noqa: ARG005
                evaluations=heun_evaluations, ode=True)

__all__ = ["EULER", "HEUN", "euler_advance", "heun_advance", "heun_evaluations", "karras_sigma"]
