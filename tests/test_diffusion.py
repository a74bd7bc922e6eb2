"""Gaussian diffusion maths: closed-form identities, respacing, losses, samplers, and diffusers as an oracle.

Oracle comparisons overwrite the schedulers' float32 ``alphas_cumprod`` with our float64 values, so they test
the formulas tightly; one test checks separately that the schedules themselves agree to float32 precision.
"""

import math
import pickle

import numpy as np
import pytest
import torch

from fpdm.diffusion.gaussian import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from fpdm.diffusion.samplers.ddim import ddim_step
from fpdm.diffusion.samplers.ddpm import ddpm_step
from fpdm.diffusion.schedules import beta_schedule, space_timesteps

SHAPE = (3, 2, 4, 4)  # B, C, H, W
C = SHAPE[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randn(seed: int, shape=SHAPE, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _data(seed: int = 0) -> torch.Tensor:
    """x_0 on the 256-level grid of [-1, 1], including both edge levels."""
    levels = torch.randint(0, 256, SHAPE, generator=torch.Generator().manual_seed(seed))
    levels.view(-1)[0], levels.view(-1)[1] = 0, 255
    return levels.double() / 127.5 - 1.0


def _cat(pred: torch.Tensor, var_seed: int = 99) -> torch.Tensor:
    """Model output with learned-sigma channels drawn in [-1, 1]."""
    return torch.cat([pred, torch.rand(pred.shape, generator=torch.Generator().manual_seed(var_seed),
                                       dtype=pred.dtype) * 2 - 1], dim=1)


def _ddpm_scheduler(diffusion: GaussianDiffusion, **kwargs):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                    beta_end=0.02, clip_sample=False, **kwargs)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), diffusion.alphas_cumprod,
                               rtol=2e-5, atol=1e-7)  # their cumprod is float32
    sched.alphas_cumprod = torch.from_numpy(diffusion.alphas_cumprod.copy())
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    return sched


# ---------------------------------------------------------------------------------------------- constants


def test_constants_closed_form():
    d = GaussianDiffusion.make("linear", 1000)
    b, abar_prev = d.betas, d.alphas_cumprod_prev
    assert d.num_timesteps == 1000 and list(d.timesteps) == list(range(1000))
    assert abar_prev[0] == 1.0 and d.posterior_variance[0] == 0.0
    assert d.posterior_log_variance_clipped[0] == math.log(d.posterior_variance[1])
    np.testing.assert_allclose(d.posterior_log_variance_clipped[1:], np.log(d.posterior_variance[1:]))
    # Bayes: posterior precision = alpha_t / beta_t + 1 / (1 - abar_{t-1}); mean weights follow from it
    ts = np.arange(1, 1000)
    var = 1.0 / ((1 - b[ts]) / b[ts] + 1.0 / (1 - abar_prev[ts]))
    np.testing.assert_allclose(d.posterior_variance[ts], var, rtol=1e-10)
    np.testing.assert_allclose(d.posterior_mean_coef2[ts], var * np.sqrt(1 - b[ts]) / b[ts], rtol=1e-10)
    np.testing.assert_allclose(d.posterior_mean_coef1[ts], var * np.sqrt(abar_prev[ts]) / (1 - abar_prev[ts]),
                               rtol=1e-10)
    np.testing.assert_allclose(d.large_variance, np.append(d.posterior_variance[1], b[1:]))


def test_constructor_validation():
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(beta_schedule("linear", 50), prediction="x0")
    with pytest.raises(ValueError, match="fixed_variance"):
        GaussianDiffusion(beta_schedule("linear", 50), fixed_variance="medium")
    with pytest.raises(ValueError):
        GaussianDiffusion(np.array([0.1, 0.0]))
    with pytest.raises(ValueError):
        GaussianDiffusion(np.array([1.0, 0.5]))
    with pytest.raises(ValueError):
        GaussianDiffusion(np.array([0.1, 0.2]), timesteps=[3, 1])


