"""Sampling compute budgets, counted in transformer-block evaluations per sample (the paper's unit).

One DiT evaluation costs `depth` blocks; one FPDM evaluation costs `pre + k + post`; a sampler's step makes
one evaluation (DDPM, DDIM, DPM-Solver++, Euler) or more (Heun: two, one on the last step), so budgets are
spent over evaluations and the steps follow from the sampler's count (`StepRule.evaluations`). A budget B
is spent either as a fixed k per evaluation (the number of steps follows) or over a fixed number of steps S
(the iterations follow and are spread over the evaluations by an allocation profile). Every function here
is pure, and every allocation spends exactly what it is given: integers >= 1 each, summing to the total.

Profiles, in sampling order (first step = noisiest):
- `constant`    as even as possible; the remainder spread evenly over the trajectory, not at one end
- `increasing`  more iterations as sampling proceeds toward the clean image (the paper's text)
- `decreasing`  more iterations at the noisy start
- `released`    the released code's arrangement: its "increasing" weights 0.5 → 1.5 over the timestep,
                consumed from the noisiest step, i.e. the most iterations first (`decreasing` at ratio 3)

A ramp follows the released code's form: every step gets 1 iteration, and the remaining ones are shared
in proportion to weights that grow linearly from 1 to `ratio`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpdm.config import ModelConfig
from fpdm.diffusion.samplers import SAMPLERS

PROFILES = ("constant", "increasing", "decreasing", "released")
DEFAULT_RATIO = 3.0


class BudgetError(ValueError):
    """A budget that cannot be spent exactly with the requested settings; the message says what can."""


def step_cost(cfg: ModelConfig, iters: int = 0) -> int:
    """Blocks one sampling step costs: `depth` for DiT, `pre + iters + post` for FPDM."""
    return cfg.depth if cfg.arch == "dit" else cfg.pre_depth + iters + cfg.post_depth


def _spread(count: int, n: int) -> np.ndarray:
    """`count` of `n` slots, evenly spaced and centred (no end of the trajectory is favoured)."""
    picks = np.zeros(n, dtype=np.int64)
    if count:
        picks[((np.arange(count) + 0.5) * n / count).astype(np.int64)] = 1
    return picks


def allocate(total: int, steps: int, profile: str = "constant", ratio: float = DEFAULT_RATIO) -> list[int]:
    """Split `total` iterations over `steps` steps (sampling order), each >= 1, summing exactly to total."""
    if profile not in PROFILES:
        raise ValueError(f"unknown allocation profile {profile!r}; expected one of {PROFILES}")
    if steps < 1:
        raise BudgetError(f"need at least one sampling step, got {steps}")
    if total < steps:
        raise BudgetError(f"{total} iterations cannot give each of {steps} steps at least one")
    if ratio < 1:
        raise ValueError(f"--ratio must be >= 1 (the ramp's largest over smallest weight), got {ratio}")
    extra = total - steps
    if profile == "constant" or steps == 1 or (ratio == 1 and profile != "released"):
        return (1 + extra // steps + _spread(extra % steps, steps)).tolist()
    r = 3.0 if profile == "released" else ratio
    weights = np.linspace(1.0, r, steps)  # increasing in sampling order
    if profile in ("decreasing", "released"):
        weights = weights[::-1]
    target = extra * weights / weights.sum()
    alloc = np.floor(target).astype(np.int64)
    short = extra - int(alloc.sum())
    # Largest remainders first; ties (equal targets) go to the step with the larger weight, which keeps the
    # allocation monotone like its weights.
    order = np.lexsort((-weights, -(target - alloc)))
    alloc[order[:short]] += 1
    return (1 + alloc).tolist()


@dataclass(frozen=True)
class BudgetPlan:
    """What a budget buys: the sampler's steps, one iteration count per model evaluation (empty for DiT)
    and the blocks it costs per sample."""

    steps: int
    iters: tuple[int, ...]
    blocks: int  # per sample, = the budget when one was given


def _evaluations(sampler: str, steps: int) -> int:
    return SAMPLERS[sampler].evaluations(steps)


def _steps_for(sampler: str, evals: int) -> int | None:
    return SAMPLERS[sampler].steps_for(evals)


def _nearby(sampler: str, evals: int, cost: int) -> str:
    """Feasible budgets next to `evals` evaluations of `cost` blocks each, as text."""
    below = next((e for e in range(evals, 0, -1) if _steps_for(sampler, e)), None)
    above = next(e for e in range(evals + 1, 2 * evals + 3) if _steps_for(sampler, e))
    return " or ".join(f"{e * cost} ({_steps_for(sampler, e)} steps)" for e in (below, above) if e)


def plan_budget(cfg: ModelConfig, budget: int | None = None, *, iters: int | None = None,
                steps: int | None = None, profile: str = "constant",
                ratio: float = DEFAULT_RATIO, sampler: str = "ddpm") -> BudgetPlan:
    """Turn (budget, iters | steps) into a per-evaluation plan that spends the budget exactly with
    `sampler`. With the budget alone, an FPDM takes the constant k nearest its default (depth - pre - post)
    that spends it exactly (a tie goes to the smaller k, more steps).

    Without a budget, `steps` (and `iters` for FPDM, default depth - pre - post) are used as given."""
    fixed = 0 if cfg.arch == "dit" else cfg.pre_depth + cfg.post_depth
    per_step = "" if _evaluations(sampler, 5) == 5 else f" ({sampler}: {_evaluations(sampler, 5)} " \
        "evaluations for 5 steps)"
    if cfg.arch == "dit":
        if iters is not None:
            raise BudgetError("--iters applies to FPDM checkpoints only; a DiT evaluation always costs its "
                              "depth")
        if budget is None:
            if steps is None:
                raise BudgetError("give --steps or --budget")
            return BudgetPlan(steps, (), _evaluations(sampler, steps) * cfg.depth)
        if budget < cfg.depth:
            raise BudgetError(f"budget {budget} is below one step of the depth-{cfg.depth} DiT; the smallest "
                              f"is {cfg.depth} (1 step)")
        nearby = _nearby(sampler, budget // cfg.depth, cfg.depth)
        if budget % cfg.depth:
            raise BudgetError(f"budget {budget} is not a multiple of the DiT depth {cfg.depth}; feasible "
                              f"nearby: {nearby}{per_step}")
        n = _steps_for(sampler, budget // cfg.depth)
        if n is None:
            raise BudgetError(f"budget {budget} is {budget // cfg.depth} evaluations of the depth-"
                              f"{cfg.depth} DiT, which no number of {sampler} steps makes{per_step}; "
                              f"feasible nearby: {nearby}")
        if steps is not None and steps != n:
            raise BudgetError(f"--steps {steps} of a depth-{cfg.depth} DiT costs "
                              f"{_evaluations(sampler, steps) * cfg.depth} blocks, not the budget {budget}")
        return BudgetPlan(n, (), budget)
    if budget is None:
        if steps is None:
            raise BudgetError("give --steps or --budget")
        if iters is not None and iters < 0:
            raise BudgetError(f"--iters must be >= 0 (0 skips the fixed-point layer), got {iters}")
        k = max(1, cfg.depth - fixed) if iters is None else iters
        e = _evaluations(sampler, steps)
        return BudgetPlan(steps, (k,) * e, e * (fixed + k))
    if iters is not None and steps is not None:
        raise BudgetError("with --budget give one of --iters (steps follow) or --steps (iterations follow), "
                          "not both")
    if iters is None and steps is None:  # the budget alone: the constant k nearest the model's own
        pairs = feasible_pairs(cfg, budget, sampler=sampler)
        if not pairs:
            raise BudgetError(f"budget {budget} is below one step: a step costs at least {fixed + 1} blocks "
                              f"(pre {cfg.pre_depth} + 1 iteration + post {cfg.post_depth}){per_step}")
        own = max(1, cfg.depth - fixed)
        iters = min(pairs, key=lambda p: (abs(p[0] - own), p[0]))[0]  # a tie goes to more steps
    if iters is not None:
        if iters < 1:
            raise BudgetError(f"--iters must be >= 1, got {iters}")
        cost = fixed + iters
        if budget < cost:
            raise BudgetError(f"budget {budget} is below one step: a step costs {cost} blocks (pre "
                              f"{cfg.pre_depth} + {iters} iterations + post {cfg.post_depth})")
        e = budget // cost
        n = _steps_for(sampler, e) if budget % cost == 0 else None
        if n is None:
            parts = f"(pre {cfg.pre_depth} + {iters} iterations + post {cfg.post_depth})"
            what = f"a multiple of {cost} blocks per step {parts}" if budget % cost else \
                f"{e} evaluations of {cost} blocks {parts}, which no number of {sampler} steps makes"
            raise BudgetError(f"budget {budget} is {'not ' if budget % cost else ''}{what}{per_step}; "
                              f"feasible nearby: {_nearby(sampler, e, cost)}; or give --steps instead")
        return BudgetPlan(n, (iters,) * e, budget)
    assert steps is not None
    e = _evaluations(sampler, steps)
    total = budget - e * fixed
    if steps < 1 or total < e:
        most = max((n for n in range(1, budget + 1) if _evaluations(sampler, n) * (fixed + 1) <= budget),
                   default=0)
        raise BudgetError(f"budget {budget} cannot run {steps} steps: each evaluation costs at least "
                          f"{fixed + 1} blocks (pre + 1 iteration + post), so at most {most} steps fit"
                          f"{per_step}")
    return BudgetPlan(steps, tuple(allocate(total, e, profile, ratio)), budget)


def feasible_pairs(cfg: ModelConfig, budget: int, max_iters: int | None = None,
                   sampler: str = "ddpm") -> list[tuple[int, int]]:
    """(iterations per evaluation, steps) pairs that spend `budget` exactly with a constant k (FPDM) or
    [(0, steps)] for DiT, with `sampler`'s evaluations per step."""
    if cfg.arch == "dit":
        whole = budget % cfg.depth == 0 and budget >= cfg.depth
        n = _steps_for(sampler, budget // cfg.depth) if whole else None
        return [(0, n)] if n else []
    fixed = cfg.pre_depth + cfg.post_depth
    top = budget - fixed if max_iters is None else min(max_iters, budget - fixed)
    pairs = [(k, _steps_for(sampler, budget // (fixed + k))) for k in range(1, top + 1)
             if budget % (fixed + k) == 0]
    return [(k, n) for k, n in pairs if n]


def forward_flops(cfg: ModelConfig, iters: int = 0) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one forward for one sample, as this package computes
    it (the fixed-point layer's injection work hoisted out of the loop). Elementwise ops are not counted.

    One fixed-point iteration costs a plain block plus the injection MLP's z-half of fc1 and fc2 (8·T·D²),
    which is why block counts alone flatter FPDM a little; report both."""
    d, p = cfg.hidden_size, cfg.patch_size
    t = (cfg.input_size // p) ** 2
    c_out = cfg.in_channels * (2 if cfg.learn_sigma else 1)
    embed = 2 * t * p * p * cfg.in_channels * d + 2 * 256 * d + 2 * d * d
    block_tokens = t * (24 * d * d + 4 * t * d)  # qkv, proj, attention scores and mix, 4x MLP
    block = block_tokens + 12 * d * d  # + adaLN modulation, per sample
    head = 2 * d * 2 * d + 2 * t * d * p * p * c_out
    if cfg.arch == "dit":
        return embed + cfg.depth * block + head
    once = 2 * t * d * d + 4 * t * d * d + 12 * d * d  # injection W, u-half of fc1, fixed block's adaLN
    per_iter = block_tokens + 8 * t * d * d
    return embed + (cfg.pre_depth + cfg.post_depth) * block + once + iters * per_iter + head
