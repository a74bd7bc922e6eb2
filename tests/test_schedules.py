"""Closed-form checks of the beta schedules, zero-terminal-SNR rescaling and timestep spacing."""

import math

import numpy as np
import pytest

from fpdm.diffusion.schedules import beta_schedule, rescale_zero_terminal_snr, space_timesteps


def _cosine_abar(t: np.ndarray, T: int) -> np.ndarray:
    return np.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2


def test_linear_schedule_endpoints_and_scaling():
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.all(np.diff(betas) > 0)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    # a 250-step chain is scaled by 1000/250 = 4
    short = beta_schedule("linear", 250)
    assert short[0] == pytest.approx(4e-4) and short[-1] == pytest.approx(0.08)


def test_cosine_schedule_closed_form():
    T = 1000
    betas = beta_schedule("cosine", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert np.all(np.diff(betas) >= 0) and np.all(betas > 0)
    assert betas[-1] == 0.999  # the cap is hit at the end
    assert betas[0] == pytest.approx(1 - _cosine_abar(1.0, T) / _cosine_abar(0.0, T), rel=1e-12)
    # below the cap, cumprod(1 - beta) telescopes to abar(t + 1) / abar(0)
    abar = np.cumprod(1 - betas)
    ts = np.arange(1, 900)
    np.testing.assert_allclose(abar[ts - 1], _cosine_abar(ts, T) / _cosine_abar(0, T), rtol=1e-10)


def test_unknown_schedule_names_value_and_choices():
    with pytest.raises(ValueError, match=r"'quadratic'.*linear.*cosine"):
        beta_schedule("quadratic")
    with pytest.raises(ValueError):
        beta_schedule("linear", 0)
    with pytest.raises(ValueError, match="> 20"):
        beta_schedule("linear", 20)  # the scaled last beta would be 1
    assert beta_schedule("linear", 21)[-1] < 1 and beta_schedule("cosine", 5).max() <= 0.999


def test_zero_terminal_snr_closed_form():
    betas = beta_schedule("linear", 1000)
    new = rescale_zero_terminal_snr(betas)
    abar_old, abar_new = np.cumprod(1 - betas), np.cumprod(1 - new)
    assert new[-1] == 1.0 and abar_new[-1] == 0.0
    assert abar_new[0] == pytest.approx(abar_old[0], rel=1e-14)
    assert np.all(np.diff(abar_new) < 0) and np.all(new > 0) and np.all(new <= 1)
    # sqrt(abar) is an affine map of the old one: (s - s_T) * s_0 / (s_0 - s_T)
    s = np.sqrt(abar_old)
    expected = (s - s[-1]) * s[0] / (s[0] - s[-1])
    np.testing.assert_allclose(np.sqrt(abar_new), expected, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError):
        rescale_zero_terminal_snr(np.array([0.1]))


def test_zero_terminal_snr_matches_diffusers():
    torch = pytest.importorskip("torch")
    sched = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")
    betas = beta_schedule("cosine", 1000)
    theirs = sched.rescale_zero_terminal_snr(torch.tensor(betas)).numpy()
    np.testing.assert_allclose(rescale_zero_terminal_snr(betas), theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedules_match_diffusers(name, theirs):
    diffusers = pytest.importorskip("diffusers")
    # diffusers' linear schedule is unscaled; with T = 1000 the ADM scale factor is 1
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs, beta_start=1e-4,
                                  beta_end=0.02).betas.double().numpy()
    np.testing.assert_allclose(beta_schedule(name, 1000), ref, rtol=1e-6, atol=1e-8)  # theirs is float32


def test_space_timesteps_even():
    assert space_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(1000, "10") == space_timesteps(1000, 10)
    assert space_timesteps(1000, 4) == [0, 333, 666, 999]
    # stride 9/4 = 2.25: positions 0, 2.25, 4.5, 6.75, 9; round(4.5) == 4 (Python rounds half to even)
    assert space_timesteps(10, 5) == [0, 2, 4, 7, 9]
    assert space_timesteps(10, 1) == [0]
    assert space_timesteps(10, 10) == list(range(10))
    steps = space_timesteps(1000, 250)  # DiT's default sampling chain
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999 and steps == sorted(set(steps))
    assert set(np.diff(steps)) == {4, 5}


def test_space_timesteps_sections():
    # T=10, two sections of 5: [0..4] take 2 -> 0, 4; [5..9] take 3 -> 5, 7, 9
    assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]
    # T=11: the first section gets the extra step: [0..5] -> 0, 5; [6..10] -> 6, 8, 10
    assert space_timesteps(11, "2,3") == [0, 5, 6, 8, 10]
    steps = space_timesteps(300, "10,15,20")
    assert len(steps) == 45
    assert steps[:10] == list(range(0, 100, 11))
    assert steps[10] == 100 and steps[24] == 199 and steps[25] == 200 and steps[-1] == 299


def test_space_timesteps_ddim():
    assert space_timesteps(1000, "ddim4") == [0, 250, 500, 750]
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    # ADM takes the smallest stride with exactly N steps: stride 333 would give 4 steps, so 334
    assert space_timesteps(1000, "ddim3") == [0, 334, 668]
    assert space_timesteps(10, "ddim10") == list(range(10))


@pytest.mark.parametrize("spec", [0, 11, "0", "ddim0", "ddim11", "ddim7", "ddimx", "abc", "6,1", "1,0", ""])
def test_space_timesteps_errors(spec):
    with pytest.raises(ValueError):
        space_timesteps(10, spec)


def test_space_timesteps_type_errors():
    with pytest.raises(TypeError):
        space_timesteps(10, 2.5)
    with pytest.raises(ValueError):
        space_timesteps(0, 1)