def test_pickle_and_dtype_device_handling():
    d = GaussianDiffusion.make("linear", 100, learn_sigma=False)
    x = _randn(0, dtype=torch.float32)
    out = d.p_mean_variance(_randn(1, dtype=torch.float32), x, 7)
    assert all(v.dtype == torch.float32 and v.shape == x.shape for v in out.values())
    d2 = pickle.loads(pickle.dumps(d))
    out2 = d2.p_mean_variance(_randn(1, dtype=torch.float32), x, torch.tensor(7))
    torch.testing.assert_close(out2["mean"], out["mean"], rtol=0, atol=0)
    with pytest.raises(IndexError):
        d.q_sample(x, 100, x)
    with pytest.raises(IndexError):
        d.q_sample(x, torch.tensor([0, -1, 2]), x)
    with pytest.raises(TypeError):
        d.q_sample(x, torch.tensor([0.0, 1.0, 2.0]), x)
    with pytest.raises(ValueError, match="channels"):
        d.p_mean_variance(torch.cat([x, x], 1), x, 3)


# ---------------------------------------------------------------------------------------------- oracles


def test_q_sample_matches_diffusers_add_noise():
    d = GaussianDiffusion.make("linear", 1000)
    sched = _ddpm_scheduler(d)
    x0, noise = _data(), _randn(1)
    t = torch.tensor([0, 417, 999])
    ref = sched.add_noise(x0, noise, t)
    torch.testing.assert_close(d.q_sample(x0, t, noise), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction,theirs", [("eps", "epsilon"), ("v", "v_prediction")])
def test_ddpm_step_learned_range_matches_diffusers(prediction, theirs):
    # diffusers' learned_range uses min_log = log(max(posterior_variance, 1e-20)), which differs from ADM's
    # clipped log at t = 0 only; no noise is added at t = 0, so the steps agree everywhere.
    d = GaussianDiffusion.make("linear", 1000, prediction=prediction, learn_sigma=True)
    sched = _ddpm_scheduler(d, variance_type="learned_range", prediction_type=theirs)
    for t in (999, 500, 37, 1, 0):
        x, out = _randn(t), _cat(_randn(t + 1), var_seed=t + 2)
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(t + 3))
        x_prev, x0 = ddpm_step(d, out, x, t, _randn(t + 3))
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ours,theirs", [("small", "fixed_small"), ("large", "fixed_large")])
def test_ddpm_step_fixed_variance_matches_diffusers(ours, theirs):
    # fixed_large differs at t = 0 only (ADM uses the t=1 posterior variance there, diffusers beta_0),
    # where no noise is added.
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=False, fixed_variance=ours)
    sched = _ddpm_scheduler(d, variance_type=theirs)
    for t in (999, 250, 1, 0):
        x, eps = _randn(t), _randn(t + 1)
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(t + 3))
        x_prev, x0 = ddpm_step(d, eps, x, t, _randn(t + 3))
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


def test_cosine_ddpm_step_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    d = GaussianDiffusion.make("cosine", 1000, learn_sigma=True)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    clip_sample=False, variance_type="learned_range")
    np.testing.assert_allclose(sched.betas.double().numpy(), d.betas, rtol=1e-6, atol=1e-8)
    sched.alphas_cumprod = torch.from_numpy(d.alphas_cumprod.copy())
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    for t in (998, 400, 3):
        x, out = _randn(t), _cat(_randn(t + 1))
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(t + 3))
        x_prev, _ = ddpm_step(d, out, x, t, _randn(t + 3))
        torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


