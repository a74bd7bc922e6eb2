"""The headline again, at DiT's best solver: does FPDM still win when the DiT samples with DPM-Solver++,
UniPC or Heun on the best spacing?

The paper-ratio study's models (DiT-28, DiT-12, FPDM with S-JFB N = M = 3 and with N = 10, M = 12; read
from its cache, trained here if absent) are sampled at its budgets with every sampler and spacing. Settings
are picked on selection seeds (block 8: seeds 800000…, disjoint from the evaluation blocks 0, 1, 2 and the
calibration seeds), in two stages for FPDM: every (sampler, spacing) at the k nearest 4 that the sampler
can spend, then every k of a thinned grid for its two best. The picked settings are then sampled on the
evaluation blocks: each model's overall best, its best per sampler, and FPDM's best with reuse. Verdicts
(FPDM − DiT, paired on the evaluation seeds): with each model at its own best sampler (the fair
comparison), and per sampler. Writes `<ratio>/solvers/README.md`, `results.json` and `frontier.png`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fpdm.diffusion.samplers import SAMPLERS
from fpdm.diffusion.schedules import SPACINGS
from fpdm.studies.engine import (
    EvalSpec,
    environment,
    fid_of,
    fmt,
    mean_se,
    paired,
    paired_diffs,
    run_tasks,
)
from fpdm.studies.ratio_cells import DEEP, FPDMS, RATIO_SCALES, SHALLOW, RatioScale, models
from fpdm.studies.selection import best_configs, config_of, label, mean_fid, select_rows

STUDY_SAMPLERS = ("ddpm", "ddim", "dpm++2m", "unipc", "heun")  # euler is deterministic DDIM: left out
SELECT_BLOCK = 8  # seeds 800000…: picks settings; the verdicts use blocks 0 .. sampling_seeds - 1
SELECT_SAMPLES = {"full": 200, "quick": 32, "tiny": 12}
K_GRID = (1, 2, 3, 4, 5, 6, 8, 12, 18, 26)
K_START = 4  # stage 1's k: the nearest feasible to it (the seed's smoothing optimum is 4–8)
PAPER_BUDGETS = (56, 140, 280, 560)  # 2, 5, 10, 20 steps of a 28-block DiT

__all__ = ["K_GRID", "STUDY_SAMPLERS", "feasible_ks", "run", "selection_cells", "stage_two_cells"]


def _dit(budget: int, scale: RatioScale) -> tuple[str, int] | None:
    """The DiT whose step counts the budget: DiT-28 at the seed's budgets, DiT-12 at the small ones."""
    if budget in scale.budgets:
        return "dit28", DEEP
    return ("dit12", SHALLOW) if budget in scale.small_budgets else None


