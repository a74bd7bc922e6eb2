"""The ODE samplers (DPM-Solver++(2M), Euler, Heun): parity with diffusers' schedulers in float64 on a
deterministic toy model, and their order of convergence on Gaussian data, where the exact denoiser and the
exact probability-flow solution are closed forms."""

import math

import numpy as np
import pytest
import torch

from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers import SAMPLERS
from fpdm.diffusion.samplers.base import alpha_sigma
from fpdm.diffusion.schedules import space_timesteps

F64 = torch.float64  # every tensor here: parity to 1e-8


def _toy(x: torch.Tensor, t: int, learn_sigma: bool = False) -> torch.Tensor:
    """A smooth deterministic 'model' of x and the timestep; learned-σ channels are noise to ignore."""
    out = 0.9 * torch.tanh(0.7 * x + 0.001 * t) + 0.05 * x.flip(-1)
    return torch.cat([out, torch.sin(3.0 * x)], dim=1) if learn_sigma else out


def _ours(name, spaced, x, clip, learn_sigma=False, stop_at=-1):
    """Run a sampler rule over the chain; `stop_at` = i: return the state at chain index i (before its
    step), else x_0."""
    rule, history = SAMPLERS[name], ()
    evals = []

    def evaluate(x_cur, i):
        evals.append(i)
        return _toy(x_cur, int(spaced.timesteps[i]), learn_sigma)

    for i in range(spaced.num_timesteps - 1, stop_at, -1):
        x, history = rule.advance(spaced, evaluate, x, i, history, clip_denoised=clip)
    return x, evals


def _diffusers_dpmpp(diffusion, kept, x, prediction, clip):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", prediction_type="epsilon" if prediction == "eps" else "v_prediction",
        thresholding=clip, sample_max_value=1.0)
    sched.set_timesteps(timesteps=[int(t) for t in kept[::-1]])
    abar = diffusion.alphas_cumprod[kept[::-1]]  # float64: diffusers keeps its sigmas in float32
    sched.sigmas = torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0))
    # its step casts the sample to float32 ("to avoid precision issues", from half precision): in float64
    # that cast is a loss, so the oracle runs with torch.float32 meaning float64 (only inside its steps)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "float32", torch.float64)
        for t in sched.timesteps:
            x = sched.step(_toy(x, int(t)), t, x).prev_sample
    return x


def _diffusers_unipc(diffusion, kept, x, prediction, clip, order):
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
        solver_order=order, solver_type="bh2", predict_x0=True, lower_order_final=True,
        final_sigmas_type="zero",
        prediction_type="epsilon" if prediction == "eps" else "v_prediction", thresholding=clip,
        sample_max_value=1.0)
    sched.set_timesteps(len(kept))  # it takes no custom timesteps: ours and float64 σ are set after
    abar = diffusion.alphas_cumprod[kept[::-1]]
    sched.timesteps = torch.from_numpy(kept[::-1].copy())
    sched.sigmas = torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0))
    for t in sched.timesteps:
        x = sched.step(_toy(x, int(t)), t, x).prev_sample
    return x


@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_dpmpp_2m_matches_diffusers(steps, prediction, clip):
    pytest.importorskip("diffusers")
    diffusion = GaussianDiffusion.make(prediction=prediction, learn_sigma=False)
    kept = np.array(sorted(space_timesteps(1000, steps)))
    spaced = diffusion.respace(kept)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    ours, _ = _ours("dpm++2m", spaced, x, clip)
    theirs = _diffusers_dpmpp(diffusion, kept, x, prediction, clip)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("order", [2, 3])
