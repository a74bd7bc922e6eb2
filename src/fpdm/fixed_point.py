"""Fixed-point iteration and the training-time gradient modes (S-JFB and its ablations).

A plan says how many iterations run without gradient (under `torch.no_grad()`, so no autograd graph is
built) and how many with gradient. Modes, with n ~ U{0..N} and m ~ U{1..M} drawn from a seeded generator:

- `sjfb`      stochastic Jacobian-free backprop: n without gradient, then m with (the paper's Algorithm 1)
- `jfb`       n without, then exactly 1 with (the usual DEQ one-step gradient)
- `multistep` n without, then exactly M with
- `backprop`  n + m iterations, all with gradient, gradient also through z0 (for comparison)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

GRADIENT_MODES = ("sjfb", "jfb", "multistep", "backprop")


@dataclass(frozen=True)
class IterationPlan:
    no_grad: int
    with_grad: int
    detach_init: bool = True  # JFB-style: the gradient does not flow into the initial point

    def __post_init__(self) -> None:
        if self.no_grad < 0 or self.with_grad < 0:
            raise ValueError(f"iteration counts must be >= 0, got {self.no_grad} and {self.with_grad}")

    @property
    def total(self) -> int:
        return self.no_grad + self.with_grad


def _uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def draw_plan(mode: str, max_no_grad: int, max_with_grad: int, generator: torch.Generator) -> IterationPlan:
    """Draw one training step's plan. Always consumes exactly two draws, whatever the mode, so runs that
    differ only in mode see the same random stream otherwise."""
    if mode not in GRADIENT_MODES:
        raise ValueError(f"unknown fixed-point gradient mode {mode!r}; expected one of {GRADIENT_MODES}")
    if max_no_grad < 0 or max_with_grad < 1:
        raise ValueError(f"need max_no_grad >= 0 and max_with_grad >= 1, got {max_no_grad}, {max_with_grad}")
    n = _uniform_int(0, max_no_grad, generator)
    m = _uniform_int(1, max_with_grad, generator)
    if mode == "sjfb":
        return IterationPlan(n, m)
    if mode == "jfb":
        return IterationPlan(n, 1)
    if mode == "multistep":
        return IterationPlan(n, max_with_grad)
    return IterationPlan(0, n + m, detach_init=False)


def iterate(f: Callable[[Tensor], Tensor], z: Tensor, iters: int) -> Tensor:
    """z ← f(z), `iters` times, in whatever grad mode the caller is in."""
    if iters < 0:
        raise ValueError(f"number of fixed-point iterations must be >= 0, got {iters}")
    for _ in range(iters):
        z = f(z)
    return z


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, plan: IterationPlan | int) -> Tensor:
    """Run a plan (training) or a plain iteration count (sampling)."""
    if isinstance(plan, int):
        return iterate(f, z0, plan)
    z = z0.detach() if plan.detach_init else z0
    if plan.no_grad:
        with torch.no_grad():
            z = iterate(f, z, plan.no_grad)
    return iterate(f, z, plan.with_grad)
