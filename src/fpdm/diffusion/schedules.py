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
