"""Noise schedules and timestep selection for Gaussian diffusion.

Everything here is pure float64 numpy (or plain Python) so that the per-timestep constants derived from it in
:mod:`fpdm.diffusion.gaussian` are computed once at full precision and only cast to the model's dtype when
used.
"""

from __future__ import annotations

import math

import numpy as np

BETA_SCHEDULES = ("linear", "cosine")

# Cosine schedule (Nichol & Dhariwal 2021): offset s keeps beta_0 from being vanishingly small, and betas are
# capped below 1 so that the reverse process stays well defined near t = T.
_COSINE_OFFSET = 0.008
_COSINE_MAX_BETA = 0.999


def beta_schedule(name: str, num_timesteps: int = 1000) -> np.ndarray:
    """Return the float64 betas of a named schedule with ``num_timesteps`` steps.

    ``"linear"`` is the DDPM/ADM/DiT schedule, scaled by ``1000 / num_timesteps`` so that a chain with fewer
    steps has roughly the same total noise as the 1000-step original (so it needs more than 20 steps).
    ``"cosine"`` discretises ``alpha_bar(t) = cos((t / T + s) / (1 + s) * pi / 2) ** 2`` (s = 0.008) and caps
    each beta at 0.999.
    """
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        if scale * 0.02 >= 1.0:
            raise ValueError(f"the linear schedule needs num_timesteps > 20 (its last beta is "
                             f"20 / num_timesteps), got {num_timesteps}")
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        alpha_bar = np.cos((grid + _COSINE_OFFSET) / (1.0 + _COSINE_OFFSET) * (math.pi / 2)) ** 2
        betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
        return np.minimum(betas, _COSINE_MAX_BETA)
    raise ValueError(f"unknown beta schedule {name!r}; valid choices are {BETA_SCHEDULES}")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale ``betas`` so the final step has zero signal (Lin et al. 2023, "Common diffusion noise schedules
    and sample steps are flawed", Algorithm 1).

    ``sqrt(alpha_bar)`` is shifted so its last value is exactly 0 and scaled so its first value is unchanged;
    betas are then recovered from the ratios of consecutive ``alpha_bar``. The last beta is exactly 1.

    Consequence for samplers: ``alpha_bar[T-1] == 0``, so at the final (noisiest) step ``x_T`` carries no
    information about ``x_0``. With eps-prediction,
    ``x_0 = (x_t - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar)`` divides by zero there, so eps-prediction is
    ill-posed at ``t = T - 1``. Use v-prediction with this rescaling:
    ``x_0 = sqrt(alpha_bar) * x_t - sqrt(1 - alpha_bar) * v`` stays finite. Samplers must not divide by
    ``sqrt(alpha_bar)``; :class:`fpdm.diffusion.gaussian.GaussianDiffusion` avoids it for v-prediction.
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) < 2:
        raise ValueError(f"betas must be a 1-D array with at least 2 entries, got shape {betas.shape}")
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = np.empty_like(abar)
    alphas[0] = abar[0]
    alphas[1:] = abar[1:] / abar[:-1]
    new_betas = 1.0 - alphas
    new_betas[-1] = 1.0  # already exact (abar[-1] is an exact 0); stated explicitly for readers and safety
    return new_betas


def _evenly_spaced(start: int, size: int, count: int) -> list[int]:
    """``count`` indices spread over ``[start, start + size - 1]`` including both ends.

    The fractional stride is accumulated by repeated addition and rounded with Python's ``round`` (half to
    even), which reproduces ADM's choice exactly, including its tie-breaking.
    """
    stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
    picked = []
    position = 0.0
    for _ in range(count):
        picked.append(start + round(position))
        position += stride
    return picked


