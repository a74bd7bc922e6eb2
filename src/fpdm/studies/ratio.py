"""The paper-ratio study of `fpdm reproduce`: FPDM's cheap steps against a DiT as deep as DiT-XL.

The seed compares FPDM with DiT-XL/2, whose step costs 28 block evaluations while an FPDM step costs
pre + k + post; the first study's DiT has depth 6, so FPDM could never buy more than twice its timesteps.
Here the baselines are width-128 DiTs of depth 28 (DiT-XL's) and 12 (DiT-S/B's), budgets are counted in
their steps (2, 5, 10, 20), and FPDM is tried at every feasible k up to 26 — the regime of the seed's claim.

Tasks and caching are the first study's (`reproduce.py`); this module lists the models and cells and writes
the study's report under `<out>/ratio/`. Cells that depend on measured results (equal FLOPs and equal
sampling wall-clock, which re-use the best k found on the grid) are derived from the cached grid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fpdm.studies.digits import EvalSpec, TrainSpec, _fmt, _mean_se, _paired, _run_tasks, calibrated_section

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
    return cells


# ----------------------------------------------------------------------------------------------- report


def _key_rows(results: list[dict], experiment: str, **match: Any) -> list[dict]:
    return _rows(results, experiment=experiment, **match)


def _fid(rows: list[dict]) -> float:
    return _mean_se(r["digits_fid"] for r in rows)[0]


def _last_loss(checkpoint: str, n: int = 5) -> tuple[float | None, list[dict]]:
    log_path = Path(checkpoint).parent / "log.jsonl"
    if not log_path.exists():
        return None, []
    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    return (float(np.mean([r["loss"] for r in recs[-n:]])) if recs else None), recs


def _smoothing(results: list[dict], name: str, budget: int, sampler: str = "ddpm", k: int | None = None,
               reuse: bool = False) -> list[dict]:
    return _rows(results, experiment="smoothing", train=name, budget=budget, sampler=sampler, iters=k,
                 reuse=reuse)


def headline(results: list[dict], scale: RatioScale) -> list[str]:
    """Markdown rows: best FPDM against the DiT of each budget family, at equal blocks, FLOPs and wall."""
    lines = ["| budget (blocks) | DiT | sampler | DiT steps: FID | FPDM best (model, k, steps) | FPDM FID | "
             "FPDM − DiT (paired) | training-seed noise (FPDM, DiT) | GFLOPs/sample FPDM / DiT | "
             "ms/sample FPDM / DiT |", "|---|---|---|---|---|---|---|---|---|---|"]
    seeds = training_seed_noise(results, scale)
    for family, _, budgets in families(scale):
        for budget in budgets:
            for sampler in ("ddpm", "ddim"):
                dit = _smoothing(results, family, budget, sampler)
                best = best_fpdm(results, budget, sampler)
                if not dit or best is None:
                    continue
                fp = _smoothing(results, best[0], budget, sampler, best[1])
                noise = f"{seeds.get((best[0], budget), '–')}, {seeds.get((family, budget), '–')}"
                ms = [1000 * np.mean([r["sample_wall_s"] for r in rows]) / scale.num_samples
                      for rows in (fp, dit)]
                gf = [rows[0]["flops_per_sample"] / 1e9 for rows in (fp, dit)]
                lines.append(f"| {budget} | {family} | {sampler} | {dit[0]['steps']}: {_fmt(dit)} | "
                             f"{best[0]}, {best[1]}, {fp[0]['steps']} | {_fmt(fp)} | {_paired(fp, dit)} | "
                             f"{noise} | {gf[0]:.3f} / {gf[1]:.3f} | {ms[0]:.2f} / {ms[1]:.2f} |")
    return lines


def equal_cost_rows(results: list[dict], scale: RatioScale) -> list[str]:
    lines = ["| budget | sampler | cost matched | DiT-28 cost / FPDM cost at equal blocks | "
             "FPDM (model, k) at blocks | FPDM FID | DiT-28 FID | FPDM − DiT (paired) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in equal_cost_budgets(results, scale):
        fp = _rows(results, experiment="equal_cost", train=e["train"], budget=e["equal_budget"],
                   steps=e["steps"], sampler=e["sampler"])
        dit = _smoothing(results, "dit28", e["budget"], e["sampler"])
        if fp and dit:
            lines.append(f"| {e['budget']} | {e['sampler']} | {e['kind']} | {e['ratio']:.3f} | "
                         f"{e['train']}, ≈{e['iters']} at {e['equal_budget']} ({e['steps']} steps) | "
                         f"{_fmt(fp)} | {_fmt(dit)} | {_paired(fp, dit)} |")
    return lines


def training_seed_noise(results: list[dict], scale: RatioScale) -> dict[tuple[str, int], str]:
    """Paired seed 1 − seed 0 per (model, budget) (FPDM: the k nearest its best at that budget)."""
    out = {}
    for seed1, base in SEED1.items():
        for budget in scale.budgets:
            rows = _rows(results, experiment="training_seeds", train=seed1, budget=budget)
            if not rows:
                continue
            ks = sorted({r["settings"]["iters"] for r in rows}, key=lambda k: -1 if k is None else k)
            best = best_fpdm(results, budget, "ddpm")
            k = ks[0] if best is None or None in ks else min(ks, key=lambda k: abs(k - best[1]))
            mine = [r for r in rows if r["settings"]["iters"] == k]
            out[(base, budget)] = _paired(mine, _smoothing(results, base, budget, "ddpm", k))
    return out


def optimum_k(results: list[dict], scale: RatioScale) -> list[str]:
    lines = ["| budget | model | sampler | best k (steps): FID | k within 2 paired s.e. of the best | "
             "worst k: FID |", "|---|---|---|---|---|---|"]
    for budget in scale.budgets + scale.small_budgets:
        for name in FPDMS:
            for sampler in ("ddpm", "ddim"):
                ks = sorted({r["settings"]["iters"] for r in _smoothing_any(results, name, budget, sampler)})
                if not ks:
                    continue
                fids = {k: _fid(_smoothing(results, name, budget, sampler, k)) for k in ks}
                best = min(fids, key=fids.get)
                ref = _smoothing(results, name, budget, sampler, best)
                close = []
                for k in ks:
                    d = [r["digits_fid"] for r in _smoothing(results, name, budget, sampler, k)]
                    diff = np.asarray(d) - np.asarray([r["digits_fid"] for r in ref])[:len(d)]
                    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
                    if diff.mean() <= 2 * se or k == best:
                        close.append(str(k))
                worst = max(fids, key=fids.get)
                lines.append(f"| {budget} | {name} | {sampler} | {best} ({ref[0]['steps']}): {_fmt(ref)} | "
                             f"{', '.join(close)} | {worst}: {fids[worst]:.2f} |")
    return lines


def _smoothing_any(results: list[dict], name: str, budget: int, sampler: str) -> list[dict]:
    return _rows(results, experiment="smoothing", train=name, budget=budget, sampler=sampler, reuse=False)


def write_report(root: Path, scale_name: str, scale: RatioScale, summaries: list[dict], results: list[dict]
                 ) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    lines = [f"# fpdm reproduce: the paper-ratio study ({scale_name})", "",
             "FPDM-T/2 (pre 1 + k iterations + post 1 blocks per step) against width-128 DiTs of depth 28 "
             "(DiT-XL's) and 12, at block budgets counted in the DiTs' steps (2, 5, 10, 20).",
             f"Scale: `{json.dumps(asdict(scale))}`.",
             f"Metric: digits-FID vs the 297 held-out digits (lower is better), mean ± s.e. over "
             f"{scale.sampling_seeds} sampling-seed blocks of {scale.num_samples} samples; every cell uses "
             "the same noise and labels per block, so differences are paired. DDPM unless said.", "",
             "## Trainings", "", "| name | steps | parameters | ms/step | peak RSS MiB | loss (last 5 logs) "
             f"| loss at step {scale.snapshot_steps} |", "|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for s in summaries:
        last, recs = _last_loss(s["checkpoint"])
        at = [r["loss"] for r in recs if r["step"] <= scale.snapshot_steps][-5:]
        lines.append(f"| {s['name']} | {s['step']} | {s['parameters']:,} | {s['ms_per_step']} | "
                     f"{s['peak_rss_mib']} | {last if last is None else f'{last:.4f}'} | "
                     f"{f'{np.mean(at):.4f}' if at else '–'} |")
        if recs:
            ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], lw=1, label=s["name"])
    ax.axvline(scale.snapshot_steps, color="grey", ls=":", lw=1)
    ax.set(xlabel="training step", ylabel="training loss", yscale="log", title="training curves")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "training.png", dpi=120)
    plt.close(fig)
    lines += ["", "![training curves](training.png)", "", "### Convergence: the kept checkpoint at step "
              f"{scale.snapshot_steps} against the final one", "",
              "| model | budget | k | FID at the kept step | final FID | final − kept (paired) |",
              "|---|---|---|---|---|---|"]
    for r0 in _rows(results, experiment="convergence", seed_block=0):
        s = r0["settings"]
        kept = _rows(results, experiment="convergence", train=s["train"], budget=s["budget"],
                     iters=s["iters"])
        final = _smoothing(results, s["train"], s["budget"], "ddpm", s["iters"])
        lines.append(f"| {s['train']} | {s['budget']} | {s['iters'] or '–'} | {_fmt(kept)} | "
                     f"{_fmt(final) if final else '–'} | {_paired(final, kept) if final else '–'} |")
    lines += ["", "## Headline: FPDM (best k) against DiT at equal block budget", "",
              "Best k picked on the evaluation seeds themselves (optimistic for FPDM). Training-seed noise: "
              "paired seed 1 − seed 0 of the same model at that budget (FPDM at the k nearest the best).", ""]
    lines += headline(results, scale)
    lines += ["", "### Equal FLOPs and equal sampling wall-clock (depth-28 budgets)", "",
              "FPDM's best (model, k) re-run at the largest budget whose FLOPs (or measured ms/sample) do "
              "not exceed the DiT's at that budget; a ratio ≥ 1 means FPDM was already cheaper.", ""]
    lines += equal_cost_rows(results, scale)
    # Fig. 4: one panel per budget
    budgets = scale.budgets + scale.small_budgets
    cols = len(scale.budgets)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7), squeeze=False)
    lines += ["", "## Smoothing across timesteps (Fig. 4) and reuse", "",
              "| budget | model | k | steps | DDPM | DDIM | DDPM + reuse | − DiT, DDPM (paired) | "
              "reuse − no reuse (paired) |", "|---|---|---|---|---|---|---|---|---|"]
    for i, budget in enumerate(budgets):
        ax = axes[i // cols][i % cols]
        family = "dit28" if budget in scale.budgets else "dit12"
        for sampler, style in (("ddpm", "-"), ("ddim", "--")):
            dit = _smoothing(results, family, budget, sampler)
            if dit:
                m, se = _mean_se(r["digits_fid"] for r in dit)
                ax.axhline(m, color="k", ls=style, lw=1,
                           label=f"{family} {sampler} ({dit[0]['steps']} steps)")
                ax.axhspan(m - se, m + se, color="k", alpha=0.08)
        for name, color in zip(FPDMS, ("C0", "C1"), strict=True):
            for sampler, reuse, style in (("ddpm", False, "o-"), ("ddim", False, "s--"),
                                          ("ddpm", True, "^:")):
                rows = _rows(results, experiment="smoothing", train=name, budget=budget, sampler=sampler,
                             reuse=reuse)
                ks = sorted({r["settings"]["iters"] for r in rows})
                if not ks:
                    continue
                ms = [_mean_se(r["digits_fid"] for r in rows if r["settings"]["iters"] == k) for k in ks]
                ax.errorbar(ks, [m for m, _ in ms], yerr=[e for _, e in ms], fmt=style, color=color, ms=3,
                            lw=1, label=f"{name} {sampler}{' reuse' if reuse else ''}")
            for k in sorted({r["settings"]["iters"] for r in _smoothing_any(results, name, budget, "ddpm")}):
                row = _smoothing(results, name, budget, "ddpm", k)
                ddim = _smoothing(results, name, budget, "ddim", k)
                reuse = _smoothing(results, name, budget, "ddpm", k, reuse=True)
                dit = _smoothing(results, family, budget, "ddpm")
                lines.append(f"| {budget} | {name} | {k} | {row[0]['steps']} | {_fmt(row)} | "
                             f"{_fmt(ddim) if ddim else '–'} | {_fmt(reuse) if reuse else '–'} | "
                             f"{_paired(row, dit) if dit else '–'} | "
                             f"{_paired(reuse, row) if reuse else '–'} |")
        ax.set(title=f"{budget} blocks = {budget // (DEEP if family == 'dit28' else SHALLOW)} {family} steps",
               xlabel="iterations per step k", ylabel="digits-FID", xscale="log")
        ticks = sorted({r["settings"]["iters"] for n in FPDMS
                        for r in _smoothing_any(results, n, budget, "ddpm")})
        if ticks:  # the k values themselves as plain numbers (log axes label 2×10^0... and overlap)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(root / "smoothing.png", dpi=120)
    plt.close(fig)
    lines += ["", "![FID against k per budget, DiT lines with ± s.e. bands](smoothing.png)", "",
              "### Where the optimum k lies (the seed: 4–8)", ""]
    lines += optimum_k(results, scale)
    lines += ["", "## Allocation profiles (Table 5)", "",
              f"{PROFILE_K} iterations per step on average over budget / {2 + PROFILE_K} steps.", "",
              "| model | budget | profile | FID | − constant (paired) |", "|---|---|---|---|---|"]
    for name in FPDMS:
        for budget in scale.budgets[-2:]:
            const = _rows(results, experiment="allocation", train=name, budget=budget, profile="constant")
            for profile in ("constant", "increasing", "decreasing"):
                rows = _rows(results, experiment="allocation", train=name, budget=budget, profile=profile)
                if rows:
                    lines.append(f"| {name} | {budget} | {profile} | {_fmt(rows)} | {_paired(rows, const)} |")
    lines += ["", "## Adaptive tolerance and Anderson (beyond the paper)", "",
              f"{ADAPTIVE_K} iterations per step on average (budget / {2 + ADAPTIVE_K} steps); the reference "
              f"is plain iteration at constant k = {ADAPTIVE_K}. A tolerance passes a step's unspent "
              "iterations on.",
              "", "| model | budget | tol | solver | FID | − plain k = 12 (paired) | iterations run per step "
              "(min–max, block 0) |", "|---|---|---|---|---|---|---|"]
    for name in FPDMS:
        for budget in scale.budgets[-2:]:
            ref = _smoothing(results, name, budget, "ddpm", ADAPTIVE_K)
            for tol, solver in TOLS:
                rows = _rows(results, experiment="adaptive", train=name, budget=budget, tol=tol,
                             solver=solver)
                if rows:
                    run_k = rows[0]["iters_run"]
                    lines.append(f"| {name} | {budget} | {tol or '–'} | {solver} | {_fmt(rows)} | "
                                 f"{_paired(rows, ref) if ref else '–'} | {min(run_k)}–{max(run_k)} |")
    lines += ["", "## Training-seed repeat (seed 1 − seed 0, paired)", "",
              "| model | budget | k | seed 1 FID | seed 0 FID | seed 1 − seed 0 |",
              "|---|---|---|---|---|---|"]
    for seed1, base in SEED1.items():
        for r0 in _rows(results, experiment="training_seeds", train=seed1, seed_block=0):
            s = r0["settings"]
            rows = _rows(results, experiment="training_seeds", train=seed1, budget=s["budget"],
                         iters=s["iters"])
            ref = _smoothing(results, base, s["budget"], "ddpm", s["iters"])
            lines.append(f"| {base} | {s['budget']} | {s['iters'] or '–'} | {_fmt(rows)} | "
                         f"{_fmt(ref) if ref else '–'} | {_paired(rows, ref) if ref else '–'} |")
    lines += ["", *calibrated_section(results, FPDMS, sorted(scale.budgets + scale.small_budgets))]
    grids = sorted((root / "grids").glob("*.png")) if (root / "grids").exists() else []
    if grids:
        lines += ["", f"## Sample grids at {scale.grid_budget} blocks (Fig. 5), same seeds", ""]
        lines += [f"{g.stem}: ![{g.stem}](grids/{g.name})" for g in grids]
    return write_outputs(root, lines, summaries, results)


def write_outputs(folder: Path, lines: list[str], summaries: list[dict], results: list[dict]) -> Path:
    """A study's report (`README.md`, from its lines) and every training and cell (`results.json`)."""
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    (folder / "results.json").write_text(json.dumps({"trainings": summaries, "cells": results}, indent=1))
    return path


