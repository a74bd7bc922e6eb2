"""Gaussian diffusion maths in the ADM / DiT formulation (Ho et al. 2020; Nichol & Dhariwal 2021).

All per-timestep constants are float64 numpy arrays computed once; torch-facing methods gather the values for
a batch of timestep indices, cast them to the input's dtype and device, and broadcast them over the input.

Methods take the model's *output* rather than the model, so that callers with unusual forward signatures
(e.g. a fixed-point model that also takes an initial state or an iteration budget) run the model themselves.

Timesteps: indices into a :class:`GaussianDiffusion` are indices into *its* chain. After :meth:`respace`,
index ``i`` corresponds to original timestep ``diffusion.timesteps[i]``; the model must always be called with
the original timestep (see :meth:`GaussianDiffusion.model_timesteps`). The model is never wrapped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from fpdm.config import DiffusionConfig
from fpdm.diffusion.schedules import beta_schedule, rescale_zero_terminal_snr

PREDICTIONS = ("eps", "v")
FIXED_VARIANCES = ("small", "large")

Index = int | torch.Tensor


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability (nats) of data ``x`` in [-1, 1] quantised to 256 levels under
    N(means, exp(log_scales) ** 2), as in the DDPM/ADM decoder.

    Each level owns a bin of width 2/255 centred on it; the two outermost bins extend to -inf and +inf so the
    probabilities sum to one. The exact normal CDF is used (``torch.special.ndtr``/``log_ndtr``); ADM uses a
    tanh approximation of it, which changes the value by well under 1e-3 relative for the decoder's scales.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, "
                         f"log_scales {tuple(log_scales.shape)}")
    half_bin = 1.0 / 255.0
    centred = x - means
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (centred + half_bin)
    lower = inv_std * (centred - half_bin)
    log_cdf_upper = torch.special.log_ndtr(upper)  # used for the lowest bin (-inf, x + half_bin]
    log_sf_lower = torch.special.log_ndtr(-lower)  # used for the highest bin [x - half_bin, inf)
    log_mass = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mass))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch one."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


class GaussianDiffusion:
    """A discrete Gaussian diffusion chain with ADM's parameterisations (float64 constants).

    Args:
        betas: the chain's betas (1-D, each in (0, 1]).
        prediction: what the model's first C output channels predict, ``"eps"`` (noise) or ``"v"``
            (``v = sqrt(abar) * eps - sqrt(1 - abar) * x0``, Salimans & Ho 2022).
        learn_sigma: the model also outputs C channels in [-1, 1] that interpolate the log variance between
            ``log(beta_t)`` and the clipped log posterior variance (Nichol & Dhariwal 2021).
        fixed_variance: variance used when ``learn_sigma`` is False: ``"small"`` is the posterior variance
            (ADM ``fixed_small``, log clipped at t=0), ``"large"`` is beta_t (ADM ``fixed_large``, using the
            posterior variance of step 1 at t=0).
        timesteps: ``timesteps[i]`` is the original timestep that index ``i`` of this chain stands for
            (identity if omitted). Set by :meth:`respace`; the model must always be given original timesteps.
    """

    def __init__(self, betas: np.ndarray, *, prediction: str = "eps", learn_sigma: bool = True,
                 fixed_variance: str = "small", timesteps: Sequence[int] | None = None) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not (np.all(betas > 0) and np.all(betas <= 1)):
            raise ValueError("every beta must be in (0, 1]")
        if np.any(betas[:-1] >= 1):
            raise ValueError("only the last beta may be 1 (zero terminal SNR)")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"fixed_variance must be one of {FIXED_VARIANCES}, got {fixed_variance!r}")
        n = len(betas)
        if timesteps is None:
            timesteps = np.arange(n, dtype=np.int64)
        else:
            timesteps = np.asarray(timesteps, dtype=np.int64)
            if timesteps.shape != (n,):
                raise ValueError(f"timesteps must have one entry per beta ({n}), got shape {timesteps.shape}")
            if np.any(timesteps < 0) or np.any(np.diff(timesteps) <= 0):
                raise ValueError("timesteps must be non-negative and strictly increasing")

        self.betas = betas
        self.prediction = prediction
        self.learn_sigma = bool(learn_sigma)
        self.fixed_variance = fixed_variance
        self.timesteps = timesteps
        self.num_timesteps = n

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = np.sqrt(abar)
        self.sqrt_alphas_cumprod_prev = np.sqrt(abar_prev)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - abar)
        with np.errstate(divide="ignore"):  # abar == 0 at a zero-SNR terminal step: inf, used only by eps
            self.sqrt_recip_alphas_cumprod = 1.0 / np.sqrt(abar)
            self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / abar - 1.0)

        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)
        self.posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.posterior_mean_coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
        self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)
        # The posterior variance is 0 at t=0; its log is clipped to the value at t=1 (ADM). A one-step chain
        # has no t=1, so it falls back to beta_0 there.
        first = self.posterior_variance[1] if n > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.log_betas = np.log(betas)
        self.large_variance = np.append(first, betas[1:])
        self.large_log_variance = np.log(self.large_variance)

        if prediction == "eps" and abar[-1] == 0.0:
            warnings.warn("alpha_bar is 0 at the last step (zero terminal SNR): eps-prediction cannot "
                          "recover x_0 there and sampling will produce NaN/inf from that step; "
                          "use prediction='v'", stacklevel=2)
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def make(cls, schedule: str = "linear", num_timesteps: int = 1000, prediction: str = "eps",
             learn_sigma: bool = True, zero_terminal_snr: bool = False,
             fixed_variance: str = "small") -> GaussianDiffusion:
        """Build a full-length diffusion from a named schedule (see
        :func:`fpdm.diffusion.schedules.beta_schedule`)."""
        betas = beta_schedule(schedule, num_timesteps)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas, prediction=prediction, learn_sigma=learn_sigma, fixed_variance=fixed_variance)

    def respace(self, timesteps: Sequence[int]) -> GaussianDiffusion:
        """A shorter chain over a subset of the ORIGINAL timesteps (e.g. from ``space_timesteps``).

        Betas are ``1 - abar[t_i] / abar[t_{i-1}]`` (with ``abar[t_{-1}] = 1``), so each kept timestep keeps
        its marginal ``q(x_t | x_0)``; this is ADM's SpacedDiffusion. Indices into the returned object are
        respaced indices; the model always sees original timesteps (``result.timesteps[i]``). The model is
        not wrapped: callers map indices themselves, e.g. with :meth:`model_timesteps`.
        """
        kept = np.asarray(list(timesteps), dtype=np.int64)
        if kept.ndim != 1 or len(kept) == 0:
            raise ValueError("respace needs a non-empty 1-D sequence of original timesteps")
        if np.any(np.diff(kept) <= 0):
            raise ValueError("respace timesteps must be strictly increasing (sort them, no duplicates)")
        positions = np.searchsorted(self.timesteps, kept)
        in_range = positions < self.num_timesteps
        found = in_range & (self.timesteps[np.minimum(positions, self.num_timesteps - 1)] == kept)
        if not np.all(found):
            missing = kept[~found][:5].tolist()
            raise ValueError(f"respace timesteps must be a subset of this diffusion's timesteps; "
                             f"not present: {missing}")
        abar = self.alphas_cumprod[positions]
        new_betas = 1.0 - abar / np.append(1.0, abar[:-1])
        return GaussianDiffusion(new_betas, prediction=self.prediction, learn_sigma=self.learn_sigma,
                                 fixed_variance=self.fixed_variance, timesteps=kept)

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(num_timesteps={self.num_timesteps}, prediction={self.prediction!r}, "
                f"learn_sigma={self.learn_sigma}, fixed_variance={self.fixed_variance!r}, "
                f"timesteps=[{self.timesteps[0]}..{self.timesteps[-1]}])")

    # ------------------------------------------------------------------ helpers

    def model_timesteps(self, i: Index, device: torch.device | str | None = None) -> torch.Tensor:
        """Original timesteps (int64) to feed the model for chain indices ``i``."""
        table = torch.as_tensor(self.timesteps, device=i.device if isinstance(i, torch.Tensor) else device)
        if isinstance(i, torch.Tensor):
            return table[i.long()]
        return table[self._check_int(i)]

    def _check_int(self, i: int) -> int:
        if not 0 <= int(i) < self.num_timesteps:
            raise IndexError(f"timestep index {i} out of range [0, {self.num_timesteps})")
        return int(i)

    def index(self, t: Index, x: torch.Tensor) -> torch.Tensor:
        """Timestep indices as an int64 tensor of shape [B] on x's device (ints and 0-d tensors broadcast)."""
        if isinstance(t, torch.Tensor):
            if t.is_floating_point() or t.is_complex():
                raise TypeError(f"timestep indices must be integers, got dtype {t.dtype}")
            t = t.to(device=x.device, dtype=torch.long)
            if t.ndim == 0:
                t = t.expand(x.shape[0])
            elif t.shape != (x.shape[0],):
                raise ValueError(f"timestep indices must have shape [{x.shape[0]}], got {tuple(t.shape)}")
            # Range-checked on the CPU only: on an accelerator the check would force a host sync per call.
            if t.device.type == "cpu" and bool(((t < 0) | (t >= self.num_timesteps)).any()):
                raise IndexError(f"timestep indices out of range [0, {self.num_timesteps})")
            return t
        return torch.full((x.shape[0],), self._check_int(t), dtype=torch.long, device=x.device)

    def _table(self, name: str, x: torch.Tensor) -> torch.Tensor:
        key = (name, x.device, x.dtype)
        table = self._cache.get(key)
        if table is None:
            table = torch.as_tensor(getattr(self, name)).to(device=x.device, dtype=x.dtype)
            self._cache[key] = table
        return table

    def gather(self, values: str | np.ndarray, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample values at indices ``t`` (already from :meth:`index`), shaped [B, 1, ..., 1] like x."""
        if isinstance(values, str):
            table = self._table(values, x)
        else:
            table = torch.as_tensor(values).to(device=x.device, dtype=x.dtype)
        return table[t].reshape((x.shape[0],) + (1,) * (x.ndim - 1))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    # ------------------------------------------------------------------ forward process

    def q_sample(self, x_start: torch.Tensor, t: Index, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the caller's noise: sqrt(abar) * x_0 + sqrt(1 - abar) * noise."""
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start shape {tuple(x_start.shape)}")
        t = self.index(t, x_start)
        return (self.gather("sqrt_alphas_cumprod", t, x_start) * x_start
                + self.gather("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def v_target(self, x_start: torch.Tensor, t: Index, noise: torch.Tensor) -> torch.Tensor:
        """The v-prediction target sqrt(abar) * noise - sqrt(1 - abar) * x_0."""
        t = self.index(t, x_start)
        return (self.gather("sqrt_alphas_cumprod", t, x_start) * noise
                - self.gather("sqrt_one_minus_alphas_cumprod", t, x_start) * x_start)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor,
                                  t: Index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0) (variances broadcast to x)."""
        t = self.index(t, x_t)
        mean = (self.gather("posterior_mean_coef1", t, x_t) * x_start
                + self.gather("posterior_mean_coef2", t, x_t) * x_t)
        variance = self.gather("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self.gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ reverse process

    def _split(self, model_output: torch.Tensor,
               x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        channels = x_t.shape[1]
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.ndim != x_t.ndim or model_output.shape[1] != expected or \
                model_output.shape[2:] != x_t.shape[2:] or model_output.shape[0] != x_t.shape[0]:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} does not match x_t "
                             f"{tuple(x_t.shape)} with learn_sigma={self.learn_sigma} "
                             f"(expected {expected} channels)")
        if self.learn_sigma:
            return model_output[:, :channels], model_output[:, channels:]
        return model_output, None

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: Index,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """Parameters of p(x_{t-1} | x_t) from the model output at chain index ``t``.

        Returns ``mean``, ``variance``, ``log_variance`` (broadcast to x_t's shape), ``pred_xstart`` and
        ``pred_eps``. With ``clip_denoised`` the predicted x_0 is clamped to [-1, 1] and ``pred_eps`` is
        re-derived from it (as ADM's DDIM does), using ``(x_t - sqrt(abar) x_0) / sqrt(1 - abar)``, which
        stays finite at a zero-SNR terminal step.
        """
        t = self.index(t, x_t)
        pred, var_values = self._split(model_output, x_t)

        if var_values is not None:
            min_log = self.gather("posterior_log_variance_clipped", t, x_t)
            max_log = self.gather("log_betas", t, x_t)
            frac = (var_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = torch.exp(log_variance)
        elif self.fixed_variance == "small":
            variance = self.gather("posterior_variance", t, x_t).expand_as(x_t)
            log_variance = self.gather("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        else:
            variance = self.gather("large_variance", t, x_t).expand_as(x_t)
            log_variance = self.gather("large_log_variance", t, x_t).expand_as(x_t)

        sqrt_abar = self.gather("sqrt_alphas_cumprod", t, x_t)
        sqrt_one_minus = self.gather("sqrt_one_minus_alphas_cumprod", t, x_t)
        if self.prediction == "eps":
            pred_eps = pred
            pred_xstart = (self.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                           - self.gather("sqrt_recipm1_alphas_cumprod", t, x_t) * pred)
        else:
            pred_xstart = sqrt_abar * x_t - sqrt_one_minus * pred
            pred_eps = sqrt_abar * pred + sqrt_one_minus * x_t
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
            pred_eps = (x_t - sqrt_abar * pred_xstart) / sqrt_one_minus

        mean = (self.gather("posterior_mean_coef1", t, x_t) * pred_xstart
                + self.gather("posterior_mean_coef2", t, x_t) * x_t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "pred_eps": pred_eps}

    # ------------------------------------------------------------------ training

    def vb_terms_bpd(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, t: Index,
                     clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """Per-sample variational-bound term in bits per dimension (unscaled).

        For t > 0 this is KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); at t == 0 it is the negative
        log-likelihood of x_0 (data in [-1, 1], 256 levels) under the decoder N(mean, variance).
        """
        t = self.index(t, x_t)
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(
            x_start, out["mean"], 0.5 * out["log_variance"])) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                        t: Index, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """DiT/ADM hybrid loss from a model output at x_t = q_sample(x_start, t, noise).

        Returns per-sample ``mse`` (target eps or v), ``vb`` (only with ``learn_sigma``) and
        ``loss = mse + vb``.
        The vb term sees the mean prediction detached, so it trains only the variance channels (the mean is
        trained by the mse alone), and it is multiplied by ``num_timesteps / 1000`` as in ADM (1 for DiT's
        1000-step chain).
        """
        t = self.index(t, x_t)
        pred, var_values = self._split(model_output, x_t)
        target = noise if self.prediction == "eps" else self.v_target(x_start, t, noise)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
        terms = {"mse": mean_flat((target - pred) ** 2)}
        if var_values is not None:
            frozen = torch.cat([pred.detach(), var_values], dim=1)
            vb = self.vb_terms_bpd(frozen, x_start, x_t, t)["output"]
            terms["vb"] = vb * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms


def make_diffusion(cfg: DiffusionConfig, learn_sigma: bool) -> GaussianDiffusion:
    """The diffusion a checkpoint's DiffusionConfig (and its model's learned sigma) describes."""
    return GaussianDiffusion.make(schedule=cfg.schedule, num_timesteps=cfg.num_timesteps,
                                  prediction=cfg.prediction, learn_sigma=learn_sigma,
                                  zero_terminal_snr=cfg.zero_terminal_snr)
