"""Sampling: DDPM/DDIM over a respaced chain, classifier-free guidance, FPDM's per-step iteration plans,
warm starts ("reuse"), and budgeted adaptive solving — with a record of what was actually run.

One random generator per sample seed draws that sample's initial noise and every step's noise, so they never
depend on the batch; the arithmetic may (maths libraries choose kernels by batch size), so a seed's image at
another batch size agrees to a tolerance, and bit for bit only for the same batch (docs/reproducibility.md).
Warm-start state lives in this function's loop only: it starts empty for every batch.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers import SAMPLERS as STEP_RULES
from fpdm.diffusion.schedules import SPACINGS, space_timesteps, spaced_timesteps
from fpdm.fixed_point.solvers import SOLVERS, SolveStats, make_solver
from fpdm.models.dit import DiT
from fpdm.models.fpdm import FPDM
from fpdm.models.instrument import count_block_calls
from fpdm.sampling.budget import forward_flops

SAMPLERS = tuple(STEP_RULES)  # the registry's names: fpdm.diffusion.samplers


TOL_MODES = ("reallocate", "save")


@dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "ddpm"
    spacing: str = "uniform"  # which timesteps the steps visit (fpdm.diffusion.schedules.SPACINGS)
    eta: float = 0.0
    cfg_scale: float = 1.0  # 1 = no guidance
    cfg_legacy: bool = False  # DiT's legacy guidance of the first 3 channels only
    reuse: bool = False  # warm-start each step's fixed point from the previous step's z*
    tol: float | None = None  # stop a step early below this relative residual; unspent budget carries on
    # what --tol does with what a step leaves unspent: "reallocate" (later steps may use it, the budget is
    # spent exactly) or "save" (nobody does: the budget is a cap, and the record says what was spent)
    tol_mode: str = "reallocate"
    solver: str = "picard"
    anderson_window: int = 5
    clip_denoised: bool = True
    # a step whose relative residual is non-finite, or still above this after >= 3 evaluations, is reported
    # as diverged (record + warning): its output is not a fixed point, the samples may be noise
    divergence_bound: float = 0.5

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"--spacing must be one of {SPACINGS}, got {self.spacing!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        for name in ("eta", "cfg_scale", "tol", "divergence_bound"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
        if self.eta < 0:
            raise ValueError(f"--eta must be >= 0, got {self.eta}")
        if self.cfg_scale < 1:
            raise ValueError(f"--cfg-scale must be >= 1 (1 = no guidance), got {self.cfg_scale}")
        if self.tol is not None and self.tol <= 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.tol_mode not in TOL_MODES:
            raise ValueError(f"--tol-mode must be one of {TOL_MODES}, got {self.tol_mode!r}")
        if self.tol_mode != "reallocate" and self.tol is None:
            raise ValueError(f"--tol-mode {self.tol_mode} says what --tol saves; give --tol")
        if self.anderson_window < 1:
            raise ValueError(f"anderson_window must be >= 1, got {self.anderson_window}")
        if not self.divergence_bound > 0:
            raise ValueError(f"divergence_bound must be > 0, got {self.divergence_bound}")


def parse_seeds(spec: str, limit: int | None = None) -> list[int]:
    """'0-99' (inclusive range), '3,7,9', or a mix such as '0-3,10'. More than `limit` seeds is a
    ValueError, found before the list is built ('0-99999999' costs nothing to refuse)."""
    spans: list[tuple[int, int]] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            spans.append((int(lo), int(hi) if hi else int(lo)))
    except ValueError:
        raise ValueError(f"--seeds {spec!r}: expected ranges and numbers like '0-99' or '0-3,10'") from None
    total = sum(max(0, hi - lo + 1) for lo, hi in spans)
    if limit is not None and total > limit:
        raise ValueError(f"seeds: at most {limit} samples per request, got {total:,}")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    if not seeds:
        raise ValueError(f"--seeds {spec!r} selects no seed")
    bad = next((s for s in seeds if not 0 <= s < 2**63), None)
    if bad is not None:  # a torch.Generator seed is a signed 64-bit integer
        raise ValueError(f"--seeds {spec!r}: seed {bad} is outside [0, 2^63)")
    if len(set(seeds)) != len(seeds):
        twice = next(s for i, s in enumerate(seeds) if s in seeds[:i])
        raise ValueError(f"--seeds {spec!r} names seed {twice} more than once (each seed is one sample)")
    return seeds


def _per_sample_randn(generators: Sequence[torch.Generator], shape: Sequence[int]) -> Tensor:
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])  # (N, *shape)


def _guided(out: Tensor, n: int, scale: float, channels: int) -> Tensor:
    """Combine the conditional and unconditional halves: eps_u + s (eps_c - eps_u) on `channels`."""
    cond, uncond = out[:n], out[n:]
    mixed = uncond[:, :channels] + scale * (cond[:, :channels] - uncond[:, :channels])
    return torch.cat([mixed, cond[:, channels:]], dim=1)


@torch.no_grad()
def sample(model: DiT | FPDM, diffusion: GaussianDiffusion, labels: Tensor, seeds: Sequence[int], *,
           steps: int | str = 50, iters: Sequence[int] | int | None = None,
           settings: SamplerSettings | None = None, device: str | torch.device = "cpu",
           progress: bool = False) -> tuple[Tensor, dict[str, Any]]:
    """Draw len(seeds) samples (N, C, H, W) in [-1, 1] for `labels`, and a record of what ran.

    `steps`: an int or an ADM spec ("ddim25", "10,20") choosing the kept timesteps. `iters` (FPDM only): one
    count per step in sampling order, or one count for every step (default depth - pre - post). With
    `settings.tol`, a step may stop early; what it leaves unspent later steps may use (`reallocate`), so the
    total equals sum(iters) — or, with `tol_mode="save"`, is kept unspent."""
    s = settings or SamplerSettings()
    if len(labels) != len(seeds):
        raise ValueError(f"got {len(labels)} labels for {len(seeds)} seeds")
    spaced = diffusion.respace(chain_timesteps(diffusion, steps, s.spacing))
    n_steps = spaced.num_timesteps
    rule = STEP_RULES[s.sampler]
    n_evals = rule.evaluations(n_steps)  # model evaluations: an FPDM plan has one count per evaluation
    cfg = model.config
    is_fpdm = isinstance(model, FPDM)
    if is_fpdm:
        k = model.default_iters if iters is None else iters
        plan = [int(k)] * n_evals if isinstance(k, int) else [int(v) for v in k]
        if len(plan) != n_evals or min(plan) < 0:
            what = f"{n_steps} steps" if n_evals == n_steps else f"{n_evals} evaluations ({s.sampler}, " \
                f"{n_steps} steps)"
            raise ValueError(f"need {what}: one non-negative iteration count each, got {plan}")
    else:
        if iters is not None:
            raise ValueError("iters applies to FPDM models only")
        plan = []
    guidance = s.cfg_scale != 1.0
    if guidance and cfg.num_classes == 0:
        raise ValueError("classifier-free guidance needs a class-conditional model")
    n = len(seeds)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    x = _per_sample_randn(generators, shape).to(device)  # (N, C, H, W)
    y = labels.to(device)
    if guidance:
        y = torch.cat([y, torch.full_like(y, cfg.num_classes)])  # second half: the null class
    guided_channels = 3 if s.cfg_legacy else cfg.in_channels

    rows = n * (2 if guidance else 1)
    # per batch, never kept on the model or the rule: the warm start (--reuse), --tol's savings per row
    # (sample, or guidance half), and which evaluation comes next
    state: dict[str, Any] = {"z": None, "unspent": torch.zeros(rows, dtype=torch.long), "e": 0}
    iters_run, iters_mean, step_stats = [], [], []

    def evaluate(x_cur: Tensor, i: int) -> Tensor:
        """One model evaluation at chain index i (guided; FPDM: the plan's next iteration count)."""
        e = state["e"]
        state["e"] += 1
        x_in = torch.cat([x_cur, x_cur]) if guidance else x_cur
        t = torch.full((x_in.shape[0],), int(spaced.timesteps[i]), dtype=torch.long, device=device)
        if not is_fpdm:
            out = model(x_in, t, y)
            return _guided(out, n, s.cfg_scale, guided_channels) if guidance else out
        stats = SolveStats()
        if s.tol is None:  # every sample runs the plan: one solve for the batch
            solver = make_solver(s.solver, plan[e], None, stats, s.anderson_window)
        elif s.tol_mode == "save":  # each sample stops on its own residual; what it saves is saved
            limits = torch.full((rows,), plan[e], dtype=torch.long)
            solver = make_solver(s.solver, plan[e], s.tol, stats, s.anderson_window, limits=limits)
        else:  # each sample stops on its own residual and keeps what it saved for later evaluations
            extra, spending = reallocate(state["unspent"], n_evals - e)
            state["unspent"] -= extra
            limits = plan[e] + extra
            tol = torch.where(spending, 0.0, s.tol)  # a spending row runs its whole allowance
            solver = make_solver(s.solver, int(limits.max()), tol, stats, s.anderson_window, limits=limits)
        out, state["z"] = model(x_in, t, y, iters=solver, z_init=state["z"] if s.reuse else None,
                                return_state=True)
        if s.tol is not None:
            spent = stats.evals_per_sample
            state["unspent"] += limits - spent
            iters_mean.append(round(float(spent.double().mean()), 3))
        iters_run.append(stats.evals)
        step_stats.append(stats)
        return _guided(out, n, s.cfg_scale, guided_channels) if guidance else out

    history: tuple = ()  # a multistep solver's earlier predictions: this batch's only
    t0 = time.perf_counter()
    with count_block_calls(model) as counted:
        for i in tqdm(range(n_steps - 1, -1, -1), desc="sample", disable=not progress):
            if rule.advance is not None:
                x, history = rule.advance(spaced, evaluate, x, i, history, clip_denoised=s.clip_denoised)
                continue
            out = evaluate(x, i)
            noise = _per_sample_randn(generators, shape).to(device) if rule.stochastic(s.eta) else None
            x = rule.step(spaced, out, x, i, noise, eta=s.eta, clip_denoised=s.clip_denoised)
    wall = time.perf_counter() - t0
    passes = 2 if guidance else 1  # guidance evaluates each sample twice; the block budget does not count it
    if is_fpdm:
        per_step = iters_mean if s.tol is not None else iters_run  # what one sample ran, on average
        flops = passes * sum(forward_flops(cfg, k) for k in per_step)
    else:
        flops = passes * n_evals * forward_flops(cfg)
    # blocks per sample, counted: rows through blocks / rows per batch (a per-sample --tol solve runs the
    # fixed-point block on the samples still iterating only, so its calls and its per-sample cost differ)
    blocks, remainder = divmod(counted["rows"], rows)
    record = {
        "arch": cfg.arch, "steps": n_steps, "evaluations": n_evals,
        "timesteps": [int(v) for v in spaced.timesteps[::-1]],
        "iters_planned": plan, "iters_run": iters_run,
        "blocks_counted": blocks if not remainder else round(counted["rows"] / rows, 3),
        "block_calls": counted["blocks"],
        "flops_per_sample": flops, "wall_s": round(wall, 4), "num_samples": n,
        "seeds": [int(seeds[0]), int(seeds[-1])], "settings": asdict(s),
        "residuals": [st.residual_values() for st in step_stats],
    }
    if s.tol is not None and is_fpdm:
        record["iters_run_mean"] = iters_mean  # per step, over the samples (iters_run: the batch's calls)
        if s.tol_mode == "save":  # the budget was a cap: what each sample spent of it
            record["blocks_saved"] = round(sum(plan) + n_evals * (cfg.pre_depth + cfg.post_depth)
                                           - counted["rows"] / rows, 3)
    record["diverged_steps"] = diverged_steps(record["residuals"], s.divergence_bound)
    record["non_finite_samples"] = int((~torch.isfinite(x.flatten(1)).all(dim=1)).sum())
    if record["diverged_steps"]:
        worst = max(abs(r[-1]) if math.isfinite(r[-1]) else math.inf for r in
                    (record["residuals"][j] for j in record["diverged_steps"]))
        unit = "steps" if n_evals == n_steps else "evaluations"
        warnings.warn(f"the fixed-point iteration diverged at {len(record['diverged_steps'])} of {n_evals} "
                      f"{unit} (final relative residual up to {worst:.3g} > {s.divergence_bound}): these "
                      "samples may be noise; see the record's diverged_steps and residuals", stacklevel=2)
    if record["non_finite_samples"]:
        warnings.warn(f"{record['non_finite_samples']} of {n} samples contain NaN/inf", stacklevel=2)
    return x.clamp(-1, 1).cpu(), record


def chain_timesteps(diffusion: GaussianDiffusion, steps: int | str, spacing: str = "uniform") -> list[int]:
    """The original timesteps a chain of `steps` visits: an ADM spec ("50", "ddim25", "10,20") with the
    uniform spacing, or a plain count with another (`fpdm.diffusion.schedules.spaced_timesteps`)."""
    if spacing == "uniform":
        return space_timesteps(diffusion.num_timesteps, steps)
    if not str(steps).isdigit():
        raise ValueError(f"--steps {steps!r} is a spacing of its own; --spacing {spacing} needs a plain "
                         "number of steps")
    return spaced_timesteps(diffusion.alphas_cumprod, int(steps), spacing)


def reallocate(unspent: Tensor, remaining: int) -> tuple[Tensor, Tensor]:
    """--tol's exact-budget rule for one step with `remaining` steps left (this one included), per row of
    `unspent` (iterations saved so far): (extra iterations allowed on top of the plan, rows that must spend).

    While a row's savings are fewer than one iteration per remaining step, its step may stop on the
    tolerance and may borrow all of them (a step that has not converged takes what earlier steps saved).
    Once they reach one per remaining step, the tolerance is off for that row and its steps spend an even
    share each, the last step the rest: the budget is met exactly, and savings are spent as they reach a
    share per step instead of piling onto the last step."""
    spending = unspent >= remaining  # (rows,) bool; at the last step any saving at all
    extra = torch.where(spending, unspent // remaining, unspent)
    if remaining <= 1:  # the last step cannot leave anything for later: it spends everything
        spending = torch.ones_like(spending)
    return extra, spending


def diverged_steps(residuals: Sequence[Sequence[float]], bound: float) -> list[int]:
    """Indices (in sampling order) of steps whose fixed-point solve did not converge: a non-finite residual,
    or a final relative residual above `bound` after at least 3 evaluations (the first evaluations move far
    from the initial point even when the iteration converges, so fewer are not judged)."""
    out = []
    for j, r in enumerate(residuals):
        if any(not math.isfinite(v) for v in r) or (len(r) >= 3 and r[-1] > bound):
            out.append(j)
    return out