def test_respaced_ddpm_step_matches_diffusers_custom_timesteps():
    # diffusers decides "add noise" by the original t > 0 and we by the respaced i > 0; both agree because the
    # kept timesteps include 0.
    base = GaussianDiffusion.make("linear", 1000, learn_sigma=True)
    kept = space_timesteps(1000, 10)
    d = base.respace(kept)
    sched = _ddpm_scheduler(base, variance_type="learned_range")
    sched.set_timesteps(timesteps=kept[::-1])
    for i, t in enumerate(kept):
        x, out = _randn(i), _cat(_randn(i + 50), var_seed=i)
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(i + 7))
        x_prev, x0 = ddpm_step(d, out, x, i, _randn(i + 7))
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prediction,theirs", [("eps", "epsilon"), ("v", "v_prediction")])
def test_ddim_step_matches_diffusers(prediction, theirs):
    # diffusers' "leading" spacing with steps_offset=0 is ADM's ddimN spacing (its "linspace" is not).
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                    beta_end=0.02, clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                                    timestep_spacing="leading", prediction_type=theirs)
    sched.set_timesteps(10)
    kept = space_timesteps(1000, "ddim10")
    assert sched.timesteps.tolist() == kept[::-1]
    base = GaussianDiffusion.make("linear", 1000, prediction=prediction, learn_sigma=True)
    d = base.respace(kept)
    sched.alphas_cumprod = torch.from_numpy(base.alphas_cumprod.copy())
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    for eta in (0.0, 0.7):
        for i, t in enumerate(kept):
            x, pred, noise = _randn(i), _randn(i + 20), _randn(i + 40)
            ref = sched.step(pred, t, x, eta=eta, variance_noise=noise if eta > 0 else None)
            x_prev, x0 = ddim_step(d, _cat(pred), x, i, eta=eta, noise=noise)
            torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------- respacing


def test_respace_identity_and_kept_marginals():
    base = GaussianDiffusion.make("linear", 1000)
    same = base.respace(range(1000))
    np.testing.assert_allclose(same.betas, base.betas, rtol=1e-9)
    np.testing.assert_allclose(same.posterior_variance, base.posterior_variance, rtol=1e-8)
    kept = space_timesteps(1000, 25)
    d = base.respace(kept)
    assert d.num_timesteps == 25 and list(d.timesteps) == kept
    np.testing.assert_allclose(d.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12)
    assert d.model_timesteps(torch.tensor([0, 24])).tolist() == [0, 999]
    assert int(d.model_timesteps(3)) == kept[3]


def test_respace_matches_adm_spaced_diffusion():
    base = GaussianDiffusion.make("cosine", 1000)
    kept = space_timesteps(1000, "ddim20")
    # ADM's SpacedDiffusion walks all original timesteps and emits a beta at each kept one
    betas, last = [], 1.0
    for t, abar in enumerate(base.alphas_cumprod):
        if t in kept:
            betas.append(1 - abar / last)
            last = abar
    d = base.respace(kept)
    np.testing.assert_allclose(d.betas, betas, rtol=1e-12)
    abar, abar_prev = d.alphas_cumprod, np.append(1.0, base.alphas_cumprod[kept][:-1])
    np.testing.assert_allclose(d.alphas_cumprod_prev, abar_prev, rtol=1e-12)
    np.testing.assert_allclose(d.posterior_variance, d.betas * (1 - abar_prev) / (1 - abar), rtol=1e-12)
    assert d.posterior_log_variance_clipped[0] == math.log(d.posterior_variance[1])


def test_respace_twice_and_errors():
    base = GaussianDiffusion.make("linear", 1000, prediction="v", learn_sigma=False, fixed_variance="large")
    coarse = base.respace(space_timesteps(1000, 100))
    fine = base.respace(space_timesteps(1000, 10))
    twice = coarse.respace(space_timesteps(1000, 10))
    np.testing.assert_allclose(twice.betas, fine.betas, rtol=1e-12)
    assert (twice.prediction, twice.learn_sigma, twice.fixed_variance) == ("v", False, "large")
    for bad in ([], [5, 3], [3, 3], [1000], [-1]):
        with pytest.raises(ValueError):
            base.respace(bad)
    with pytest.raises(ValueError, match="subset"):
        coarse.respace([0, 1])
    # a one-step chain has no t=1 to clip the log posterior variance with; it falls back to beta_0
    one = base.respace([999])
    assert one.num_timesteps == 1 and one.betas[0] == pytest.approx(1 - base.alphas_cumprod[999])
    assert np.isfinite(one.posterior_log_variance_clipped).all() and np.isfinite(one.large_log_variance).all()


