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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fpdm.studies.digits import TINY_WARNING, calibrated_section
from fpdm.studies.engine import fmt, grid_section, mean_se, paired, run_tasks
from fpdm.studies.ratio_cells import (
    ADAPTIVE_K,
    DEEP,
    FPDMS,
    PROFILE_K,
    RATIO_FULL,
    RATIO_QUICK,
    RATIO_SCALES,
    RATIO_TINY,
    SEED1,
    SHALLOW,
    TOLS,
    RatioScale,
    _rows,
    best_fpdm,
    derived_experiments,
    equal_cost_budgets,
    experiments,
    families,
    feasible_iters,
    models,
    trainings,
)
from fpdm.training.monitor import read_log

# ----------------------------------------------------------------------------------------------- report


def _key_rows(results: list[dict], experiment: str, **match: Any) -> list[dict]:
    return _rows(results, experiment=experiment, **match)


def _fid(rows: list[dict]) -> float:
    return mean_se(r["digits_fid"] for r in rows)[0]


def _last_loss(checkpoint: str, n: int = 5) -> tuple[float | None, list[dict]]:
    log_path = Path(checkpoint).parent / "log.jsonl"
    if not log_path.exists():
        return None, []
    recs = read_log(log_path)[0]  # the loss records
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
                lines.append(f"| {budget} | {family} | {sampler} | {dit[0]['steps']}: {fmt(dit)} | "
                             f"{best[0]}, {best[1]}, {fp[0]['steps']} | {fmt(fp)} | {paired(fp, dit)} | "
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
                         f"{fmt(fp)} | {fmt(dit)} | {paired(fp, dit)} |")
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
            out[(base, budget)] = paired(mine, _smoothing(results, base, budget, "ddpm", k))
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
                lines.append(f"| {budget} | {name} | {sampler} | {best} ({ref[0]['steps']}): {fmt(ref)} | "
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

    lines = [f"# fpdm reproduce: the paper-ratio study ({scale_name})", "", *TINY_WARNING.get(scale_name, []),
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
        lines.append(f"| {s['train']} | {s['budget']} | {s['iters'] or '–'} | {fmt(kept)} | "
                     f"{fmt(final) if final else '–'} | {paired(final, kept) if final else '–'} |")
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
                m, se = mean_se(r["digits_fid"] for r in dit)
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
                ms = [mean_se(r["digits_fid"] for r in rows if r["settings"]["iters"] == k) for k in ks]
                ax.errorbar(ks, [m for m, _ in ms], yerr=[e for _, e in ms], fmt=style, color=color, ms=3,
                            lw=1, label=f"{name} {sampler}{' reuse' if reuse else ''}")
            for k in sorted({r["settings"]["iters"] for r in _smoothing_any(results, name, budget, "ddpm")}):
                row = _smoothing(results, name, budget, "ddpm", k)
                ddim = _smoothing(results, name, budget, "ddim", k)
                reuse = _smoothing(results, name, budget, "ddpm", k, reuse=True)
                dit = _smoothing(results, family, budget, "ddpm")
                lines.append(f"| {budget} | {name} | {k} | {row[0]['steps']} | {fmt(row)} | "
                             f"{fmt(ddim) if ddim else '–'} | {fmt(reuse) if reuse else '–'} | "
                             f"{paired(row, dit) if dit else '–'} | "
                             f"{paired(reuse, row) if reuse else '–'} |")
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
                    lines.append(f"| {name} | {budget} | {profile} | {fmt(rows)} | {paired(rows, const)} |")
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
                    lines.append(f"| {name} | {budget} | {tol or '–'} | {solver} | {fmt(rows)} | "
                                 f"{paired(rows, ref) if ref else '–'} | {min(run_k)}–{max(run_k)} |")
    lines += ["", "## Training-seed repeat (seed 1 − seed 0, paired)", "",
              "| model | budget | k | seed 1 FID | seed 0 FID | seed 1 − seed 0 |",
              "|---|---|---|---|---|---|"]
    for seed1, base in SEED1.items():
        for r0 in _rows(results, experiment="training_seeds", train=seed1, seed_block=0):
            s = r0["settings"]
            rows = _rows(results, experiment="training_seeds", train=seed1, budget=s["budget"],
                         iters=s["iters"])
            ref = _smoothing(results, base, s["budget"], "ddpm", s["iters"])
            lines.append(f"| {base} | {s['budget']} | {s['iters'] or '–'} | {fmt(rows)} | "
                         f"{fmt(ref) if ref else '–'} | {paired(rows, ref) if ref else '–'} |")
    lines += ["", *calibrated_section(results, FPDMS, sorted(scale.budgets + scale.small_budgets))]
    if grids := grid_section(root, f"Sample grids at {scale.grid_budget} blocks (Fig. 5), same seeds"):
        lines += ["", *grids]
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
    summaries, results = run_tasks(jobs, cells, scale, root, workers, log, device)
    extra = [c for c in derived_experiments(results, scale) if c not in set(cells)]
    if extra:
        _, more = run_tasks([], extra, scale, root, workers, log, device)
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
