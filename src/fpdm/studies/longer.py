"""Longer training for the paper-ratio study: does its verdict move when the models train twice as long?

The paper-ratio study's models are not converged (the DiT-28's loss still fell between 1,500 and 3,000 steps,
and that half moved its FID by 28 to 66), so its tie at the largest budget could go either way. Here the
DiT-28 and both FPDMs continue from their last checkpoint to twice the steps (the learning rate is constant
after warm-up, so this is the same as training that long from the start), and the headline cells — DDPM at
every seed budget, FPDM at a fixed k set — are sampled again on the same seeds, paired with the shorter run.

Needs the paper-ratio study's trainings (`fpdm reproduce --study ratio`); writes `<ratio>/longer/`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fpdm.studies.engine import EvalSpec, TrainSpec, fmt, paired, run_tasks
from fpdm.studies.ratio import _fid, _last_loss, write_outputs
from fpdm.studies.ratio_cells import RATIO_SCALES, SEED1, RatioScale, models
from fpdm.studies.ratio_cells import _rows as _matching

NAMES = ("dit28", "fpdm", "fpdm-N10M12")  # the headline's DiT and both FPDMs (the best one is picked)
K_SET = (2, 3, 5, 6, 8, 12)  # holds the grid's best k at every seed budget (2, 2, 6, 5) and the seed's 4-8
SEED1_K = (2, 5)  # k of the second training seed's FPDM cells: the best k at 56 and near it at 140-560
FACTOR = 2  # train to FACTOR × the study's steps

__all__ = ["FACTOR", "K_SET", "NAMES", "SEED1_K", "cells", "run", "seed_cells", "seed_folder"]


def _iters(scale: RatioScale, budget: int) -> list[int]:
    """The k of K_SET whose constant steps spend `budget` exactly."""
    return [k for k in K_SET if budget % (2 + k) == 0 and k <= scale.max_iters]


def cells(scale: RatioScale, steps: int) -> list[EvalSpec]:
    """The headline cells of models trained `steps` steps: DiT-28 and each FPDM at every feasible k of
    K_SET, DDPM, every seed budget and sampling-seed block. With the study's own steps these are its cells
    (same keys: read from its cache)."""
    m = models(scale)
    out: list[EvalSpec] = []
    for b in range(scale.sampling_seeds):
        for budget in scale.budgets:
            out.append(EvalSpec("smoothing", m["dit28"], steps, budget, seed_block=b))
            out += [EvalSpec("smoothing", m[name], steps, budget, iters=k, seed_block=b)
                    for name in NAMES[1:] for k in _iters(scale, budget)]
    return out


def _seed1_iters(base: str, budget: int) -> list[int | None]:
    return [None] if base == "dit28" else [k for k in SEED1_K if budget % (2 + k) == 0]


def seed_cells(scale: RatioScale, steps: int) -> list[EvalSpec]:
    """The second training seed of each model, `steps` steps: DiT-28 at every seed budget and each FPDM at
    SEED1_K, to pair with seed 0's cells (training-seed noise at that length)."""
    m = models(scale)
    out: list[EvalSpec] = []
    for b in range(scale.sampling_seeds):
        for budget in scale.budgets:
            out += [EvalSpec("training_seeds", m[seed1], steps, budget, iters=k, seed_block=b)
                    for seed1, base in SEED1.items() for k in _seed1_iters(base, budget)]
    return out


def seed_folder(root: Path, spec: TrainSpec, scale: RatioScale, steps: int, scale_name: str = "full") -> Path:
    """Start the longer training's folder from the study's finished one (its checkpoints linked, its loss
    log copied), so the training task resumes it to `steps`. Assembled in a temporary folder first: an
    interrupted copy is redone, never resumed."""
    src = root / "train" / spec.key(scale, scale.train_steps)
    dst = root / "train" / spec.key(scale, steps)
    if dst.exists():
        return dst
    if not (src / "summary.json").exists():
        flag = "" if scale_name == "full" else f" --scale {scale_name}"
        raise FileNotFoundError(f"{src} holds no finished training of {spec.name}: run `fpdm reproduce "
                                f"--study ratio{flag} --out {root.parent}` first")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".pt":  # checkpoints are only ever replaced by a rename, never written in place:
            try:  # a hard link shares them (DiT-28's are 100 MB each) and the shorter run keeps its own
                os.link(f, tmp / f.name)
                continue
            except OSError:  # another filesystem, or links not supported
                pass
        if f.suffix in (".pt", ".jsonl"):  # the loss log is appended to: a copy
            shutil.copy2(f, tmp / f.name)
    tmp.rename(dst)
    return dst