# ------------------------------------------------------------------------------------------ p(x_{t-1}|x_t)


def test_learned_range_endpoints_and_posterior_mean():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=True)
    x0, eps = _data(), _randn(1)
    t = torch.tensor([0, 10, 999])
    x_t = d.q_sample(x0, t, eps)
    for v, expected in ((1.0, d.log_betas), (-1.0, d.posterior_log_variance_clipped),
                        (0.0, 0.5 * (d.log_betas + d.posterior_log_variance_clipped))):
        out = d.p_mean_variance(torch.cat([eps, torch.full_like(eps, v)], 1), x_t, t)
        ref = torch.from_numpy(expected[t.numpy()]).view(-1, 1, 1, 1).expand_as(x_t)
        torch.testing.assert_close(out["log_variance"], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["variance"], ref.exp(), rtol=1e-12, atol=1e-15)
    # a perfect eps prediction gives the true posterior mean and x_0 back
    true_mean, _, _ = d.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(out["mean"], true_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-9, atol=1e-9)


def test_v_prediction_recovers_x0_and_eps_exactly():
    d = GaussianDiffusion.make("cosine", 1000, prediction="v", learn_sigma=False)
    x0, eps = _data(), _randn(1)
    t = torch.tensor([0, 500, 999])
    x_t = d.q_sample(x0, t, eps)
    v = d.v_target(x0, t, eps)
    out = d.p_mean_variance(v, x_t, t)
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(out["pred_eps"], eps, rtol=0, atol=1e-12)
    assert float(d.training_losses(v, x0, x_t, t, eps)["mse"].abs().max()) < 1e-28


def test_clip_denoised_keeps_eps_consistent():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=False)
    x_t, eps = 3 * _randn(0), _randn(1)
    t = torch.tensor([5, 200, 999])
    out = d.p_mean_variance(eps, x_t, t, clip_denoised=True)
    assert float(out["pred_xstart"].abs().max()) <= 1.0
    assert not torch.allclose(out["pred_eps"], eps)
    rebuilt = d.q_sample(out["pred_xstart"], t, out["pred_eps"])
    torch.testing.assert_close(rebuilt, x_t, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------- losses


def _bin_mass(lower: float, upper: float) -> float:
    """P(lower < Z < upper) for a standard normal, accurate in both tails (erfc, no 1 - cdf cancellation)."""
    if upper == math.inf:
        return 0.5 * math.erfc(lower / math.sqrt(2))
    return 0.5 * (math.erfc(-upper / math.sqrt(2)) - math.erfc(-lower / math.sqrt(2)))


def test_discretized_likelihood_closed_form_and_normalised():
    mean, log_scale = 0.3, math.log(0.2)
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean),
                                               torch.full_like(levels, log_scale))
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    s, h = 0.2, 1 / 255
    for k in (0, 100, 255):
        x = float(levels[k])
        upper = math.inf if k == 255 else (x + h - mean) / s
        lower = -math.inf if k == 0 else (x - h - mean) / s
        assert float(logp[k]) == pytest.approx(math.log(_bin_mass(lower, upper)), rel=1e-9)


def test_normal_kl_closed_form():
    values = (0.5, -0.25, math.log(0.3), math.log(2.0))
    m1, m2, lv1, lv2 = (torch.tensor(v, dtype=torch.float64) for v in values)
    expected = math.log(math.sqrt(2.0) / math.sqrt(0.3)) + (0.3 + 0.75**2) / (2 * 2.0) - 0.5
    assert float(normal_kl(m1, lv1, m2, lv2)) == pytest.approx(expected, rel=1e-12)
    assert float(normal_kl(m1, lv1, m1, lv1)) == 0.0


