"""The paper-ratio study's declaration: its scales, models (DiT-28, DiT-12 and the FPDMs), budgets and
cells, and the equal-FLOPs / equal-wall-clock cells derived from measured results. The report and the run:
`fpdm.studies.ratio`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpdm.studies.engine import EvalSpec, TrainSpec

# ------------------------------------------------------------------------------------------------ scales


@dataclass(frozen=True)
class RatioScale:
    """Sizes of the paper-ratio study. Changing any field re-keys every evaluation cell."""

    train_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    snapshot_steps: int  # every model also keeps this step's checkpoint: the convergence check
    num_samples: int  # per sampling-seed block
    sampling_seeds: int
    budgets: tuple[int, ...]  # in blocks: 2, 5, 10, 20 steps of the depth-28 DiT
    small_budgets: tuple[int, ...]  # 2, 5, 10, 20 steps of the depth-12 DiT
    max_iters: int  # FPDM's k grid: every feasible k in 1..max_iters
    thin_iters: tuple[int, ...]  # k tried for DDIM, reuse and the second training seed (feasible ones)
    grid_budget: int  # sample grids (Fig. 5)


# The demo recipe (3,000 steps, batch 64, AdamW 1e-3, 100 warm-up steps), which the issue accepts when the
# curves flatten; the kept 1,500-step checkpoints measure how much the second half still changed.
RATIO_FULL = RatioScale(train_steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, snapshot_steps=1500,
                        num_samples=500, sampling_seeds=3, budgets=(56, 140, 280, 560),
                        small_budgets=(24, 60, 120, 240), max_iters=26, thin_iters=(2, 5, 8, 12, 18, 26),
                        grid_budget=140)
# --quick shares its 15 minutes with the first study (which takes ≈ 10.7 of them): toy trainings, few samples,
# one DiT-12 budget
RATIO_QUICK = RatioScale(train_steps=40, batch_size=64, lr=1e-3, warmup_steps=10, snapshot_steps=20,
                         num_samples=32, sampling_seeds=2, budgets=(56, 140), small_budgets=(24,),
                         max_iters=26, thin_iters=(2, 5, 12), grid_budget=56)
RATIO_TINY = RatioScale(train_steps=4, batch_size=16, lr=1e-3, warmup_steps=1, snapshot_steps=2,
                        num_samples=12, sampling_seeds=2, budgets=(56,), small_budgets=(24,), max_iters=6,
                        thin_iters=(2, 5), grid_budget=56)
RATIO_SCALES = {"full": RATIO_FULL, "quick": RATIO_QUICK, "tiny": RATIO_TINY}

DEEP, SHALLOW = 28, 12  # the baselines' depths
TOLS = ((None, "anderson"), (0.05, "picard"), (0.05, "anderson"), (0.01, "picard"))  # adaptive cells
PROFILE_K, ADAPTIVE_K = 6, 12  # average iterations per step of the Table 5 and adaptive cells
CONVERGENCE_K = 5  # k of the FPDM cells in the convergence check (feasible at every seed budget)


def models(scale: RatioScale) -> dict[str, TrainSpec]:
    """The study's trainings by name. All width 128, 4 heads, patch 2 (the T size), same recipe."""
    keep = (("keep_every", scale.snapshot_steps),)
    released = (("fp_max_no_grad", 10), ("fp_max_with_grad", 12))  # the released S-JFB range
    seed1 = (("seed", 1),)
    specs = [
        TrainSpec("dit28", "DiT-T/2", overrides=(("depth", DEEP),), train=keep),
        TrainSpec("dit12", "DiT-T/2", overrides=(("depth", SHALLOW),), train=keep),
        TrainSpec("fpdm", "FPDM-T/2", train=keep),
        TrainSpec("fpdm-N10M12", "FPDM-T/2", train=released + keep),
        TrainSpec("dit28-seed1", "DiT-T/2", overrides=(("depth", DEEP),), train=keep + seed1),
        TrainSpec("fpdm-seed1", "FPDM-T/2", train=keep + seed1),
        TrainSpec("fpdm-N10M12-seed1", "FPDM-T/2", train=released + keep + seed1),
    ]
    return {s.name: s for s in specs}


FPDMS = ("fpdm", "fpdm-N10M12")
SEED1 = {"dit28-seed1": "dit28", "fpdm-seed1": "fpdm", "fpdm-N10M12-seed1": "fpdm-N10M12"}


def families(scale: RatioScale) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """(DiT name, depth, the budgets counted in its steps)."""
    return ("dit28", DEEP, scale.budgets), ("dit12", SHALLOW, scale.small_budgets)


def feasible_iters(budget: int, max_iters: int) -> list[int]:
    """k with a constant (1 + k + 1)-block step that spends `budget` exactly."""
    return [k for k in range(1, max_iters + 1) if budget % (2 + k) == 0]