def test_unipc_matches_diffusers(steps, prediction, clip, order):
    pytest.importorskip("diffusers")
    diffusion = GaussianDiffusion.make(prediction=prediction, learn_sigma=False)
    kept = np.array(sorted(space_timesteps(1000, steps)))
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    ours, evals = _ours("unipc" if order == 2 else "unipc3", diffusion.respace(kept), x, clip)
    theirs = _diffusers_unipc(diffusion, kept, x, prediction, clip, order)
    assert len(evals) == steps  # the corrector reuses the next step's evaluation
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_learned_sigma_channels_are_ignored_by_the_ode_samplers():
    diffusion = GaussianDiffusion.make(learn_sigma=True)
    plain = GaussianDiffusion.make(learn_sigma=False)
    kept = sorted(space_timesteps(1000, 6))
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    for name in ("dpm++2m", "heun", "euler", "unipc", "unipc3"):
        a, _ = _ours(name, diffusion.respace(kept), x, False, learn_sigma=True)
        b, _ = _ours(name, plain.respace(kept), x, False)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_euler_is_deterministic_ddim():
    diffusion = GaussianDiffusion.make(learn_sigma=False)
    spaced = diffusion.respace(sorted(space_timesteps(1000, 8)))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    euler, _ = _ours("euler", spaced, x, True)
    ddim = x
    for i in range(7, -1, -1):
        ddim = SAMPLERS["ddim"].step(spaced, _toy(ddim, int(spaced.timesteps[i])), ddim, i, None,
                                     clip_denoised=True)
    torch.testing.assert_close(euler, ddim, rtol=0, atol=1e-12)


def test_heun_evaluates_twice_per_step_and_once_on_the_last():
    diffusion = GaussianDiffusion.make(learn_sigma=False)
    spaced = diffusion.respace(sorted(space_timesteps(1000, 4)))
    _, evals = _ours("heun", spaced, torch.zeros(1, 1, 2, 2, dtype=F64), False)
    assert evals == [3, 2, 2, 1, 1, 0, 0] and SAMPLERS["heun"].evaluations(4) == 7  # corrector: next index
    assert SAMPLERS["heun"].steps_for(7) == 4 and SAMPLERS["heun"].steps_for(8) is None


# ------------------------------------------------------------------------------- Gaussian data, closed form
MU, S = 0.3, 0.5  # data x0 ~ N(MU, S^2) in every dimension


def _gauss_eps(diffusion):
    """The exact ε-prediction for Gaussian data: ε̂ = (x − α E[x0 | x]) / σ."""
    def evaluate(x, i):
        alpha, sigma = alpha_sigma(diffusion, i)
        mean_x0 = MU + alpha * S**2 * (x - alpha * MU) / (alpha**2 * S**2 + sigma**2)
        return (x - alpha * mean_x0) / sigma
    return evaluate


def _exact_at(diffusion, x_start, i_start, i):
    """The probability-flow ODE keeps (x − α μ) / √(α² s² + σ²) constant: the exact state at index i."""
    a0, s0 = alpha_sigma(diffusion, i_start)
    a, s = alpha_sigma(diffusion, i)
    z = (x_start - a0 * MU) / math.sqrt(a0**2 * S**2 + s0**2)
    return a * MU + math.sqrt(a**2 * S**2 + s**2) * z


def _final_error(name, n):
    """Max error at t = 0 (the last ODE point before the final denoising step) over a chain of n kept
    timesteps evenly spaced from 999 to 0 (a grid of n and one of 2n − 1 nest: half the step size)."""
    diffusion = GaussianDiffusion.make(learn_sigma=False)
    spaced = diffusion.respace(sorted(space_timesteps(1000, n)))
    x = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    rule, history = SAMPLERS[name], ()
    evaluate = _gauss_eps(spaced)
    state = x
    for i in range(n - 1, 0, -1):
        state, history = rule.advance(spaced, evaluate, state, i, history)
    return float((state - _exact_at(spaced, x, n - 1, 0)).abs().max())


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpm++2m", 2), ("unipc", 2)])
def test_order_of_convergence_on_gaussian_data(name, order):
    # 41 and 81 kept timesteps: in the asymptotic regime (uniform-t spacing gives very uneven steps in
    # log-SNR near t = 0, where a 2nd-order multistep solver needs many steps before its order shows)
    coarse, fine = _final_error(name, 41), _final_error(name, 81)
    measured = math.log2(coarse / fine)
    assert abs(measured - order) <= 0.3, (name, coarse, fine, measured)


