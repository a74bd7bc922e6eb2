"""The Fashion-MNIST study's declaration: its scales, models (FPDM-T/4 with two S-JFB ranges and a second
training seed, DiT-T/4 at depth 28, the Table 3 / 4 training ablations), and its cells in three stages —
selection (seeds of block 8, disjoint from the evaluation blocks), evaluation of what selection picked, and
cells derived from measured evaluation results (equal FLOPs and wall-clock, extra seed blocks where a
verdict is closer than 2 s.e.). The report and the run: `fpdm.studies.fashion`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpdm.diffusion.samplers import SAMPLERS
from fpdm.diffusion.schedules import SPACINGS
from fpdm.studies.engine import EvalSpec, TrainSpec, mean_se, paired_diffs
from fpdm.studies.selection import best_configs, config_of, mean_fid, select_rows

# ------------------------------------------------------------------------------------------------ scales


@dataclass(frozen=True)
class FashionScale:
    """Sizes of the Fashion-MNIST study. Changing any field re-keys every evaluation cell."""

    train_steps: int  # the main models: the Fashion recipe's length
    ablation_steps: int  # the Table 3 / 4 trainings (shorter: the CPU budget)
    batch_size: int
    lr: float
    warmup_steps: int
    num_samples: int  # per evaluation block
    sampling_seeds: int  # evaluation blocks 0, 1, ...
    max_seed_blocks: int  # a headline verdict closer than 2 s.e. gets blocks up to this many
    select_samples: int  # the selection block's samples
    budgets: tuple[int, ...]  # 2, 5, 10, 20 steps of DiT-28
    k_grid: tuple[int, ...]  # FPDM's iterations per step (the feasible ones at each budget)
    ablation_budget: int  # Tables 3 and 4 are evaluated here
    ablation_ks: tuple[int, ...]  # their k, chosen on the selection seeds
    grid_budget: int  # Fig. 5-style grids
    builtins: bool  # the seed-0 FPDMs and DiT-28: the package's weights, trained by this recipe
    width: int
    heads: int

    @property
    def max_iters(self) -> int:  # what calibration may give one step
        return max(self.k_grid)


# Every model trains the Fashion recipe (configs/fashion32-*.json): AdamW 1e-3 after 500 warm-up steps,
# cosine to 0, EMA 0.9995, gradient clipping 1.0, batch 64; the main models 10,000 steps, the ablations 2,000
FASHION_FULL = FashionScale(train_steps=10_000, ablation_steps=2_000, batch_size=64, lr=1e-3,
                            warmup_steps=500, num_samples=500, sampling_seeds=2, max_seed_blocks=4,
                            select_samples=200,
                            budgets=(56, 140, 280, 560), k_grid=(1, 2, 3, 4, 5, 6, 8, 12, 18, 26),
                            ablation_budget=280, ablation_ks=(2, 5, 8, 12), grid_budget=140, builtins=True,
                            width=128, heads=4)
# a plumbing check on tiny models (width 32): every stage, table and plot, in about a minute on 2 cores
FASHION_SMOKE = FashionScale(train_steps=3, ablation_steps=2, batch_size=8, lr=1e-3, warmup_steps=1,
                             num_samples=10, sampling_seeds=2, max_seed_blocks=3, select_samples=10,
                             budgets=(56,), k_grid=(2, 5, 12), ablation_budget=56, ablation_ks=(2, 5),
                             grid_budget=56, builtins=False, width=32, heads=2)
FASHION_SCALES = {"full": FASHION_FULL, "smoke": FASHION_SMOKE}

DEPTH = 28  # DiT-28: DiT-XL's depth
SAMPLERS_STUDIED = ("ddpm", "ddim", "dpm++2m", "unipc", "heun")
ODE_SAMPLERS = ("dpm++2m", "unipc", "heun")
SELECT_BLOCK = 8  # seeds 800000…; evaluation blocks start at 0, calibration seeds at 900000
K_START = 4  # the pilot's k: the nearest feasible to it
SEED_K = (4, 8)  # the seed's smoothing optimum
PROFILE_K = 6  # Table 5: average iterations per step
TOLS = ((None, "anderson"), (0.05, "picard"))  # adaptive cells at the largest k
FPDMS = ("fpdm", "fpdm-N10M12")
SEED1 = {"fpdm-seed1": "fpdm", "fpdm-N10M12-seed1": "fpdm-N10M12"}
TABLE3 = (3, 6, 12, 24)  # N = M
TABLE4 = ((6, 6), (12, 12))  # (N, M) for JFB, multi-step JFB and S-JFB


def _recipe(scale: FashionScale) -> tuple[tuple[str, Any], ...]:
    full = scale == FASHION_FULL
    return (("lr_schedule", "cosine"), ("grad_clip", 1.0), ("ema_decay", 0.9995 if full else 0.9),
            ("log_every", 50 if full else 1), ("ckpt_every", 50 if full else 1))


def _fpdm(name: str, scale: FashionScale, mode: str, n: int, m: int, seed: int = 0,
          builtin: str | None = None) -> TrainSpec:
    train = _recipe(scale) + (("fp_mode", mode), ("fp_max_no_grad", n), ("fp_max_with_grad", m))
    return TrainSpec(name, "FPDM-T/4", overrides=(("hidden_size", scale.width), ("num_heads", scale.heads)),
                     train=train + ((("seed", seed),) if seed else ()), data="fashion-mnist", builtin=builtin)


def models(scale: FashionScale) -> dict[str, TrainSpec]:
    """The main models by name: both FPDMs on two training seeds and DiT-28 (not its second seed, ≈ 8–9
    CPU-hours on one worker, ≈ 29 of the issue's 30 with it: its training-seed noise stays unmeasured)."""
    builtin = scale.builtins
    specs = [
        _fpdm("fpdm", scale, "sjfb", 3, 3, builtin="fashion-fpdm" if builtin else None),
        _fpdm("fpdm-N10M12", scale, "sjfb", 10, 12, builtin="fashion-fpdm-n10m12" if builtin else None),
        TrainSpec("dit28", "DiT-T/4", overrides=(("depth", DEPTH), ("hidden_size", scale.width),
                                                 ("num_heads", scale.heads)),
                  train=_recipe(scale), data="fashion-mnist", builtin="fashion-dit" if builtin else None),
        _fpdm("fpdm-seed1", scale, "sjfb", 3, 3, seed=1),
        _fpdm("fpdm-N10M12-seed1", scale, "sjfb", 10, 12, seed=1),
    ]
    return {s.name: s for s in specs}


def ablations(scale: FashionScale) -> dict[str, TrainSpec]:
    """Table 3 (S-JFB, N = M) and Table 4 (JFB, multi-step JFB, S-JFB), trained `ablation_steps`."""
    out = {f"sjfb-N{n}-M{n}": _fpdm(f"sjfb-N{n}-M{n}", scale, "sjfb", n, n) for n in TABLE3}
    for n, m in TABLE4:
        for mode in ("jfb", "multistep", "sjfb"):
            out.setdefault(f"{mode}-N{n}-M{m}", _fpdm(f"{mode}-N{n}-M{m}", scale, mode, n, m))
    return out


def trainings(scale: FashionScale) -> list[tuple[TrainSpec, int]]:
    """Every training, the costliest first (so no worker idles at the end)."""
    jobs = [(s, scale.train_steps) for s in models(scale).values()]
    jobs += [(s, scale.ablation_steps) for s in ablations(scale).values()]
    return sorted(jobs, key=lambda j: -train_cost_s(j[0], j[1]))


def check_builtin(spec: TrainSpec, scale: FashionScale) -> None:
    """A built-in stands in for a training only if it was trained by this very recipe."""
    import json

    from fpdm.weights.builtin import resolve

    recipe = json.loads((Path(resolve(spec.builtin)) / "config.json").read_text()).get("recipe", {})
    want = {"steps": scale.train_steps, "batch_size": scale.batch_size, "lr": scale.lr,
            "warmup_steps": scale.warmup_steps, "data": spec.data, "model": spec.model,
            **{k: v for k, v in spec.train if k in ("lr_schedule", "grad_clip", "ema_decay", "seed")}}
    if spec.model.startswith("FPDM"):
        want |= {k: v for k, v in spec.train if k.startswith("fp_")}
    wrong = {k: (recipe.get(k), v) for k, v in want.items() if recipe.get(k) != v}
    if wrong:
        raise ValueError(f"built-in {spec.builtin} was not trained by the study's recipe for {spec.name}: "
                         + ", ".join(f"{k} {a!r} (study: {b!r})" for k, (a, b) in wrong.items()))


# ------------------------------------------------------------------------------------------------- costs

# One thread, measured on the project machine with a second process on the other core: the built-ins'
# trainings (FPDM-T/4 N = M = 3: 587 ms per step = 13.5 block units of 43.5 ms) and pilot cells of the
# built-ins (200 samples at 140 blocks: 8.5 s of sampling for DiT-28, 10.9-11.8 s for FPDM at k = 3, whose
# injection MLP makes its blocks dearer; 12-13 s per task with loading and fashion-FID)
MS_PER_TRAIN_UNIT = 43.5
# Cells, per sample and block, measured on the full run's cells (task wall-clock over samples × budget, both
# workers busy): FPDM 0.49-0.55 ms (its injection MLP makes its blocks dearer), DiT-28 0.32-0.45 ms; Anderson
# 1.11-1.18 ms for FPDM (its least-squares solve per iteration). The first plan counted 0.42 ms for every
# cell and nothing for calibration: ≈ 1.7 × too little once the later stages ran.
MS_PER_SAMPLE_BLOCK = {"fpdm": 0.53, "dit": 0.40}
ANDERSON_FACTOR = 2.1
CELL_OVERHEAD_S = 2.0  # loading, feature network, bootstrap (the test set's radii: once per worker)
# A calibrated schedule, per block of its budget (six candidate step counts, each measured against a
# reference of twice the iterations and scored on 200 samples): 1.8 s at 56 blocks, 2.1 s at 140, measured
CALIBRATION_S_PER_BLOCK = 2.1


def train_cost_s(spec: TrainSpec, steps: int) -> float:
    """Estimated CPU-seconds of a training at width 128: forward block evaluations without gradient count
    once, those with gradient three times (forward and backward); 0 for a built-in."""
    if spec.builtin:
        return 0.0
    t = dict(spec.train)
    if spec.model.startswith("DiT"):
        units = 3 * dict(spec.overrides).get("depth", DEPTH)
    else:
        n, m = t.get("fp_max_no_grad", 3), t.get("fp_max_with_grad", 3)
        grad = {"jfb": 1, "multistep": m}.get(t.get("fp_mode", "sjfb"), (1 + m) / 2)
        units = n / 2 + 3 * (2 + grad)
    return steps * units * MS_PER_TRAIN_UNIT / 1000


def cell_cost_s(spec: EvalSpec, samples: int) -> float:
    """Estimated CPU-seconds of one cell of `samples` samples, without its calibration (a schedule is
    measured once for the cells of every seed block: `calibration_cost_s`)."""
    ms = MS_PER_SAMPLE_BLOCK["dit" if spec.train.model.startswith("DiT") else "fpdm"]
    if spec.solver == "anderson":
        ms *= ANDERSON_FACTOR
    return CELL_OVERHEAD_S + samples * spec.budget * ms / 1000


def calibration_cost_s(budget: int) -> float:
    """Estimated CPU-seconds of measuring one calibrated schedule for `budget` blocks."""
    return CALIBRATION_S_PER_BLOCK * budget


# ------------------------------------------------------------------------------------------------- cells


def feasible_ks(budget: int, sampler: str, ks: tuple[int, ...]) -> list[int]:
    """k of `ks` whose constant (1 + k + 1)-block evaluations spend `budget` exactly with `sampler`."""
    rule = SAMPLERS[sampler]
    return [k for k in ks if budget % (2 + k) == 0 and rule.steps_for(budget // (2 + k))]


def _dit_ok(budget: int, sampler: str) -> bool:
    return budget % DEPTH == 0 and SAMPLERS[sampler].steps_for(budget // DEPTH) is not None


def _combos() -> list[tuple[str, str]]:
    return [(sampler, spacing) for sampler in SAMPLERS_STUDIED for spacing in SPACINGS]


def _sel(spec: TrainSpec, steps: int, budget: int, **kw: Any) -> EvalSpec:
    return EvalSpec("fashion-select", spec, steps, budget, seed_block=SELECT_BLOCK, **kw)


def pilot_cells(scale: FashionScale) -> list[EvalSpec]:
    """Stage 1 (selection seeds): DiT-28 with every sampler and spacing; each FPDM with every sampler and
    spacing at the k nearest K_START; each ablation at its k grid (DDPM) on the ablation budget."""
    m, steps, out = models(scale), scale.train_steps, []
    for budget in scale.budgets:
        for sampler, spacing in _combos():
            if _dit_ok(budget, sampler):
                out.append(_sel(m["dit28"], steps, budget, sampler=sampler, spacing=spacing))
            ks = feasible_ks(budget, sampler, scale.k_grid)
            if ks:
                k = min(ks, key=lambda v: (abs(v - K_START), v))
                out += [_sel(m[name], steps, budget, iters=k, sampler=sampler, spacing=spacing)
                        for name in FPDMS]
    for spec in ablations(scale).values():
        out += [_sel(spec, scale.ablation_steps, scale.ablation_budget, iters=k)
                for k in feasible_ks(scale.ablation_budget, "ddpm", scale.ablation_ks)]
    return out


def _select(results: list[dict], name: str, budget: int, sampler: str | None = None) -> list[dict]:
    return select_rows(results, "fashion-select", name, budget, sampler)


def best(results: list[dict], name: str, budget: int, sampler: str | None = None, top: int = 1
         ) -> list[tuple[str, str, int | None, bool]]:
    """The best configurations (sampler, spacing, k, reuse) of a model on the selection seeds."""
    return best_configs(_select(results, name, budget, sampler), SAMPLERS_STUDIED, top)


def selection_fid(selected: list[dict], name: str, budget: int, config: tuple) -> float:
    """Mean selection-seed FID of one configuration (sampler, spacing, k, reuse) of a model."""
    return mean_fid([r for r in _select(selected, name, budget, config[0]) if config_of(r) == tuple(config)])


def best_ode(results: list[dict], name: str, budget: int) -> tuple[str, str, int | None, bool] | None:
    found = [c for s in ODE_SAMPLERS for c in best(results, name, budget, s)]
    return min(found, key=lambda c: (selection_fid(results, name, budget, c), SAMPLERS_STUDIED.index(c[0]))) \
        if found else None


def grid_cells(scale: FashionScale, pilot: list[dict]) -> list[EvalSpec]:
    """Stage 2 (selection seeds): each FPDM over its k grid with DDPM, DDIM (uniform spacing, as the seed)
    and its best ODE sampler at the spacing the pilot picked for it."""
    m, steps, out = models(scale), scale.train_steps, []
    for budget in scale.budgets:
        for name in FPDMS:
            ode = best_ode(pilot, name, budget)
            combos = [("ddpm", "uniform"), ("ddim", "uniform")] + ([ode[:2]] if ode else [])
            for sampler, spacing in combos:
                out += [_sel(m[name], steps, budget, iters=k, sampler=sampler, spacing=spacing)
                        for k in feasible_ks(budget, sampler, scale.k_grid)]
    return out


def seed_k(ks: list[int]) -> int | None:
    """The feasible k nearest the seed's optimum range 4–8."""
    lo, hi = SEED_K
    return min(ks, key=lambda k: (max(lo - k, 0, k - hi), abs(k - (lo + hi) / 2))) if ks else None


def _ev(spec: TrainSpec, train_steps: int, budget: int, blocks: int, grid: bool = False, **kw: Any
        ) -> list[EvalSpec]:
    return [EvalSpec("fashion", spec, train_steps, budget, seed_block=b,
                     labels={"grid": True} if grid and b == 0 else {}, **kw) for b in range(blocks)]


def figure_cells(scale: FashionScale, selected: list[dict]) -> dict[str, list[EvalSpec]]:
    """Fig. 5's columns at `grid_budget` on the first evaluation seeds, per FPDM: DiT-28 at its best DDPM
    spacing, then the FPDM with DDPM at every k its grid ran there (uniform spacing, as the grid)."""
    m, steps, budget, out = models(scale), scale.train_steps, scale.grid_budget, {}
    top = best(selected, "dit28", budget, "ddpm")
    for name in FPDMS:
        ks = sorted({r["settings"]["iters"] for r in _select(selected, name, budget, "ddpm")
                     if r["settings"].get("spacing", "uniform") == "uniform"})
        cols = [EvalSpec("fashion", m[name], steps, budget, iters=k) for k in ks]
        if top and cols:
            sampler, spacing, _, _ = top[0]
            dit = EvalSpec("fashion", m["dit28"], steps, budget, sampler=sampler, spacing=spacing)
            out[name] = [dit, *cols]
    return out


def evaluation_cells(scale: FashionScale, selected: list[dict]) -> list[EvalSpec]:
    """On the evaluation blocks, from what the selection seeds picked: per model and budget its best
    configuration overall and per sampler; per FPDM its best with reuse, the seed's k and the largest k
    (DDPM: Fig. 4), the Table 5 profiles (at the two largest budgets), Anderson and --tol at the largest
    k, a calibrated schedule; the second training seeds at seed 0's best; the ablations at their best k."""
    m, steps, n, out = models(scale), scale.train_steps, scale.sampling_seeds, []
    for budget in scale.budgets:
        for name in ("dit28", *FPDMS):
            configs = {c for s in SAMPLERS_STUDIED for c in best(selected, name, budget, s)}
            top = best(selected, name, budget)
            if name in FPDMS and top:
                configs.add(top[0][:3] + (True,))
            for sampler, spacing, k, reuse in sorted(configs, key=str):
                grid = budget == scale.grid_budget and sampler == "ddpm" and not reuse
                out += _ev(m[name], steps, budget, n, grid=grid, iters=k, sampler=sampler, spacing=spacing,
                           reuse=reuse)
            if name == "dit28":
                continue
            ks = feasible_ks(budget, "ddpm", scale.k_grid)
            for k in sorted({seed_k(ks), max(ks)} if ks else set()):
                out += _ev(m[name], steps, budget, n, grid=budget == scale.grid_budget, iters=k)
            if ks:
                for tol, solver in TOLS:
                    out += _ev(m[name], steps, budget, n, iters=max(ks), tol=tol, solver=solver)
            if budget in scale.budgets[-2:] and budget // (2 + PROFILE_K) >= 2:
                for profile in ("constant", "increasing", "decreasing"):
                    out += _ev(m[name], steps, budget, n, steps=budget // (2 + PROFILE_K), profile=profile)
            out += _ev(m[name], steps, budget, n, calibrated=True)
        for seed1, base in SEED1.items():
            if top := best(selected, base, budget):
                sampler, spacing, k, _ = top[0]
                out += _ev(m[seed1], steps, budget, n, iters=k, sampler=sampler, spacing=spacing)
    for name, spec in ablations(scale).items():
        if top := best(selected, name, scale.ablation_budget):
            out += _ev(spec, scale.ablation_steps, scale.ablation_budget, n, iters=top[0][2])
    return out


# --------------------------------------------------------------------------------- derived from results


def rows(results: list[dict], **match: Any) -> list[dict]:
    """Evaluation rows whose settings have every `match` value (spacing "uniform" when absent)."""
    out = []
    for r in results:
        s = r["settings"] | {"spacing": r["settings"].get("spacing", "uniform")}
        if s["experiment"] == match.get("experiment", "fashion") and all(
                s.get(k) == v for k, v in match.items() if k != "experiment"):
            out.append(r)
    return sorted(out, key=lambda r: r["settings"]["seed_block"])


def config_rows(results: list[dict], name: str, budget: int, config: tuple, **extra: Any) -> list[dict]:
    sampler, spacing, k, reuse = config
    return [r for r in rows(results, train=name, budget=budget, sampler=sampler, spacing=spacing, iters=k,
                            reuse=reuse, profile="constant", tol=None, solver="picard", **extra)
            if not r["settings"].get("calibrated")]


def matched_cells(scale: FashionScale, selected: list[dict], results: list[dict]) -> list[dict[str, Any]]:
    """Per budget: FPDM's best configuration re-run at the largest budget whose FLOPs (and, separately,
    measured sampling wall-clock) do not exceed DiT-28's at its best sampler — constant k, whole
    evaluations the sampler can spend."""
    out = []
    for budget in scale.budgets:
        d_top, fp = best(selected, "dit28", budget), best_fpdm(selected, budget)
        if not d_top or fp is None:
            continue
        dit = config_rows(results, "dit28", budget, d_top[0])
        mine = config_rows(results, fp[0], budget, fp[1])
        if not dit or not mine:
            continue
        sampler, spacing, k, _ = fp[1]
        # per block: close calls give one cell more seed blocks than the other
        wall = mean_se(r["sample_wall_s"] for r in dit)[0] / mean_se(r["sample_wall_s"] for r in mine)[0]
        for kind, ratio in (("flops", dit[0]["flops_per_sample"] / mine[0]["flops_per_sample"]),
                            ("wall", wall)):
            evals = int(budget * min(ratio, 1.0) + 1e-9) // (2 + k)
            while evals > 0 and SAMPLERS[sampler].steps_for(evals) is None:
                evals -= 1
            if evals > 0:
                out.append({"kind": kind, "budget": budget, "ratio": float(ratio), "train": fp[0],
                            "config": list(fp[1]), "matched_budget": evals * (2 + k)})
    return out


def matched_eval_cells(scale: FashionScale, matched: list[dict]) -> list[EvalSpec]:
    m, out = models(scale), []
    for e in matched:
        sampler, spacing, k, _ = e["config"]
        out += [EvalSpec("fashion-matched", m[e["train"]], scale.train_steps, e["matched_budget"], iters=k,
                         sampler=sampler, spacing=spacing, seed_block=b) for b in range(scale.sampling_seeds)]
    return out


def best_fpdm(selected: list[dict], budget: int, sampler: str | None = None
              ) -> tuple[str, tuple] | None:
    """(model, configuration) of the lowest selection FID of both FPDMs (no reuse)."""
    found = [(name, c, selection_fid(selected, name, budget, c))
             for name in FPDMS for c in best(selected, name, budget, sampler)]
    return min(found, key=lambda f: f[2])[:2] if found else None


def close_calls(scale: FashionScale, selected: list[dict], results: list[dict]) -> list[EvalSpec]:
    """More evaluation blocks (up to `max_seed_blocks`) for the headline pairs (each at its own best and
    per sampler) whose paired difference is within 2 s.e."""
    m, out = models(scale), []
    for budget in scale.budgets:
        for sampler in (None, *SAMPLERS_STUDIED):
            d_top, fp = best(selected, "dit28", budget, sampler), best_fpdm(selected, budget, sampler)
            if not d_top or fp is None:
                continue
            a = config_rows(results, fp[0], budget, fp[1])
            b = config_rows(results, "dit28", budget, d_top[0])
            diffs = paired_diffs(a, b)
            if len(diffs) < 2:
                continue
            mean, se = mean_se(diffs)
            if abs(mean) < 2 * se:
                for name, (smp, spacing, k, reuse) in (("dit28", d_top[0]), fp):
                    out += [EvalSpec("fashion", m[name], scale.train_steps, budget, iters=k, sampler=smp,
                                     spacing=spacing, reuse=reuse, seed_block=b)
                            for b in range(scale.sampling_seeds, scale.max_seed_blocks)]
    return list(dict.fromkeys(out))
