"""What a sampler is to the sampling loop: a named step rule x_t → x_prev, and whether it draws noise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class StepRule:
    """`step(diffusion, model_output, x_t, i, noise, eta=…, clip_denoised=…) -> x_prev` at chain index `i`
    (x_0 at i == 0); `stochastic(eta)` says whether the step needs the caller's per-sample noise (the
    sampling loop draws it from each sample's own generator only then, so seeds stay aligned)."""

    name: str
    step: Callable[..., Tensor]
    stochastic: Callable[[float], bool]


def nonzero_mask(i: Tensor, x: Tensor) -> Tensor:
    """1 where the chain index is above 0 (noise is added), 0 at the last step; shaped like x's batch."""
    return (i != 0).to(x.dtype).reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def check_noise(noise: Tensor | None, i: Tensor, x: Tensor, what: str) -> None:
    if noise is None:  # the check syncs, but only on this misuse-prone path
        if bool((i != 0).any()):
            raise ValueError(f"{what} needs noise for steps with index > 0")
    elif noise.shape != x.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x_t shape {tuple(x.shape)}")
