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
from dataclasses import dataclass, field

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


Solver = Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, plan: IterationPlan | int | Solver) -> Tensor:
    """Run a plan (training), a plain iteration count, or a solver closure from `make_solver` (sampling)."""
    if isinstance(plan, int):
        return iterate(f, z0, plan)
    if callable(plan):
        return plan(f, z0)
    z = z0.detach() if plan.detach_init else z0
    if plan.no_grad:
        with torch.no_grad():
            z = iterate(f, z, plan.no_grad)
    return iterate(f, z, plan.with_grad)


# --------------------------------------------------------------------------------------------- sampling
# Budgeted solvers for sampling: each spends at most `max_evals` evaluations of f, may stop early once the
# relative residual ||f(z) - z|| / ||f(z)|| of every sample is below `tol`, and reports what it did.

SOLVERS = ("picard", "anderson")


@dataclass
class SolveStats:
    """What one solve did: evaluations of f, and the relative residual (max over the batch) after each.

    Residuals stay on the device as 0-d tensors (no host sync per iteration unless `tol` needs a decision);
    `residual_values()` turns them into floats once, after sampling."""

    evals: int = 0
    residuals: list[Tensor] = field(default_factory=list)

    def residual_values(self) -> list[float]:
        return torch.stack(self.residuals).tolist() if self.residuals else []


def relative_residual(fz: Tensor, z: Tensor) -> Tensor:
    """Per-sample ||f(z) - z|| / ||f(z)|| over all non-batch dimensions, shape (N,)."""
    diff = (fz - z).flatten(1).norm(dim=1)
    return diff / fz.flatten(1).norm(dim=1).clamp_min(1e-12)


def _record(stats: SolveStats, fz: Tensor, z: Tensor, tol: float | None) -> bool:
    stats.evals += 1
    res = relative_residual(fz, z).max()
    stats.residuals.append(res)
    return tol is not None and bool(res < tol)


def picard(f: Callable[[Tensor], Tensor], z0: Tensor, max_evals: int, tol: float | None = None,
           stats: SolveStats | None = None) -> Tensor:
    """Plain iteration z ← f(z); with tol=None exactly `iterate(f, z0, max_evals)`."""
    stats = SolveStats() if stats is None else stats
    z = z0
    for _ in range(max_evals):
        fz = f(z)
        done = _record(stats, fz, z, tol)
        z = fz
        if done:
            break
    return z


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, max_evals: int, tol: float | None = None,
             stats: SolveStats | None = None, window: int = 5, lam: float = 1e-4,
             beta: float = 1.0) -> Tensor:
    """Anderson acceleration (type II, Walker & Ni 2011) per sample, on flattened states.

    Each step mixes the last `window` evaluations with least-squares weights summing to one that minimise
    the combined residual (ridge `lam` relative to the residuals' size). Returns the last evaluation
    f(x_k), like `picard`."""
    stats = SolveStats() if stats is None else stats
    if max_evals < 1:
        return z0
    n = z0.shape[0]
    shape = z0.shape
    xs: list[Tensor] = []  # each (N, d)
    fs: list[Tensor] = []
    x = z0
    fz = z0
    for k in range(max_evals):
        fz = f(x)
        done = _record(stats, fz, x, tol)
        xs.append(x.reshape(n, -1))
        fs.append(fz.reshape(n, -1))
        if len(xs) > window:
            xs.pop(0)
            fs.pop(0)
        if done or k == max_evals - 1:
            break
        if len(xs) == 1:
            x = fz
            continue
        X, F_ = torch.stack(xs, 1), torch.stack(fs, 1)  # (N, m, d)
        G = (F_ - X).double()
        m = G.shape[1]
        gram = G @ G.transpose(1, 2)  # (N, m, m)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)[:, None, None]
        gram = gram + lam * scale * torch.eye(m, dtype=G.dtype, device=G.device)  # ridge relative to |G|²
        ones = torch.ones(n, m, 1, dtype=G.dtype, device=G.device)
        w = torch.linalg.solve(gram, ones)  # (N, m, 1)
        alpha = (w / w.sum(dim=1, keepdim=True)).to(X.dtype)  # weights summing to 1
        mixed_f = (alpha.transpose(1, 2) @ F_).squeeze(1)
        mixed_x = (alpha.transpose(1, 2) @ X).squeeze(1)
        x = (beta * mixed_f + (1 - beta) * mixed_x).reshape(shape)
    return fz


def make_solver(name: str, max_evals: int, tol: float | None, stats: SolveStats,
                window: int = 5) -> Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]:
    """A solver closure for `FPDM.forward(iters=...)`: (f, z0) -> z*, recording into `stats`."""
    if name == "picard":
        return lambda f, z0: picard(f, z0, max_evals, tol, stats)
    if name == "anderson":
        return lambda f, z0: anderson(f, z0, max_evals, tol, stats, window=window)
    raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")