def _best(results: list[dict], name: str, steps: int, budget: int) -> tuple[int, list[dict]]:
    """The k of K_SET with the lowest mean FID (picked on the evaluation seeds) and its rows."""
    by_k: dict[int, list[dict]] = {}
    for r in _matching(results, train=name, train_steps=steps, budget=budget):
        if r["settings"]["iters"]:
            by_k.setdefault(r["settings"]["iters"], []).append(r)
    k = min(by_k, key=lambda k: _fid(by_k[k]))
    return k, by_k[k]


def _rows(results: list[dict], name: str, steps: int, budget: int, k: int | None = None) -> list[dict]:
    return _matching(results, train=name, train_steps=steps, budget=budget, iters=k)


def write_report(out: Path, scale: RatioScale, summaries: list[dict], results: list[dict], steps: int
                 ) -> Path:
    """`out/README.md` (loss at both lengths, FPDM − DiT-28 at each, training-seed noise at the longer one,
    every cell's change), `training.png`,
    `headline.png` and `results.json`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator, ScalarFormatter

    short = scale.train_steps
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Paper-ratio study, trained twice as long", "",
             f"DiT-28 and both FPDMs continued from their {short}-step checkpoints to {steps} steps (same "
             f"recipe: batch {scale.batch_size}, AdamW {scale.lr:g}, constant after {scale.warmup_steps} "
             f"warm-up steps); digits-FID of {scale.num_samples} samples × {scale.sampling_seeds} seed "
             "blocks, DDPM, mean ± s.e. over blocks; differences paired on the same seeds. FPDM's k is "
             f"the best of {', '.join(map(str, K_SET))} (feasible ones) at each budget, picked on these "
             "seeds.", "",
             "## Training", "", f"| model | loss, last 5 logs at {short} | at {steps} | ms/step (this run) |",
             "|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in summaries:
        loss, recs = _last_loss(s["checkpoint"])
        at_short = [r["loss"] for r in recs if r["step"] <= short][-5:]
        lines.append(f"| {s['name']} | {sum(at_short) / max(1, len(at_short)):.4f} | {loss:.4f} | "
                     f"{s.get('ms_per_step', float('nan')):.0f} |")
        ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], lw=1, label=s["name"])
    ax.axvline(short, color="grey", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=120)
    plt.close(fig)
    lines += ["", "![training loss](training.png)", "",
              "## FPDM against DiT-28 at equal blocks, after each training length", "",
              f"| budget | DiT-28 at {short} | DiT-28 at {steps} | DiT change | best FPDM at {short} "
              f"(model, k) | best FPDM at {steps} (model, k) | FPDM − DiT at {short} | "
              f"FPDM − DiT at {steps} |",
              "|---|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    curves: dict[str, list[tuple[int, float]]] = {}
    for budget in scale.budgets:
        dit = {n: _rows(results, "dit28", n, budget) for n in (short, steps)}
        best = {}
        for n in (short, steps):
            cands = [(name, *_best(results, name, n, budget)) for name in NAMES[1:]]
            best[n] = min(cands, key=lambda c: _fid(c[2]))
        lines.append(f"| {budget} | {fmt(dit[short])} | {fmt(dit[steps])} | "
                     f"{paired(dit[steps], dit[short])} | "
                     f"{fmt(best[short][2])} ({best[short][0]}, {best[short][1]}) | {fmt(best[steps][2])} "
                     f"({best[steps][0]}, {best[steps][1]}) | {paired(best[short][2], dit[short])} | "
                     f"{paired(best[steps][2], dit[steps])} |")
        for n in (short, steps):
            curves.setdefault(f"DiT-28, {n} steps", []).append((budget, _fid(dit[n])))
            curves.setdefault(f"best FPDM, {n} steps", []).append((budget, _fid(best[n][2])))
    for label, pts in curves.items():
        ax.plot(*zip(*pts, strict=True), marker="o", ls="-" if str(steps) in label else "--", label=label,
                color="C0" if label.startswith("DiT") else "C1")  # colour: the model; dashes: the shorter run
    ax.set(xlabel="budget (block evaluations per sample)", ylabel="digits-FID", xscale="log", yscale="log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers: log axes label 2×10^1... and overlap
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(FixedLocator(list(scale.budgets)))
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "headline.png", dpi=120)
    plt.close(fig)
    lines += ["", "![FID against budget](headline.png)", "",
              f"## Training-seed repeat at {steps} steps (seed 1 − seed 0, paired)", "",
              "| budget | model | k | seed 1 | seed 0 | seed 1 − seed 0 |", "|---|---|---|---|---|---|"]
    for budget in scale.budgets:
        for seed1, base in SEED1.items():
            for k in _seed1_iters(base, budget):
                a, b = _rows(results, seed1, steps, budget, k), _rows(results, base, steps, budget, k)
                if a and b:
                    lines.append(f"| {budget} | {base} | {k or '–'} | {fmt(a)} | {fmt(b)} | "
                                 f"{paired(a, b)} |")
    ks = ", ".join(map(str, SEED1_K))
    lines += ["", f"FPDM − DiT-28 on the second training seed ({steps} steps; FPDM the best of both models "
              f"at k ∈ {{{ks}}}):", "",
              "| budget | DiT-28 seed 1 | best FPDM seed 1 (model, k) | FPDM − DiT (paired) |",
              "|---|---|---|---|"]
    for budget in scale.budgets:
        dit = _rows(results, "dit28-seed1", steps, budget)
        cands = [(name, k, _rows(results, name, steps, budget, k)) for name, base in SEED1.items()
                 if base != "dit28" for k in _seed1_iters(base, budget)]
        cands = [c for c in cands if c[2]]
        if dit and cands:
            name, k, rows = min(cands, key=lambda c: _fid(c[2]))
            lines.append(f"| {budget} | {fmt(dit)} | {fmt(rows)} ({name}, {k}) | {paired(rows, dit)} |")
    lines += ["", "## Every cell (DDPM)", "",
              f"| budget | model | k | FID at {short} | FID at {steps} | change (paired) |",
              "|---|---|---|---|---|---|"]
    for budget in scale.budgets:
        for name in NAMES:
            ks = [None] if name == "dit28" else _iters(scale, budget)
            for k in ks:
                a, b = _rows(results, name, short, budget, k), _rows(results, name, steps, budget, k)
                if a and b:
                    lines.append(f"| {budget} | {name} | {k or '–'} | {fmt(a)} | {fmt(b)} | "
                                 f"{paired(b, a)} |")
    return write_outputs(out, lines, summaries, results)


def run(scale_name: str, root: str | Path, workers: int = 2, log: Callable[[str], None] = print,
        device: str = "cpu") -> dict[str, Any]:
    """Train the study's DiT-28 and FPDMs (and their second training seeds) on to FACTOR × its steps, sample
    the headline cells of both lengths and the second seeds' cells, and write `<root>/longer/README.md`
    (cached: run again to resume). `root` is the study's folder."""
    scale = RATIO_SCALES[scale_name]
    root = Path(root)
    steps = FACTOR * scale.train_steps
    m = models(scale)
    # the deep DiT first: it takes longest, and the FPDMs' cells fill the other worker meanwhile
    trains = [(m[name], steps) for name in ("dit28", "fpdm-N10M12", "fpdm", *SEED1)]
    for spec, _ in trains:
        seed_folder(root, spec, scale, steps, scale_name)
    todo = cells(scale, scale.train_steps) + cells(scale, steps) + seed_cells(scale, steps)
    log(f"longer training: {len(trains)} trainings to {steps} steps, {len(todo)} cells -> {root / 'longer'}")
    summaries, results = run_tasks(trains, todo, scale, root, workers, log, device)
    path = write_report(root / "longer", scale, summaries, results, steps)
    log(f"wrote {path}")
    return {"trainings": summaries, "cells": results}