def _ddim_spacing(num_timesteps: int, count: int) -> list[int]:
    """ADM's ``"ddimN"``: the smallest integer stride whose ``range(0, T, stride)`` has exactly N entries.

    When N divides T this is stride ``T // N``; otherwise it can differ (T=1000, N=3 gives stride 334).
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"ddim step count must be in [1, {num_timesteps}], got {count}")
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    raise ValueError(f"no integer stride gives exactly {count} ddim steps out of {num_timesteps}")


def space_timesteps(num_timesteps: int, spec: int | str) -> list[int]:
    """Choose which original timesteps a shortened sampling chain keeps (ADM semantics), ascending.

    - ``n`` or ``"n"``: n evenly spaced timesteps including 0 and ``T - 1``.
    - ``"a,b,c"``: split ``[0, T)`` into equal sections (the first ``T % k`` one step longer) and take
      a, b, c evenly spaced steps (including both ends) from each section respectively.
    - ``"ddimN"``: ``range(0, T, stride)`` with the smallest stride giving exactly N steps.
    """
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    if isinstance(spec, bool):
        raise TypeError("spec must be an int or a str, not bool")
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("ddim"):
            try:
                count = int(text[len("ddim"):])
            except ValueError:
                raise ValueError(f"invalid ddim spacing {spec!r}; expected e.g. 'ddim50'") from None
            return _ddim_spacing(num_timesteps, count)
        try:
            counts = [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"invalid timestep spacing {spec!r}; expected an int, 'n', 'a,b,c' or 'ddimN'"
            ) from None
    elif isinstance(spec, int):
        counts = [spec]
    else:
        raise TypeError(f"spec must be an int or a str, got {type(spec).__name__}")

    if len(counts) > num_timesteps:
        raise ValueError(f"{len(counts)} sections do not fit in {num_timesteps} timesteps")
    base, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for index, count in enumerate(counts):
        size = base + (1 if index < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"section {index} of spacing {spec!r} asks for {count} steps; it must be in [1, {size}]"
            )
        kept.extend(_evenly_spaced(start, size, count))
        start += size
    return sorted(kept)


# ------------------------------------------------------------------------------------ sampler spacings
SPACINGS = ("uniform", "trailing", "logsnr", "karras")
KARRAS_RHO = 7.0


def _snap_unique(targets: np.ndarray, num_timesteps: int) -> list[int]:
    """Integer timesteps nearest to `targets` (descending: noisiest first), each strictly below the one
    before: a target that rounds onto a step already taken moves to the next free one toward t = 0. Needs
    len(targets) <= num_timesteps."""
    kept: list[int] = []
    for value in targets:
        t = int(np.clip(np.rint(value), 0, num_timesteps - 1))
        if kept and t >= kept[-1]:
            t = kept[-1] - 1
        kept.append(t)
    if kept[-1] < 0:  # pushed past 0: pull the tail back up, one step apart
        for j in range(len(kept) - 1, -1, -1):
            floor = len(kept) - 1 - j
            kept[j] = max(kept[j], floor)
            if j + 1 < len(kept) and kept[j] <= kept[j + 1]:
                kept[j] = kept[j + 1] + 1
    return sorted(kept)


def spaced_timesteps(alphas_cumprod: np.ndarray, steps: int, spacing: str = "uniform") -> list[int]:
    """The `steps` original timesteps a sampler visits, ascending, for a schedule with these ᾱ:
    `uniform` (ADM/DiT respacing: evenly from 0 to T − 1), `trailing` (diffusers': T/n apart, ending at
    T − 1, so the last step lands near but not on 0), `logsnr` (evenly in λ = log(α/σ) from t = T − 1 to 0),
    `karras` (EDM's σ_i^(1/ρ) evenly from σ_max to σ_min, ρ = 7). Continuous targets snap to the nearest
    integer timestep with no step repeated (`_snap_unique`)."""
    num_timesteps = len(alphas_cumprod)
    if spacing not in SPACINGS:
        raise ValueError(f"--spacing must be one of {SPACINGS}, got {spacing!r}")
    if not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"--spacing {spacing} needs a plain number of steps from 1 to {num_timesteps}, got "
                         f"{steps!r}")
    if spacing == "uniform":
        return space_timesteps(num_timesteps, steps)
    if spacing == "trailing":
        return sorted({int(v) for v in np.round(np.arange(num_timesteps, 0, -num_timesteps / steps)) - 1})
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    if abar[-1] <= 0:
        raise ValueError(f"--spacing {spacing} spaces by log-SNR or σ, which are infinite at this "
                         "zero-terminal-SNR model's last timestep: use --spacing uniform or trailing")
    log_sigma = 0.5 * (np.log1p(-abar) - np.log(abar))  # increasing in t: log σ = −λ
    t_axis = np.arange(num_timesteps, dtype=np.float64)
    if spacing == "logsnr":
        targets = np.linspace(log_sigma[-1], log_sigma[0], steps)
    else:
        lo, hi = np.exp(log_sigma[0]) ** (1 / KARRAS_RHO), np.exp(log_sigma[-1]) ** (1 / KARRAS_RHO)
        targets = np.log(np.linspace(hi, lo, steps) ** KARRAS_RHO)
    if steps == 1:
        targets = targets[:1]
    return _snap_unique(np.interp(targets, log_sigma, t_axis), num_timesteps)