def test_training_losses_perfect_eps_and_closed_form_vb():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=True)
    x0, eps = _data(), _randn(1)
    t = torch.tensor([0, 1, 640])
    x_t = d.q_sample(x0, t, eps)
    # var_values = -1 gives exactly the true posterior variance for t >= 1: the KL is 0 there
    terms = d.training_losses(torch.cat([eps, -torch.ones_like(eps)], 1), x0, x_t, t, eps)
    assert float(terms["mse"].abs().max()) == 0.0
    assert abs(float(terms["vb"][1])) < 1e-10 and abs(float(terms["vb"][2])) < 1e-10
    torch.testing.assert_close(terms["loss"], terms["vb"], rtol=0, atol=0)
    # var_values = +1 gives beta_t: KL of two Gaussians with the same mean, 0.5 (r - 1 - log r) / log 2
    terms = d.training_losses(torch.cat([eps, torch.ones_like(eps)], 1), x0, x_t, t, eps)
    for k in (1, 2):
        tk = int(t[k])
        r = d.posterior_variance[tk] / d.betas[tk]
        assert float(terms["vb"][k]) == pytest.approx(0.5 * (r - 1 - math.log(r)) / math.log(2), rel=1e-8)
    # t == 0 is the decoder NLL: -mean log P(x0 bin) / log 2 under N(mean, beta_0) with the exact mean x0
    sigma = math.sqrt(d.betas[0])
    mean = d.p_mean_variance(torch.cat([eps, torch.ones_like(eps)], 1), x_t, t)["mean"][0].flatten()
    logps = []
    for x, m in zip(x0[0].flatten().tolist(), mean.tolist(), strict=True):
        upper = math.inf if x > 0.999 else (x + 1 / 255 - m) / sigma
        lower = -math.inf if x < -0.999 else (x - 1 / 255 - m) / sigma
        logps.append(math.log(max(_bin_mass(lower, upper), 1e-12)))
    assert float(terms["vb"][0]) == pytest.approx(-np.mean(logps) / math.log(2), rel=1e-7)


def test_training_losses_vb_positive_and_gradient_split():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=True)
    x0, eps = _data(3), _randn(4)
    t = torch.tensor([0, 3, 901])
    x_t = d.q_sample(x0, t, eps)
    out = (0.5 * _cat(_randn(5))).requires_grad_(True)
    terms = d.training_losses(out, x0, x_t, t, eps)
    assert set(terms) == {"loss", "mse", "vb"} and all(v.shape == (3,) for v in terms.values())
    assert bool((terms["vb"] > 0).all())
    terms["loss"].sum().backward()
    n = eps[0].numel()
    torch.testing.assert_close(out.grad[:, :C], 2 * (out[:, :C].detach() - eps) / n, rtol=1e-12, atol=1e-15)
    assert bool(out.grad[:, C:].abs().gt(0).all()) and bool(torch.isfinite(out.grad).all())
    # the vb alone sends nothing into the mean channels
    out.grad = None
    d.training_losses(out, x0, x_t, t, eps)["vb"].sum().backward()
    assert float(out.grad[:, :C].abs().max()) == 0.0


def test_training_losses_vb_scaled_by_num_timesteps():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=True).respace(space_timesteps(1000, 10))
    x0, eps = _data(), _randn(1)
    t = torch.tensor([0, 4, 9])
    x_t = d.q_sample(x0, t, eps)
    out = _cat(_randn(2))
    terms = d.training_losses(out, x0, x_t, t, eps)
    torch.testing.assert_close(terms["vb"], 0.01 * d.vb_terms_bpd(out, x0, x_t, t)["output"])
    fixed = GaussianDiffusion.make("linear", 1000, learn_sigma=False)
    assert set(fixed.training_losses(eps, x0, x_t, t, eps)) == {"loss", "mse"}


# ---------------------------------------------------------------------------------------------- samplers