# -------------------------------------------------------------------------------------------------- run


def run(scale_name: str, root: str | Path, workers: int = 2, log: Callable[[str], None] = print,
        device: str = "cpu") -> dict[str, Any]:
    """Train, evaluate and report the paper-ratio study under `root` (cached: run again to resume)."""
    scale = RATIO_SCALES[scale_name]
    root = Path(root)
    cells = experiments(scale)
    jobs = trainings(scale)
    log(f"paper-ratio study: {len(jobs)} trainings, {len(cells)} evaluation cells (+ equal-cost cells) "
        f"-> {root}")
    summaries, results = _run_tasks(jobs, cells, scale, root, workers, log, device)
    extra = [c for c in derived_experiments(results, scale) if c not in set(cells)]
    if extra:
        _, more = _run_tasks([], extra, scale, root, workers, log, device)
        results += more
    path = write_report(root, scale_name, scale, summaries, results)
    log(f"wrote {path}")
    parent = root.parent / "README.md"
    if parent.exists():  # the first study's report gets this study's headline, linked
        link_section(parent, [f"## Paper-ratio study ({root.name}/README.md)", "",
                              f"FPDM against DiTs of depth 28 and 12; details in [{root.name}/README.md]"
                              f"({root.name}/README.md).", "", *headline(results, scale)])
    return {"trainings": summaries, "cells": results}


def link_section(readme: Path, lines: list[str]) -> None:
    """Put `lines` at the end of `readme` between markers, replacing what an earlier run put there."""
    begin, end = "<!-- paper-ratio study -->", "<!-- /paper-ratio study -->"
    text = readme.read_text()
    if begin in text and end in text:
        text = text[:text.index(begin)].rstrip("\n") + text[text.index(end) + len(end):]
    readme.write_text(text.rstrip("\n") + "\n\n" + "\n".join([begin, *lines, end]) + "\n")


__all__ = ["RATIO_FULL", "RATIO_QUICK", "RATIO_SCALES", "RATIO_TINY", "RatioScale", "best_fpdm",
           "equal_cost_budgets", "experiments", "feasible_iters", "link_section", "models", "run",
           "trainings"]
