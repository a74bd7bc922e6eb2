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
# Budgeted solvers for sampling. Without `tol` each spends exactly `max_evals` evaluations of f on the whole
# batch. With `tol`, every sample decides for itself: it stops (its state frozen) once its own relative
# residual ||f(z) - z|| / ||f(z)|| is below `tol` (a number, or one per sample) or it has spent its own
# allowance (`limits`, one per sample), and f runs on the samples still going only — so a sample's result
# never depends on the others in its batch, and the blocks it costs are its own.

SOLVERS = ("picard", "anderson")


@dataclass
class SolveStats:
    """What one solve did: batched evaluations of f, the relative residual (max over the samples still
    iterating) after each, and (per-sample solves) each sample's own evaluation count.

    Residuals stay on the device as 0-d tensors (no host sync per iteration unless `tol` needs a decision);
    `residual_values()` turns them into floats once, after sampling."""

    evals: int = 0
    residuals: list[Tensor] = field(default_factory=list)
    evals_per_sample: Tensor | None = None  # (N,) int64, per-sample solves only

    def residual_values(self) -> list[float]:
        return torch.stack(self.residuals).tolist() if self.residuals else []


def relative_residual(fz: Tensor, z: Tensor) -> Tensor:
    """Per-sample ||f(z) - z|| / ||f(z)|| over all non-batch dimensions, shape (N,)."""
    diff = (fz - z).flatten(1).norm(dim=1)
    return diff / fz.flatten(1).norm(dim=1).clamp_min(1e-12)


def _record(stats: SolveStats, fz: Tensor, z: Tensor) -> Tensor:
    stats.evals += 1
    res = relative_residual(fz, z)
    stats.residuals.append(res.max())
    return res