def test_ddpm_step_noise_rules():
    d = GaussianDiffusion.make("linear", 1000, learn_sigma=True)
    x, out, noise = _randn(0), _cat(_randn(1)), _randn(2)
    i = torch.tensor([0, 3, 999])
    x_prev, _ = ddpm_step(d, out, x, i, noise)
    pm = d.p_mean_variance(out, x, i)
    torch.testing.assert_close(x_prev[0], pm["mean"][0], rtol=0, atol=0)
    torch.testing.assert_close(x_prev[1:], (pm["mean"] + torch.exp(0.5 * pm["log_variance"]) * noise)[1:])
    mean_only, _ = ddpm_step(d, out, x, 0, None)
    torch.testing.assert_close(mean_only, d.p_mean_variance(out, x, 0)["mean"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise"):
        ddpm_step(d, out, x, i, None)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(d, out, x, i, eta=0.5)


def test_ddim_identities():
    base = GaussianDiffusion.make("linear", 1000, learn_sigma=False)
    d = base.respace(space_timesteps(1000, 20))
    x0, eps = _data(), _randn(1)
    i = torch.tensor([0, 7, 19])
    x_t = d.q_sample(x0, i, eps)
    # deterministic DDIM with the exact eps lands on the previous kept marginal with the same (x0, eps)
    x_prev, _ = ddim_step(d, eps, x_t, i)
    expected = d.q_sample(x0, (i - 1).clamp(min=0), eps)
    expected[0] = x0[0]
    torch.testing.assert_close(x_prev, expected, rtol=1e-9, atol=1e-9)
    # eta = 1 is ancestral sampling with the fixed-small (posterior) variance
    x, pred, noise = _randn(5), _randn(6), _randn(7)
    for k in (1, 10, 19):
        a, _ = ddim_step(d, pred, x, k, eta=1.0, noise=noise)
        b, _ = ddpm_step(d, pred, x, k, noise)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_zero_terminal_snr_sampling_is_finite_with_v_prediction():
    with pytest.warns(UserWarning, match="zero terminal SNR"):
        GaussianDiffusion.make("linear", 1000, zero_terminal_snr=True, prediction="eps")
    base = GaussianDiffusion.make("linear", 1000, zero_terminal_snr=True, prediction="v", learn_sigma=True)
    assert base.alphas_cumprod[-1] == 0.0
    for d in (base, base.respace(space_timesteps(1000, 8))):
        last = d.num_timesteps - 1
        x = _randn(0)
        v = _randn(1)
        out = _cat(v)
        pm = d.p_mean_variance(out, x, last)
        assert all(bool(torch.isfinite(val).all()) for val in pm.values())
        torch.testing.assert_close(pm["pred_xstart"], -v, rtol=0, atol=0)  # x0 = -v when abar = 0
        assert bool(torch.isfinite(ddpm_step(d, out, x, last, _randn(2))[0]).all())
        for eta in (0.0, 1.0):
            assert bool(torch.isfinite(ddim_step(d, out, x, last, eta=eta, noise=_randn(2))[0]).all())
        assert bool(torch.isfinite(ddim_step(d, out, x, last, clip_denoised=True)[0]).all())
        # a full chain with a toy v-model stays finite
        x_ddpm = x_ddim = x
        for i in reversed(range(d.num_timesteps)):
            x_ddpm, _ = ddpm_step(d, _cat(0.5 * x_ddpm), x_ddpm, i, _randn(100 + i))
            x_ddim, _ = ddim_step(d, _cat(0.5 * x_ddim), x_ddim, i)
        assert bool(torch.isfinite(x_ddpm).all()) and bool(torch.isfinite(x_ddim).all())
    # the training loss at the terminal step is finite too
    x0, eps = _data(), _randn(3)
    t = torch.full((SHAPE[0],), 999)
    x_t = base.q_sample(x0, t, eps)
    terms = base.training_losses(_cat(_randn(4)), x0, x_t, t, eps)
    assert all(bool(torch.isfinite(val).all()) for val in terms.values())