def feasible_ks(budget: int, sampler: str, max_iters: int) -> list[int]:
    """k of K_GRID (≤ max_iters) whose constant (1 + k + 1)-block evaluations spend `budget` exactly with
    `sampler`'s evaluations per step."""
    rule = SAMPLERS[sampler]
    return [k for k in K_GRID
            if k <= max_iters and budget % (2 + k) == 0 and rule.steps_for(budget // (2 + k))]


def _dit_ok(budget: int, depth: int, sampler: str) -> bool:
    return budget % depth == 0 and SAMPLERS[sampler].steps_for(budget // depth) is not None


def _combos() -> list[tuple[str, str]]:
    return [(sampler, spacing) for sampler in STUDY_SAMPLERS for spacing in SPACINGS]


def selection_cells(scale: RatioScale) -> list[EvalSpec]:
    """Stage 1 on the selection seeds: every DiT cell, and each FPDM at the k nearest K_START."""
    m, steps, out = models(scale), scale.train_steps, []
    for budget in scale.budgets + scale.small_budgets:
        dit = _dit(budget, scale)
        for sampler, spacing in _combos():
            if dit and _dit_ok(budget, dit[1], sampler):
                out.append(EvalSpec("solvers-select", m[dit[0]], steps, budget, sampler=sampler,
                                    spacing=spacing, seed_block=SELECT_BLOCK))
            ks = feasible_ks(budget, sampler, scale.max_iters)
            if ks:
                k = min(ks, key=lambda v: (abs(v - K_START), v))
                out += [EvalSpec("solvers-select", m[name], steps, budget, iters=k, sampler=sampler,
                                 spacing=spacing, seed_block=SELECT_BLOCK) for name in FPDMS]
    return out


def _best(rows: list[dict], top: int = 1) -> list[tuple[str, str, int | None, bool]]:
    return best_configs(rows, STUDY_SAMPLERS, top)


def _select(results: list[dict], name: str, budget: int, sampler: str | None = None) -> list[dict]:
    return select_rows(results, "solvers-select", name, budget, sampler)


def stage_two_cells(scale: RatioScale, stage_one: list[dict]) -> list[EvalSpec]:
    """Stage 2 on the selection seeds: every feasible k for each FPDM's two best (sampler, spacing)."""
    m, steps, out = models(scale), scale.train_steps, []
    for budget in scale.budgets + scale.small_budgets:
        for name in FPDMS:
            for sampler, spacing, _, _ in _best(_select(stage_one, name, budget), top=2):
                out += [EvalSpec("solvers-select", m[name], steps, budget, iters=k, sampler=sampler,
                                 spacing=spacing, seed_block=SELECT_BLOCK)
                        for k in feasible_ks(budget, sampler, scale.max_iters)]
    return out


def evaluation_cells(scale: RatioScale, selected: list[dict]) -> list[EvalSpec]:
    """On the evaluation blocks: per model and budget its best configuration overall and per sampler, and
    (FPDM) its best with reuse."""
    m, steps, out = models(scale), scale.train_steps, []
    for budget in scale.budgets + scale.small_budgets:
        dit = _dit(budget, scale)
        for name in ([dit[0]] if dit else []) + list(FPDMS):
            configs = {c for sampler in STUDY_SAMPLERS
                       for c in _best(_select(selected, name, budget, sampler))}
            best = _best(_select(selected, name, budget))
            if name in FPDMS and best:
                sampler, spacing, k, _ = best[0]
                configs.add((sampler, spacing, k, True))
            for sampler, spacing, k, reuse in sorted(configs, key=str):
                out += [EvalSpec("solvers", m[name], steps, budget, iters=k, sampler=sampler,
                                 spacing=spacing, reuse=reuse, seed_block=b)
                        for b in range(scale.sampling_seeds)]
    return out


# ------------------------------------------------------------------------------------------------ report


def _eval(results: list[dict], name: str, budget: int, config: tuple) -> list[dict]:
    rows = [r for r in results if r["settings"]["experiment"] == "solvers"
            and r["settings"]["train"] == name and r["settings"]["budget"] == budget
            and config_of(r) == tuple(config)]
    return sorted(rows, key=lambda r: r["settings"]["seed_block"])


def _best_fpdm(selected: list[dict], budget: int, sampler: str | None = None) -> tuple[str, tuple] | None:
    """(model, configuration) of the lowest selection FID among both FPDMs (no reuse)."""
    found = [(name, c, mean_fid([r for r in _select(selected, name, budget, sampler) if config_of(r) == c]))
             for name in FPDMS for c in _best(_select(selected, name, budget, sampler))]
    return min(found, key=lambda f: f[2])[:2] if found else None


def verdict_rows(scale: RatioScale, selected: list[dict], results: list[dict]) -> list[str]:
    lines = ["| budget (blocks) | sampler | DiT (steps): its best setting, FID | FPDM (steps): model, its "
             "best setting, FID | FPDM − DiT (paired) | verdict (2 s.e.) |", "|---|---|---|---|---|---|"]
    for budget in sorted(scale.budgets + scale.small_budgets):
        dit = _dit(budget, scale)
        if dit is None:
            continue
        for sampler in (None, *STUDY_SAMPLERS):
            best_dit = _best(_select(selected, dit[0], budget, sampler))
            fp = _best_fpdm(selected, budget, sampler)
            if not best_dit or fp is None:
                continue
            d_rows = _eval(results, dit[0], budget, best_dit[0])
            f_rows = _eval(results, fp[0], budget, fp[1])
            if not d_rows or not f_rows:
                continue
            lines.append(f"| {budget} | {sampler or '**each its own best**'} | {dit[0]} "
                         f"({d_rows[0]['steps']}): {label(best_dit[0])}, {fmt(d_rows)} | {fp[0]} "
                         f"({f_rows[0]['steps']}): {label(fp[1])}, {fmt(f_rows)} | "
                         f"{paired(f_rows, d_rows)} | {_verdict(paired_diffs(f_rows, d_rows))} |")
    return lines


def _verdict(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return "one block"
    m, se = mean_se(diffs)
    return "**FPDM wins**" if m + 2 * se < 0 else "**DiT wins**" if m - 2 * se > 0 else "tie"


def optimum_rows(scale: RatioScale, selected: list[dict]) -> list[str]:
    """Which sampler, spacing and k win on the selection seeds, per model and budget."""
    lines = ["| budget | model | best (selection FID) | runner-up | best k per sampler |",
             "|---|---|---|---|---|"]
    for budget in sorted(scale.budgets + scale.small_budgets):
        dit = _dit(budget, scale)
        for name in ([dit[0]] if dit else []) + list(FPDMS):
            rows = _select(selected, name, budget)
            top = _best(rows, top=2)
            if not top:
                continue
            per = ", ".join(f"{s}: {c[2]}" for s in STUDY_SAMPLERS
                            for c in _best(_select(selected, name, budget, s)) if c[2])
            mean = {c: mean_fid([r for r in rows if config_of(r) == c]) for c in top}
            lines.append(f"| {budget} | {name} | {label(top[0])} ({mean[top[0]]:.2f}) | "
                         + (f"{label(top[1])} ({mean[top[1]]:.2f})" if len(top) > 1 else "–")
                         + f" | {per or '–'} |")
    return lines


def frontier_plot(path: Path, scale: RatioScale, selected: list[dict], results: list[dict]) -> None:
    """FID against blocks per sample (log x): per model its best sampler (thick), each sampler's best
    (thin), the paper's budgets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"dit28": "tab:red", "dit12": "tab:orange", "fpdm": "tab:blue"}
    budgets = sorted(scale.budgets + scale.small_budgets)
    lines: dict[str, dict[str | None, list[tuple[int, float, float]]]] = {}
    for budget in budgets:
        dit = _dit(budget, scale)
        for sampler in (None, *STUDY_SAMPLERS):
            picks = []
            if dit:
                best = _best(_select(selected, dit[0], budget, sampler))
                if best:
                    picks.append(("dit28" if dit[0] == "dit28" else "dit12", dit[0], best[0]))
            fp = _best_fpdm(selected, budget, sampler)
            if fp:
                picks.append(("fpdm", fp[0], fp[1]))
            for key, name, config in picks:
                rows = _eval(results, name, budget, config)
                if rows:
                    mean, se = mean_se(fid_of(r) for r in rows)
                    lines.setdefault(key, {}).setdefault(sampler, []).append((budget, mean, se))
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    styles = dict(zip(STUDY_SAMPLERS, ("-", "--", "-.", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1))), strict=True))
    names = {"dit28": "DiT-28", "dit12": "DiT-12", "fpdm": "FPDM (better of its two trainings)"}
    for key, per in lines.items():
        for sampler, pts in per.items():
            xs, ys, es = zip(*pts, strict=True)
            label = f"{names[key]}: its best sampler" if sampler is None else None
            ax.errorbar(xs, ys, yerr=es, color=colours[key], lw=2.4 if sampler is None else 0.8,
                        ls="-" if sampler is None else styles[sampler], alpha=1.0 if sampler is None else 0.5,
                        marker="o" if sampler is None else None, ms=4, capsize=2, label=label)
    for b in PAPER_BUDGETS:
        ax.axvline(b, color="grey", ls=":", lw=0.8)
    # log y: a failed few-step cell (FID in the hundreds) must not flatten the frontier
    ax.set(xscale="log", yscale="log", xlabel="transformer blocks per sample (log; dotted: 2, 5, 10, 20 "
           "DiT-28 steps)", ylabel="digits-FID (log; lower is better)",
           title="compute–quality frontier (evaluation seeds)")
    ax.xaxis.set_major_locator(FixedLocator(budgets))
    ax.yaxis.set_major_locator(FixedLocator([15, 20, 30, 50, 100, 200, 400]))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelsize=7, labelrotation=90)  # 56 and 60 sit side by side
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", lw=0.8, ls=styles[s], label=f"thin: {s}")
                for s in STUDY_SAMPLERS]
    ax.legend(handles=handles, fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cost_line(summaries: list[dict], selected: list[dict], results: list[dict]) -> str:
    """Where and at what cost: the commit and machine of this report, and the CPU-seconds measured by the
    trainings (ms/step × steps) and by the cells' sampling (their own wall-clock on one thread)."""
    env = environment()
    train_s = sum((s.get("ms_per_step") or 0) * s.get("step", 0) / 1000 for s in summaries)
    sel_s = sum(r.get("sample_wall_s", 0) for r in selected)
    eval_s = sum(r.get("sample_wall_s", 0) for r in results)
    return (f"Report written at commit `{env['commit']}` on {env['machine']}. Measured cost, one thread per "
            f"worker: trainings {train_s:,.0f} CPU-s, sampling of the {len(selected)} selection cells "
            f"{sel_s:,.0f} CPU-s and of the {len(results)} evaluation cells {eval_s:,.0f} CPU-s (FID, model "
            "loading and calibration not included).")


def write_report(folder: Path, scale_name: str, scale: RatioScale, select_scale: RatioScale,
                 summaries: list[dict], selected: list[dict], results: list[dict]) -> Path:
    from fpdm.studies.digits import TINY_WARNING

    folder.mkdir(parents=True, exist_ok=True)
    frontier_plot(folder / "frontier.png", scale, selected, results)
    lines = [f"# fpdm reproduce: the solvers study ({scale_name})", "", *TINY_WARNING.get(scale_name, []),
             "The paper-ratio study's models sampled with DDPM, DDIM, DPM-Solver++(2M), UniPC (order 2) and "
             f"Heun on the {', '.join(SPACINGS)} spacings, at budgets counted in model-evaluation blocks.",
             f"Settings picked on selection seeds (block {SELECT_BLOCK}, {select_scale.num_samples} "
             "samples), "
             f"reported on {scale.sampling_seeds} evaluation blocks of {scale.num_samples} samples (paired "
             "digits-FID, mean ± s.e.).", f"Scale: `{json.dumps(asdict(scale))}`.", "",
             cost_line(summaries, selected, results), "",
             "## FPDM − DiT: with each model at its own best sampler, and per sampler", "",
             *verdict_rows(scale, selected, results), "", "![frontier](frontier.png)", "",
             "## What wins on the selection seeds", "", *optimum_rows(scale, selected), "",
             "## Trainings", "", "| name | steps | ms/step |", "|---|---|---|",
             *[f"| {s['name']} | {s['step']} | {s['ms_per_step']} |" for s in summaries]]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    (folder / "results.json").write_text(json.dumps({"trainings": summaries, "selection": selected,
                                                     "cells": results}, indent=1))
    return path


def run(scale_name: str, root: str | Path, workers: int = 2, log: Callable[[str], None] = print,
        device: str = "cpu") -> dict[str, Any]:
    """Select, evaluate and report the solvers study under `<root>/solvers` (`root`: the paper-ratio
    study's folder, whose trainings it reuses; cached: run again to resume)."""
    scale = RATIO_SCALES[scale_name]
    select_scale = replace(scale, num_samples=SELECT_SAMPLES.get(scale_name, scale.num_samples))
    root = Path(root)
    m = models(scale)
    trains = [(m[name], scale.train_steps) for name in ("dit28", "fpdm-N10M12", "fpdm", "dit12")]
    first = selection_cells(scale)
    log(f"solvers study: {len(first)} selection cells, then the best two settings' k grid and the "
        f"evaluation cells -> {root / 'solvers'}")
    summaries, stage_one = run_tasks(trains, first, select_scale, root, workers, log, device)
    second = [c for c in stage_two_cells(scale, stage_one) if c not in set(first)]
    _, more = run_tasks([], second, select_scale, root, workers, log, device)
    selected = stage_one + more
    cells = evaluation_cells(scale, selected)
    log(f"solvers study: {len(cells)} evaluation cells")
    _, results = run_tasks([], cells, scale, root, workers, log, device)
    path = write_report(root / "solvers", scale_name, scale, select_scale, summaries, selected, results)
    log(f"wrote {path}")
    return {"trainings": summaries, "selection": selected, "cells": results}