def _on_rows(f: Callable[..., Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """(z, rows) -> f on those rows of z: through f's own `rows` argument when it has one (FPDM's map
    computes just those samples), else on the whole batch, keeping those rows (any row-wise map)."""
    import inspect

    try:
        takes_rows = "rows" in inspect.signature(f).parameters
    except (TypeError, ValueError):
        takes_rows = False
    if takes_rows:
        return lambda z, rows: f(z[rows], rows)
    return lambda z, rows: f(z)[rows]


class _Rows:
    """Which samples of a per-sample solve are still iterating, and what each has spent."""

    def __init__(self, n: int, max_evals: int, limits: Tensor | None, device: torch.device) -> None:
        self.limits = torch.full((n,), max_evals, dtype=torch.long) if limits is None else \
            limits.to(dtype=torch.long, device="cpu")
        self.spent = torch.zeros(n, dtype=torch.long)
        self.active = self.limits > 0
        self.device = device

    def index(self) -> Tensor:
        return self.active.nonzero().squeeze(1).to(self.device)

    def update(self, rows: Tensor, res: Tensor, tol: float | Tensor | None) -> Tensor:
        """Count an evaluation for `rows`, retire those below `tol` or out of allowance; the rows still
        going, as a mask over `rows`."""
        cpu_rows = rows.cpu()
        self.spent[cpu_rows] += 1
        done = self.spent[cpu_rows] >= self.limits[cpu_rows]
        if isinstance(tol, Tensor):  # one tolerance per sample (0: run the whole allowance)
            done |= res.cpu() < tol[cpu_rows]
        elif tol is not None:
            done |= (res < tol).cpu()
        self.active[cpu_rows[done]] = False
        return ~done


def picard(f: Callable[..., Tensor], z0: Tensor, max_evals: int, tol: float | Tensor | None = None,
           stats: SolveStats | None = None, limits: Tensor | None = None) -> Tensor:
    """Plain iteration z ← f(z); with tol=None and no `limits` exactly `iterate(f, z0, max_evals)`. With
    either, per sample (see above): at most limits[i] (default `max_evals`) evaluations for sample i."""
    stats = SolveStats() if stats is None else stats
    if tol is None and limits is None:
        z = z0
        for _ in range(max_evals):
            fz = f(z)
            _record(stats, fz, z)
            z = fz
        return z
    state = _Rows(z0.shape[0], max_evals, limits, z0.device)
    f_rows = _on_rows(f)
    z = z0.clone()
    while (rows := state.index()).numel():
        fz = f_rows(z, rows)
        res = _record(stats, fz, z[rows])
        z[rows] = fz
        state.update(rows, res, tol)
    stats.evals_per_sample = state.spent
    return z


def anderson(f: Callable[..., Tensor], z0: Tensor, max_evals: int, tol: float | Tensor | None = None,
             stats: SolveStats | None = None, window: int = 5, lam: float = 1e-4,
             beta: float = 1.0, limits: Tensor | None = None) -> Tensor:
    """Anderson acceleration (type II, Walker & Ni 2011) per sample, on flattened states.

    Each step mixes the last `window` evaluations with least-squares weights summing to one that minimise
    the combined residual (ridge `lam` relative to the residuals' size). Returns the last evaluation
    f(x_k), like `picard`. With `tol` or `limits`, per sample (see above)."""
    stats = SolveStats() if stats is None else stats
    n, shape = z0.shape[0], z0.shape
    per_sample = tol is not None or limits is not None
    state = _Rows(n, max_evals, limits, z0.device)
    if not per_sample and max_evals < 1:
        return z0
    xs: list[Tensor] = []  # each (N, d): a sample's rows are valid while it is still iterating
    fs: list[Tensor] = []
    x = z0.clone()
    out = z0.clone()  # the last evaluation of each sample
    all_rows = torch.arange(n, device=z0.device)
    f_rows = _on_rows(f)
    for k in range(int(state.limits.max()) if n else 0):
        rows = state.index() if per_sample else all_rows
        if not rows.numel():
            break
        fz = f_rows(x, rows) if per_sample else f(x)
        res = _record(stats, fz, x[rows])
        out[rows] = fz
        xs.append(x.reshape(n, -1).clone())
        fs.append(out.reshape(n, -1).clone())
        if len(xs) > window:
            xs.pop(0)
            fs.pop(0)
        going = state.update(rows, res, tol) if per_sample else \
            torch.full((n,), k < max_evals - 1, dtype=torch.bool)
        rows = rows[going.to(rows.device)]
        if not rows.numel():
            break
        if len(xs) == 1:
            x[rows] = out[rows]
            continue
        X, F_ = torch.stack(xs, 1)[rows], torch.stack(fs, 1)[rows]  # (n_rows, m, d)
        G = (F_ - X).double()
        m, nr = G.shape[1], G.shape[0]
        gram = G @ G.transpose(1, 2)  # (n_rows, m, m)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)[:, None, None]
        gram = gram + lam * scale * torch.eye(m, dtype=G.dtype, device=G.device)  # ridge relative to |G|²
        ones = torch.ones(nr, m, 1, dtype=G.dtype, device=G.device)
        w = torch.linalg.solve(gram, ones)  # (n_rows, m, 1)
        alpha = (w / w.sum(dim=1, keepdim=True)).to(X.dtype)  # weights summing to 1
        mixed_f = (alpha.transpose(1, 2) @ F_).squeeze(1)
        mixed_x = (alpha.transpose(1, 2) @ X).squeeze(1)
        x[rows] = (beta * mixed_f + (1 - beta) * mixed_x).reshape(nr, *shape[1:])
    if per_sample:
        stats.evals_per_sample = state.spent
    return out


def make_solver(name: str, max_evals: int, tol: float | Tensor | None, stats: SolveStats,
                window: int = 5, limits: Tensor | None = None
                ) -> Callable[[Callable[..., Tensor], Tensor], Tensor]:
    """A solver closure for `FPDM.forward(iters=...)`: (f, z0) -> z*, recording into `stats`; `limits`
    (one per sample) makes the solve per-sample, as `tol` does."""
    if name == "picard":
        return lambda f, z0: picard(f, z0, max_evals, tol, stats, limits=limits)
    if name == "anderson":
        return lambda f, z0: anderson(f, z0, max_evals, tol, stats, window=window, limits=limits)
    raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")