def experiments(scale: RatioScale) -> list[EvalSpec]:
    """Every evaluation cell whose settings do not depend on measured results, most decisive first."""
    m = models(scale)
    steps = scale.train_steps
    cells: list[EvalSpec] = []
    all_budgets = scale.budgets + scale.small_budgets
    for b in range(scale.sampling_seeds):
        # Fig. 4 grid and the baselines: the headline needs these
        for sampler in ("ddpm", "ddim"):
            for name, depth, budgets in families(scale):
                cells += [EvalSpec("smoothing", m[name], steps, bud, sampler=sampler, seed_block=b)
                          for bud in budgets if bud % depth == 0]
        for name in FPDMS:
            for bud in all_budgets:
                cells += [EvalSpec("smoothing", m[name], steps, bud, iters=k, seed_block=b)
                          for k in feasible_iters(bud, scale.max_iters)]
        for name in FPDMS:  # DDIM and reuse at the seed's budgets only
            for bud in scale.budgets:
                for k in feasible_iters(bud, scale.max_iters):
                    if k in scale.thin_iters:
                        cells.append(EvalSpec("smoothing", m[name], steps, bud, iters=k, sampler="ddim",
                                              seed_block=b))
                        cells.append(EvalSpec("smoothing", m[name], steps, bud, iters=k, reuse=True,
                                              seed_block=b))
        # training-seed noise beside every verdict, and whether the second half of training still mattered
        for seed1, base in SEED1.items():
            for bud in scale.budgets:
                if base.startswith("dit"):
                    cells.append(EvalSpec("training_seeds", m[seed1], steps, bud, seed_block=b))
                else:
                    cells += [EvalSpec("training_seeds", m[seed1], steps, bud, iters=k, seed_block=b)
                              for k in (CONVERGENCE_K, ADAPTIVE_K)
                              if bud % (2 + k) == 0 and k <= scale.max_iters]
        for name in ("dit28", *FPDMS):
            for bud in sorted({scale.budgets[min(1, len(scale.budgets) - 1)], scale.budgets[-1]}):
                k = None if name.startswith("dit") else CONVERGENCE_K
                cells.append(EvalSpec("convergence", m[name], steps, bud, iters=k, seed_block=b,
                                      snapshot=scale.snapshot_steps))
        # Table 5 and the adaptive solvers at the seed's own budgets (the two largest)
        for name in FPDMS:
            for bud in scale.budgets[-2:]:
                for profile in ("constant", "increasing", "decreasing"):
                    cells.append(EvalSpec("allocation", m[name], steps, bud, steps=bud // (2 + PROFILE_K),
                                          profile=profile, seed_block=b))
                for tol, solver in TOLS:
                    cells.append(EvalSpec("adaptive", m[name], steps, bud, steps=bud // (2 + ADAPTIVE_K),
                                          tol=tol, solver=solver, seed_block=b))
    # beyond the paper: schedules calibrated on other seeds (`fpdm.sampling.calibrate`), at every budget
    # (not in --quick: measuring the schedules of its 80-step models would take a third of its 15 minutes)
    calibrated = () if scale == RATIO_QUICK else all_budgets
    cells += [EvalSpec("calibrated", m[name], steps, bud, calibrated=True, seed_block=b)
              for b in range(scale.sampling_seeds) for name in FPDMS for bud in calibrated]
    return cells


def trainings(scale: RatioScale) -> list[tuple[TrainSpec, int]]:
    """Every training the cells need, longest first (the deep DiTs dominate the wall-clock)."""
    cost = {"dit28": 6, "dit12": 3, "fpdm-N10M12": 2}
    specs = {c.train for c in experiments(scale)}
    return [(s, scale.train_steps) for s in sorted(specs, key=lambda s: (-cost.get(s.name.replace(
        "-seed1", ""), 1), s.name))]


# ------------------------------------------------------------------------------- equal FLOPs / wall cells


def _rows(results: list[dict], **match: Any) -> list[dict]:
    return [r for r in results if all(r["settings"].get(k) == v for k, v in match.items())]


def best_fpdm(results: list[dict], budget: int, sampler: str) -> tuple[str, int] | None:
    """(model, k) of the lowest mean digits-FID among the FPDM smoothing cells (no reuse) at `budget` —
    picked on the evaluation seeds themselves, so the comparison is optimistic for FPDM."""
    found: dict[tuple[str, int], list[float]] = {}
    for r in _rows(results, experiment="smoothing", budget=budget, sampler=sampler, reuse=False):
        s = r["settings"]
        if s["train"] in FPDMS:
            found.setdefault((s["train"], s["iters"]), []).append(r["digits_fid"])
    return min(found, key=lambda key: (np.mean(found[key]), key)) if found else None


def equal_cost_budgets(results: list[dict], scale: RatioScale) -> list[dict[str, Any]]:
    """For each seed budget and sampler, the budget at which FPDM's best (model, k) costs no more than the
    DiT's cell in FLOPs, and in measured sampling wall-clock (rounded down to whole FPDM steps)."""
    out = []
    for budget in scale.budgets:
        for sampler in ("ddpm", "ddim"):
            best = best_fpdm(results, budget, sampler)
            dit = _rows(results, experiment="smoothing", train="dit28", budget=budget, sampler=sampler)
            if best is None or not dit:
                continue
            name, k = best
            fp = _rows(results, experiment="smoothing", train=name, budget=budget, sampler=sampler,
                       iters=k, reuse=False)
            ratios = {"flops": dit[0]["flops_per_sample"] / fp[0]["flops_per_sample"],
                      "wall": np.mean([r["sample_wall_s"] for r in dit]) / np.mean([r["sample_wall_s"]
                                                                                     for r in fp])}
            for kind, ratio in ratios.items():
                # the largest budget within the DiT's cost, spent as steps of about k iterations each
                equal = math.floor(budget * min(ratio, 1.0) + 1e-9)
                steps = max(1, round(equal / (2 + k)))
                if equal >= 3 * steps:
                    out.append({"kind": kind, "budget": budget, "sampler": sampler, "train": name, "iters": k,
                                "ratio": float(ratio), "equal_budget": equal, "steps": steps})
    return out


def derived_experiments(results: list[dict], scale: RatioScale) -> list[EvalSpec]:
    m = models(scale)
    cells = []
    for e in equal_cost_budgets(results, scale):
        for b in range(scale.sampling_seeds):
            cells.append(EvalSpec("equal_cost", m[e["train"]], scale.train_steps, e["equal_budget"],
                                  steps=e["steps"], sampler=e["sampler"], seed_block=b))
    return list(dict.fromkeys(cells))  # FLOPs and wall-clock may match the same budget: one cell
