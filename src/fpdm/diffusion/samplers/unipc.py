"""UniPC (Zhao et al. 2023), B(h) = e^h − 1 ("bh2"), data prediction: a multistep predictor (UniP) and,
at the start of every later step, a corrector (UniC) that reuses that step's model evaluation, so it costs
one evaluation per step like DDIM.

In λ = log(α/σ), from s to t (h = λ_t − λ_s, ĥ = −h), with the current prediction D_s and earlier ones D_j at
r_j = (λ_j − λ_s)/h:
    x_t = (σ_t/σ_s) x_s − α_t (e^ĥ − 1) D_s − α_t B(ĥ) Σ_j ρ_j (D_j − D_s)/r_j,
the ρ solving the order conditions R ρ = b with R[k, j] = r_j^k and b_k = ĥ φ_{k+1}(ĥ) (k+1)! / B(ĥ)
(φ: the exponential integrator's functions); UniP of order 2 takes ρ = 1/2. The corrector redoes the last
step with the new prediction D_t as one more point (r = 1); at order 1 it takes ρ = 1/2. The order ramps up
over the first steps and down over the last (lower order at the end, as diffusers' `lower_order_final`),
the last step goes to σ = 0 with x_0 = D_s. The history (the state the last step started from, earlier
predictions with their λ, that step's order) is passed in and returned.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers.base import Evaluate, StepRule, alpha_sigma, denoised
from fpdm.diffusion.samplers.dpmpp import log_snr


def _order_terms(h: float, rks: list[float], order: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(e^ĥ − 1, B(ĥ), R, b) of a step of length h with points at `rks` (the last is 1), ĥ = −h; from a
    zero-SNR start (h = ∞) only the first two exist (−1, −1): its steps are of order 1."""
    hh = -h
    h_phi_1 = b_h = math.expm1(hh)  # ĥ φ_1(ĥ), and B(ĥ) = e^ĥ − 1 (bh2)
    if not math.isfinite(hh):
        return h_phi_1, b_h, np.zeros((0, 0)), np.zeros(0)
    h_phi_k = h_phi_1 / hh - 1.0
    rows, b, factorial = [], [], 1
    for k in range(1, order + 1):
        rows.append(np.power(rks, k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, np.array(rows), np.array(b)


def _step(x: Tensor, d_s: Tensor, lam_s: float, sigma_s: float, older: list[tuple[Tensor, float]],
          lam_t: float, alpha_t: float, sigma_t: float, order: int, d_t: Tensor | None) -> Tensor:
    """From s (state x, prediction d_s) to t: UniP when `d_t` is None, else UniC with the prediction d_t at
    t; `older`: the earlier predictions (newest first) used by this order (order − 1 of them)."""
    h = lam_t - lam_s
    used = older[:order - 1]
    rks = [(lam_j - lam_s) / h for _, lam_j in used] + [1.0]
    diffs = [(d_j - d_s) / r for (d_j, _), r in zip(used, rks, strict=False)]
    h_phi_1, b_h, rows, b = _order_terms(h, rks, order)
    x_t = (sigma_t / sigma_s) * x - (alpha_t * h_phi_1) * d_s
    if d_t is None:  # predictor: the earlier points only
        if not diffs:
            return x_t
        rhos = [0.5] if order == 2 else np.linalg.solve(rows[:-1, :-1], b[:-1]).tolist()
        res = sum(r * dd for r, dd in zip(rhos, diffs, strict=True))
        return x_t - (alpha_t * b_h) * res
    rhos = [0.5] if order == 1 else np.linalg.solve(rows, b).tolist()
    res = sum((r * dd for r, dd in zip(rhos[:-1], diffs, strict=True)), start=rhos[-1] * (d_t - d_s))
    return x_t - (alpha_t * b_h) * res


def _advance(max_order: int, diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int,
             history: tuple, *, clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    d, _ = denoised(diffusion, evaluate(x, i), x, i, clip_denoised)
    lam = log_snr(diffusion, i)
    past: tuple = ()
    if history:  # correct the step that led here with this evaluation's prediction
        x_last, past, order_c = history
        d_s, lam_s = past[-1]
        older = [(d_j, lam_j) for d_j, lam_j in reversed(past[:-1]) if math.isfinite(lam_j)]
        _, sigma_s = alpha_sigma(diffusion, i + 1)
        alpha_t, sigma_t = alpha_sigma(diffusion, i)
        x = _step(x_last, d_s, lam_s, sigma_s, older, lam, alpha_t, sigma_t, min(order_c, len(older) + 1), d)
    past = (past + ((d, lam),))[-max_order:]
    usable = [(d_j, lam_j) for d_j, lam_j in reversed(past[:-1]) if math.isfinite(lam_j)]
    order = min(max_order, i + 1, len(usable) + 1)  # ramp up from the start, down to 1 at the last step
    if not math.isfinite(lam):
        order = 1  # a zero-SNR start: no earlier point can be combined with it
    _, sigma_s = alpha_sigma(diffusion, i)
    alpha_t, sigma_t = alpha_sigma(diffusion, i - 1)
    if sigma_t == 0.0:  # to x0: the prediction itself
        x_next = alpha_t * d
    else:
        x_next = _step(x, d, lam, sigma_s, usable, log_snr(diffusion, i - 1), alpha_t, sigma_t, order, None)
    return x_next, (x, past, order)


def advance2(diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int, history: tuple, *,
             clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    return _advance(2, diffusion, evaluate, x, i, history, clip_denoised=clip_denoised)


def advance3(diffusion: GaussianDiffusion, evaluate: Evaluate, x: Tensor, i: int, history: tuple, *,
             clip_denoised: bool = False) -> tuple[Tensor, tuple]:
    return _advance(3, diffusion, evaluate, x, i, history, clip_denoised=clip_denoised)


RULE = StepRule("unipc", None, stochastic=lambda eta: False, advance=advance2, ode=True)  # noqa: ARG005
RULE3 = StepRule("unipc3", None, stochastic=lambda eta: False, advance=advance3, ode=True)  # noqa: ARG005