def test_dpmpp_starts_a_zero_terminal_snr_chain_as_ddim_does():
    diffusion = GaussianDiffusion.make(learn_sigma=False, zero_terminal_snr=True, prediction="v")
    spaced = diffusion.respace(sorted(space_timesteps(1000, 6)))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    i = spaced.num_timesteps - 1
    assert spaced.alphas_cumprod[i] == 0  # σ = 1, α = 0, λ = −∞
    out = _toy(x, int(spaced.timesteps[i]))
    ours, _ = SAMPLERS["dpm++2m"].advance(spaced, lambda x_, i_: out, x, i, ())
    ddim = SAMPLERS["ddim"].step(spaced, out, x, i, None)
    torch.testing.assert_close(ours, ddim, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ spacings
@pytest.mark.parametrize("spacing", ["uniform", "trailing", "logsnr", "karras"])
@pytest.mark.parametrize("n", [1, 5, 25, 100, 1000])
def test_spacings_visit_distinct_integer_timesteps(spacing, n):
    from fpdm.diffusion.schedules import spaced_timesteps

    kept = spaced_timesteps(GaussianDiffusion.make().alphas_cumprod, n, spacing)
    assert len(kept) == n and kept == sorted(set(kept)) and 0 <= kept[0] and kept[-1] <= 999
    if spacing != "trailing" and n > 1:
        assert kept[-1] == 999 and kept[0] == 0  # from the noisiest step down to t = 0


def test_trailing_spacing_is_diffusers():
    pytest.importorskip("diffusers")
    from diffusers import DDIMScheduler

    from fpdm.diffusion.schedules import spaced_timesteps

    for n in (5, 10, 25, 50):
        sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
        sched.set_timesteps(n)
        ours = spaced_timesteps(GaussianDiffusion.make().alphas_cumprod, n, "trailing")
        assert ours == sorted(int(t) for t in sched.timesteps), n


@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
def test_log_snr_and_karras_spacings_follow_their_formulas(spacing):
    from fpdm.diffusion.schedules import KARRAS_RHO, spaced_timesteps

    abar = GaussianDiffusion.make().alphas_cumprod
    log_sigma = 0.5 * np.log((1 - abar) / abar)  # −λ, increasing in t
    n = 12
    if spacing == "logsnr":
        targets = np.linspace(log_sigma[-1], log_sigma[0], n)
    else:  # EDM: σ_i = (σ_max^(1/ρ) + i/(n−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ
        s_max, s_min = np.exp(log_sigma[-1]), np.exp(log_sigma[0])
        i, rho = np.arange(n) / (n - 1), KARRAS_RHO
        targets = np.log((s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho)
    kept = spaced_timesteps(abar, n, spacing)[::-1]  # noisiest first, as the targets
    gap = np.abs(np.diff(log_sigma)).max()
    for t, target in zip(kept, targets, strict=True):
        nearest = int(np.abs(log_sigma - target).argmin())
        assert abs(log_sigma[t] - target) <= abs(log_sigma[nearest] - target) + gap / 2, (t, nearest)


def test_spacing_refusals():
    from fpdm.diffusion.schedules import spaced_timesteps
    from fpdm.sampling.loop import chain_timesteps

    zsnr = GaussianDiffusion.make(zero_terminal_snr=True, prediction="v")
    with pytest.raises(ValueError, match="--spacing logsnr spaces by log-SNR or σ, which are infinite"):
        spaced_timesteps(zsnr.alphas_cumprod, 10, "logsnr")
    assert len(spaced_timesteps(zsnr.alphas_cumprod, 10, "trailing")) == 10
    with pytest.raises(ValueError, match="needs a plain number of steps from 1 to 1000, got 1001"):
        spaced_timesteps(zsnr.alphas_cumprod, 1001, "karras")
    with pytest.raises(ValueError, match="--steps 'ddim25' is a spacing of its own"):
        chain_timesteps(zsnr, "ddim25", "karras")
