"""What a sampler is to the sampling loop.

Every sampler advances the chain one kept timestep at a time (chain index i → i − 1, x_0 after i = 0).
Single-evaluation rules (DDPM, DDIM) give `step(diffusion, model_output, x_t, i, noise, eta=…,
clip_denoised=…) -> x_prev`; rules that evaluate the model more than once per step (Heun) or carry earlier
predictions (DPM-Solver++, UniPC) give `advance(diffusion, evaluate, x_t, i, history, clip_denoised=…) ->
(x_prev, history)` instead, where `evaluate(x, i)` is one model evaluation (the caller's: it counts blocks,
runs the fixed-point plan, applies guidance) and `history` is the solver's state, passed in and returned
(empty at the start of every batch), never kept on the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion

Evaluate = Callable[[Tensor, int], Tensor]  # (x at chain index i, i) -> the model's output there


def one_per_step(steps: int) -> int:
    return steps


@dataclass(frozen=True)
class StepRule:
    """A sampler: `step` (one evaluation per step, the caller evaluates) or `advance` (it evaluates itself);
    `stochastic(eta)`: whether it needs the caller's per-sample noise (drawn only then, so seeds stay
    aligned); `evaluations(steps)`: model evaluations a chain of that many steps costs; `takes_eta`: whether
    --eta means anything to it; `ode`: a probability-flow ODE solver (deterministic, needs a finite σ)."""

    name: str
    step: Callable[..., Tensor] | None
    stochastic: Callable[[float], bool]
    advance: Callable[..., tuple[Tensor, tuple]] | None = None
    evaluations: Callable[[int], int] = one_per_step
    takes_eta: bool = False
    ode: bool = False

    def steps_for(self, evaluations: int) -> int | None:
        """The number of steps that costs exactly `evaluations`, or None when no number does."""
        n = next((s for s in range(1, evaluations + 1) if self.evaluations(s) >= evaluations), None)
        return n if n is not None and self.evaluations(n) == evaluations else None


def nonzero_mask(i: Tensor, x: Tensor) -> Tensor:
    """1 where the chain index is above 0 (noise is added), 0 at the last step; shaped like x's batch."""
    return (i != 0).to(x.dtype).reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def check_noise(noise: Tensor | None, i: Tensor, x: Tensor, what: str) -> None:
    if noise is None:  # the check syncs, but only on this misuse-prone path
        if bool((i != 0).any()):
            raise ValueError(f"{what} needs noise for steps with index > 0")
    elif noise.shape != x.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x_t shape {tuple(x.shape)}")


def alpha_sigma(diffusion: GaussianDiffusion, i: int) -> tuple[float, float]:
    """(α, σ) = (√ᾱ, √(1 − ᾱ)) at chain index i; index −1 is the clean end (1, 0)."""
    if i < 0:
        return 1.0, 0.0
    abar = float(diffusion.alphas_cumprod[i])
    return float(np.sqrt(abar)), float(np.sqrt(1.0 - abar))


def denoised(diffusion: GaussianDiffusion, model_output: Tensor, x: Tensor, i: int,
             clip_denoised: bool) -> tuple[Tensor, Tensor]:
    """(predicted x0, predicted ε) from a model output at chain index i: ε or v prediction, the learned-σ
    channels dropped, x0 clipped to [−1, 1] with ε re-derived from it when `clip_denoised`."""
    out = diffusion.p_mean_variance(model_output, x, i, clip_denoised=clip_denoised)
    return out["pred_xstart"], out["pred_eps"]
