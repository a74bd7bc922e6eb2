"""`fpdm reproduce`: the seed's findings (Tables 3-5, Fig. 4-5, Sec. 5.3) on the built-in digits.

Work is a list of tasks, each keyed by a hash of everything that affects its result and cached on disk:
a *train* task writes a checkpoint (resumable mid-run), an *eval* task samples with one sampling seed block
and scores the samples (digits-FID, class consistency, ...). Re-running the command skips finished tasks and
resumes unfinished trainings, so an interrupted run loses at most the tasks in flight. Two worker processes
with one intra-op thread each run the tasks (one process with two threads was erratic on 2-core machines).

Every cell is sampled on the same starting noise and labels per sampling seed (common random numbers), so
differences between cells are paired; the report gives mean ± s.e. over sampling seeds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------------------ scales


@dataclass(frozen=True)
class Scale:
    """Sizes of a reproduction run."""

    train_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    num_samples: int  # per sampling seed block
    sampling_seeds: int  # independent blocks of `num_samples` seeds, for mean ± s.e.
    budgets: tuple[int, ...]  # block budgets; DiT-T (depth 6) gets budget / 6 steps
    iters: tuple[int, ...]  # iterations per step tried at each budget (infeasible ones are skipped)
    ablation_steps: int  # training steps for the Table 3/4 ablations
    grid_budget: int  # Fig. 5 grids


FULL = Scale(train_steps=4800, batch_size=128, lr=5e-4, warmup_steps=200, num_samples=1000, sampling_seeds=3,
             budgets=(12, 30, 120), iters=(1, 2, 3, 4, 6, 8, 10, 13), ablation_steps=2400, grid_budget=30)
QUICK = Scale(train_steps=800, batch_size=64, lr=1e-3, warmup_steps=50, num_samples=200, sampling_seeds=2,
              budgets=(12, 30), iters=(1, 2, 4), ablation_steps=300, grid_budget=12)
TINY = Scale(train_steps=4, batch_size=16, lr=1e-3, warmup_steps=1, num_samples=12, sampling_seeds=2,
             budgets=(12,), iters=(1, 2), ablation_steps=2, grid_budget=12)
SCALES = {"full": FULL, "quick": QUICK, "tiny": TINY}


# ------------------------------------------------------------------------------------------------- tasks


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainSpec:
    name: str  # human label, e.g. "fpdm", "dit", "sjfb-N6-M6"
    model: str
    overrides: tuple[tuple[str, Any], ...] = ()
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig fields beyond the scale's

    def key(self, scale: Scale, steps: int) -> str:
        return _key({"model": self.model, "overrides": list(self.overrides), "train": list(self.train),
                     "steps": steps, "batch": scale.batch_size, "lr": scale.lr, "warmup": scale.warmup_steps})


CALIBRATION_RULE = "reference 2 x the most one step can get"  # part of calibrated cells' keys


@dataclass(frozen=True)
class EvalSpec:
    experiment: str
    train: TrainSpec
    train_steps: int
    budget: int
    iters: int | None = None
    steps: int | None = None
    profile: str = "constant"
    sampler: str = "ddpm"
    reuse: bool = False
    tol: float | None = None
    solver: str = "picard"
    seed_block: int = 0
    snapshot: int | None = None  # evaluate the training's kept checkpoint of this step, not its last one
    # sample with a schedule `fpdm.sampling.calibrate` measured for this budget and sampler
    calibrated: bool = False
    labels: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("labels")
        d["train"] = d["train"]["name"]
        for later in ("snapshot", "calibrated"):  # cells without them keep the keys they had before them
            if not d[later]:
                d.pop(later)
        if d["tol"] is not None:  # --tol became per-sample: results from the batch-wide rule are not reused
            d["tol_rule"] = "per-sample"
        if self.calibrated:  # a change in how schedules are measured must not reuse the cells of the old
            d["calibration"] = CALIBRATION_RULE
        return d


# ------------------------------------------------------------------------------------------- experiments

FPDM = TrainSpec("fpdm", "FPDM-T/2")
DIT = TrainSpec("dit", "DiT-T/2")
DIT_EQ_PARAMS = TrainSpec("dit-depth3", "DiT-T/2", overrides=(("depth", 3),))  # 0.98 M vs FPDM's 1.09 M
DIT_EQ_WALL = TrainSpec("dit-eqwall", "DiT-T/2")  # trained for FPDM's wall-clock (steps set at run time)
# Second training seed of the headline models: training-seed noise is reported next to sampling-seed noise
FPDM_SEED1 = TrainSpec("fpdm-seed1", "FPDM-T/2", train=(("seed", 1),))
DIT_SEED1 = TrainSpec("dit-seed1", "DiT-T/2", train=(("seed", 1),))


def _fpdm_with(mode: str, n: int, m: int) -> TrainSpec:
    return TrainSpec(f"{mode}-N{n}-M{m}", "FPDM-T/2",
                     train=(("fp_mode", mode), ("fp_max_no_grad", n), ("fp_max_with_grad", m)))


def _feasible(budget: int, k: int) -> bool:
    return budget % (2 + k) == 0  # pre 1 + k + post 1


def experiments(scale: Scale) -> list[EvalSpec]:
    """Every evaluation cell of the reproduction; the train tasks follow from them."""
    cells: list[EvalSpec] = []
    blocks = range(scale.sampling_seeds)
    steps = scale.train_steps
    for b in blocks:
        for budget in scale.budgets:
            for sampler in ("ddpm", "ddim"):
                for base in (DIT, DIT_EQ_PARAMS):
                    if budget % base_depth(base) == 0:
                        cells.append(EvalSpec("smoothing", base, steps, budget, sampler=sampler,
                                              seed_block=b))
                for k in scale.iters:
                    if _feasible(budget, k):
                        for reuse in (False, True):
                            cells.append(EvalSpec("smoothing", FPDM, steps, budget, iters=k, sampler=sampler,
                                                  reuse=reuse, seed_block=b))
            # Table 5 analogue: profiles at ~2-3 average iterations over budget/6 steps (DiT's step count)
            n_steps = budget // 6
            for profile in ("constant", "increasing", "decreasing", "released"):
                cells.append(EvalSpec("allocation", FPDM, steps, budget, steps=n_steps, profile=profile,
                                      seed_block=b))
            # beyond the paper: adaptive tolerance and Anderson at the same budgets
            for tol, solver in ((None, "anderson"), (0.05, "picard"), (0.05, "anderson")):
                cells.append(EvalSpec("adaptive", FPDM, steps, budget, steps=n_steps, tol=tol, solver=solver,
                                      seed_block=b))
        # Tables 3 and 4 analogues at the middle budget, best-k range of the tiny model
        budget = scale.budgets[min(1, len(scale.budgets) - 1)]
        k = max(k for k in scale.iters if _feasible(budget, k) and k <= 4)
        for spec, kk in ((FPDM, k), (FPDM_SEED1, k), (DIT, None), (DIT_SEED1, None)):
            cells.append(EvalSpec("training_seeds", spec, steps, budget, iters=kk, seed_block=b))
        for n in (1, 2, 3, 6):
            cells.append(EvalSpec("table3", _fpdm_with("sjfb", n, n), scale.ablation_steps, budget, iters=k,
                                  seed_block=b))
        for n in (2, 4):
            for mode in ("jfb", "multistep", "sjfb"):
                cells.append(EvalSpec("table4", _fpdm_with(mode, n, 4), scale.ablation_steps, budget,
                                      iters=k, seed_block=b))
    # beyond the paper: a schedule calibrated on other seeds (`fpdm.sampling.calibrate`) at every budget
    cells += [EvalSpec("calibrated", FPDM, steps, budget, calibrated=True, seed_block=b)
              for b in blocks for budget in scale.budgets]
    return cells


def base_depth(spec: TrainSpec) -> int:
    return dict(spec.overrides).get("depth", 6)


# ------------------------------------------------------------------------------------------------ workers


def _one_thread() -> None:
    """One intra-op thread for torch and for numpy's BLAS: with two workers on two cores, a second BLAS
    thread made a 128×128 eigh in the metrics 25× slower."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _cached(path: Path) -> dict[str, Any] | None:
    """A finished task's result, or None if there is none — or if it is damaged (not valid JSON, or not
    matching its digest): then the task runs again, with a warning, rather than stopping the whole study."""
    from fpdm.common.digest import DamagedFile, read_json

    if not path.exists():
        return None
    try:
        return read_json(path)
    except DamagedFile as e:
        warnings.warn(f"{e}; running its task again", stacklevel=2)
        return None


def _store(path: Path, result: dict[str, Any]) -> None:
    """Keep a finished task's result, with its digest, atomically."""
    from fpdm.common.checkpoint import atomic_write
    from fpdm.common.digest import with_json_digest

    text = json.dumps(with_json_digest(result), indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def _train_task(args: tuple) -> dict[str, Any]:
    spec, scale, steps, root, *rest = args  # (..., device) optionally
    device = rest[0] if rest else "cpu"
    from fpdm.config import TrainConfig
    from fpdm.models.registry import model_config
    from fpdm.training.loop import resume, train
    from fpdm.training.run_folder import CHECKPOINT_NAME

    _one_thread()
    out = Path(root) / "train" / spec.key(scale, steps)
    summary_path = out / "summary.json"
    cached = _cached(summary_path)
    if cached is not None:  # the name is a label: equal settings under two names share one training
        return cached | {"name": spec.name}
    cfg = TrainConfig(out_dir=str(out), steps=steps, batch_size=scale.batch_size, lr=scale.lr,
                      warmup_steps=scale.warmup_steps, log_every=max(1, steps // 40),
                      ckpt_every=max(1, steps // 10), device=device, **dict(spec.train))
    if (out / CHECKPOINT_NAME).exists():  # to the key's steps: a folder seeded from a shorter run trains on
        summary = resume(out, steps=steps, device=device, progress=False)
    else:
        mc = model_config(spec.model, input_size=8, in_channels=1, num_classes=10, **dict(spec.overrides))
        summary = train(cfg, mc, progress=False)
    summary.update(name=spec.name, spec=asdict(spec))
    if not summary["interrupted"]:
        _store(summary_path, summary)
    return summary


def _eval_task(args: tuple) -> dict[str, Any]:
    spec, scale, root, *rest = args  # (..., device) optionally; the device does not enter the cache key
    device = rest[0] if rest else "cpu"
    from fpdm.evaluation.evaluate import digits_metrics
    from fpdm.sampling.loop import SamplerSettings
    from fpdm.sampling.many import class_labels, sample_seeds
    from fpdm.weights.loading import load_model

    _one_thread()
    path = Path(root) / "eval" / f"{_key(spec.settings() | {'scale': asdict(scale)})}.json"
    cached = _cached(path)
    if cached is not None:
        return cached
    from fpdm.training.run_folder import CHECKPOINT_NAME, snapshot_path

    folder = Path(root) / "train" / spec.train.key(scale, spec.train_steps)
    ckpt = folder / CHECKPOINT_NAME if spec.snapshot is None else snapshot_path(folder, spec.snapshot)
    model, diffusion, _ = load_model(ckpt)
    model.to(device)
    seeds = list(range(spec.seed_block * 100_000, spec.seed_block * 100_000 + scale.num_samples))
    labels = class_labels(10, len(seeds))
    settings = SamplerSettings(sampler=spec.sampler, reuse=spec.reuse, tol=spec.tol, solver=spec.solver)
    schedule = None
    if spec.calibrated:
        from fpdm.sampling.calibrate import check_schedule

        schedule = _schedule(Path(root), spec, scale, model, diffusion, settings, device)
        check_schedule(schedule, model, settings, spec.budget, source=f"the schedule of {spec.train.name}")
    run = sample_seeds(model, diffusion, seeds, labels=labels, budget=spec.budget, iters=spec.iters,
                       steps=spec.steps, profile=spec.profile, settings=settings, batch_size=len(seeds),
                       device=device, schedule=schedule)
    x, rec = run.samples, run.record
    metrics = digits_metrics(x, labels, bootstrap=10, kid_subsets=20)
    result = {"settings": spec.settings(), "steps": rec["steps"], "blocks": rec["blocks_counted"],
              "flops_per_sample": rec["flops_per_sample"], "sample_wall_s": rec["wall_s"],
              "iters_run": rec["iters_run"], **{k: metrics[k] for k in ("digits_fid", "kid", "precision",
                                                                        "recall", "class_consistency")}}
    if schedule is not None:
        result["schedule"] = {
            "steps": schedule["steps"], "iters": schedule["iters"], "cost": schedule["cost"],
            "candidates": [{k: c.get(k) for k in ("steps", "score", "predicted_error")}
                           for c in schedule["candidates"]]}
    if spec.seed_block == 0 and spec.experiment == "smoothing" and spec.budget == scale.grid_budget \
            and spec.sampler == "ddpm" and not spec.reuse:
        from fpdm.common.images import save_image_grid

        dit = spec.iters is None  # a DiT has no k
        grid = Path(root) / "grids" / f"{spec.train.name}{'' if dit else f'-k{spec.iters}'}.png"
        shown = seeds[:100]
        save_image_grid(x[:100], grid, nrow=10, upscale=4, padding=2, labels=labels[:100],
                        caption=f"{spec.train.name}{'' if dit else f', k={spec.iters}'}: {rec['steps']} DDPM "
                                f"steps, budget {spec.budget}, seeds {shown[0]}-{shown[-1]}")
        result["grid"] = str(grid)
    _store(path, result)
    return result


def calibration_seeds(scale: Any) -> range:
    """The calibration seeds of a study: `fpdm.sampling.calibrate`'s default block (disjoint from the
    evaluation
    blocks, which start at 0, 100000, ...), no more than a cell samples."""
    from fpdm.sampling.calibrate import DEFAULT_SEEDS

    return DEFAULT_SEEDS[:min(len(DEFAULT_SEEDS), scale.num_samples)]


def _schedule(root: Path, spec: EvalSpec, scale: Any, model: Any, diffusion: Any, settings: Any,
              device: str) -> dict[str, Any]:
    """The calibrated schedule of a cell's training, budget and sampler: measured once (under a lock, as
    the cells of several seed blocks share it and run side by side), cached under `<root>/schedules`."""
    from fpdm.common.lock import FolderInUse, hold
    from fpdm.evaluation.evaluate import digits_metrics
    from fpdm.sampling.calibrate import calibrate

    max_iters = getattr(scale, "max_iters", None) or max(scale.iters)
    key = _key({"train": spec.train.key(scale, spec.train_steps), "budget": spec.budget,
                "sampler": spec.sampler, "reuse": spec.reuse, "max_iters": max_iters,
                "seeds": len(calibration_seeds(scale)), "rule": CALIBRATION_RULE})
    folder = root / "schedules" / key
    path = folder / "schedule.json"
    while True:
        try:
            with hold(folder, "calibration"):
                cached = _cached(path)
                if cached is not None:
                    return cached
                seeds = calibration_seeds(scale)

                def fid(x: Any, labels: Any) -> float:
                    return float(digits_metrics(x, labels, bootstrap=2, kid_subsets=2)["digits_fid"])

                schedule = calibrate(model, diffusion, spec.budget, seeds=seeds, settings=settings,
                                     max_iters=max_iters, measure_samples=min(64, len(seeds)), score=fid,
                                     device=device, checkpoint=spec.train.name)
                _store(path, schedule)
                return schedule
        except FolderInUse:  # another worker is measuring it: wait for its result
            time.sleep(2)


def _run_parallel(fn: Callable, jobs: list, workers: int, progress: Callable[[str], None]) -> list:
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(job))
            progress(f"{i + 1}/{len(jobs)}")
        return out
    pool = mp.get_context("spawn").Pool(workers)
    try:
        out = []
        for i, res in enumerate(pool.imap(fn, jobs)):
            out.append(res)
            progress(f"{i + 1}/{len(jobs)}")
        pool.close()
        return out
    finally:
        pool.terminate() if pool._state != "CLOSE" else None
        pool.join()


def _run_tasks(trains: list[tuple[TrainSpec, int]], cells: list[EvalSpec], scale: Any, root: Path,
               workers: int, log: Callable[[str], None], device: str = "cpu"
               ) -> tuple[list[dict], list[dict]]:
    """Run the trainings (in the given order) and the cells on `workers` processes, each cell as soon as
    its training has finished, so no worker waits at a barrier. Returns (summaries, results) in input order.
    A cell whose training is not in `trains` must have been trained already."""
    jobs: list[tuple[str, int, tuple]] = [("train", i, (spec, scale, n, str(root), device))
                                          for i, (spec, n) in enumerate(trains)]
    index = {t: i for i, t in enumerate(trains)}
    waiting = list(enumerate(cells))
    summaries: list[Any] = [None] * len(trains)
    results: list[Any] = [None] * len(cells)

    def ready() -> tuple[str, int, tuple] | None:
        if jobs:
            return jobs.pop(0)
        for pos, (i, c) in enumerate(waiting):
            t = index.get((c.train, c.train_steps))
            if t is None or summaries[t] is not None:
                del waiting[pos]
                return ("eval", i, (c, scale, str(root), device))
        return None

    def finished(kind: str, i: int, res: dict) -> None:
        if kind == "train":
            if res.get("interrupted"):
                raise KeyboardInterrupt("a training was interrupted; run the same command again to resume")
            summaries[i] = res
            log(f"trained {res['name']} ({sum(s is not None for s in summaries)}/{len(trains)})")
        else:
            results[i] = res
            n = sum(r is not None for r in results)
            if n % 20 == 0 or n == len(cells):
                log(f"eval {n}/{len(cells)}")

    fns = {"train": _train_task, "eval": _eval_task}
    if workers <= 1:
        while (job := ready()) is not None:
            finished(job[0], job[1], fns[job[0]](job[2]))
        return summaries, results
    pool = mp.get_context("spawn").Pool(workers)
    try:
        flight: list[tuple[Any, str, int]] = []
        while True:
            while len(flight) < workers and (job := ready()) is not None:
                flight.append((pool.apply_async(fns[job[0]], (job[2],)), job[0], job[1]))
            if not flight:
                break
            done = [f for f in flight if f[0].ready()]
            if not done:
                time.sleep(0.1)
                continue
            for f in done:
                flight.remove(f)
                finished(f[1], f[2], f[0].get())
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return summaries, results


def run(scale_name: str, root: str | Path, workers: int = 2, log: Callable[[str], None] = print,
        device: str = "cpu") -> dict[str, Any]:
    """Train what is missing, evaluate every cell, write `<root>/README.md` and plots; return the results."""
    scale = SCALES[scale_name]
    root = Path(root)
    t0 = time.perf_counter()
    cells = experiments(scale)
    trainings = sorted({(c.train, c.train_steps) for c in cells}, key=lambda t: (t[0].name, t[1]))
    log(f"{len(trainings)} trainings, {len(cells)} evaluation cells -> {root}")
    # The same-width DiT is trained again for FPDM's training wall-clock instead of its step count, so FPDM
    # and DiT train first (their measured times are cached, so the step count is stable across re-runs);
    # the equal-wall-clock DiT then trains alongside everything else, keeping both workers busy.
    first = [t for t in trainings if t[0] in (FPDM, DIT)]
    summaries = _run_parallel(_train_task, [(s, scale, n, str(root), device) for s, n in first], workers,
                              lambda p: log(f"train FPDM and DiT {p}"))
    if any(s.get("interrupted") for s in summaries):
        raise KeyboardInterrupt("a training was interrupted; run the same command again to resume")
    by_name = {s["name"]: s for s in summaries}
    eq_steps = max(1, round(by_name["fpdm"]["wall_s"] / (by_name["dit"]["wall_s"] / by_name["dit"]["step"])))
    eq_cells = [replace(c, train=DIT_EQ_WALL, train_steps=eq_steps) for c in cells
                if c.experiment == "smoothing" and c.train == DIT and c.sampler == "ddpm"]
    rest = [(DIT_EQ_WALL, eq_steps)] + [t for t in trainings if t[0] not in (FPDM, DIT)]
    summaries += _run_parallel(_train_task, [(s, scale, n, str(root), device) for s, n in rest], workers,
                               lambda p: log(f"train the rest (equal wall-clock DiT: {eq_steps} steps) {p}"))
    if any(s.get("interrupted") for s in summaries):
        raise KeyboardInterrupt("a training was interrupted; run the same command again to resume")
    cells = cells + eq_cells
    results = _run_parallel(_eval_task, [(c, scale, str(root), device) for c in cells], workers,
                            lambda p: log(f"eval {p}") if int(p.split("/")[0]) % 20 == 0 or
                            p == f"{len(cells)}/{len(cells)}" else None)
    report = write_report(root, scale_name, scale, summaries, results, time.perf_counter() - t0)
    log(f"wrote {report}")
    return {"trainings": summaries, "cells": results}


# ------------------------------------------------------------------------------------------------ report


def _mean_se(vals: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(vals), dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _group(results: list[dict], experiment: str, keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in results:
        s = r["settings"]
        if s["experiment"] == experiment:
            out.setdefault(tuple(s[k] for k in keys), []).append(r)
    return out


def _paired(a: list[dict], b: list[dict], metric: str = "digits_fid") -> str:
    """Mean ± s.e. of a − b over the sampling-seed blocks both have (same noise and labels: paired)."""
    fb = {r["settings"]["seed_block"]: r[metric] for r in b}
    diffs = [r[metric] - fb[r["settings"]["seed_block"]] for r in a if r["settings"]["seed_block"] in fb]
    if not diffs:
        return "–"
    m, se = _mean_se(diffs)
    return f"{m:+.2f} ± {se:.2f}"


def _fmt(rows: list[dict], metric: str = "digits_fid") -> str:
    m, se = _mean_se(r[metric] for r in rows)
    return f"{m:.2f} ± {se:.2f}"


RECOMMENDED_K = (4, 8)  # the seed's advice for iterations per step


def _verdict(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return "one block: no verdict"
    m, se = _mean_se(diffs)
    return "calibrated wins" if m + 2 * se < 0 else "calibrated loses" if m - 2 * se > 0 else \
        "within 2 s.e."


def calibrated_section(results: list[dict], names: Iterable[str], budgets: Iterable[int]) -> list[str]:
    """Markdown: each calibrated cell against the best fixed (k, profile) cell of the grid at its budget
    (picked on the evaluation seeds: an optimistic bar) and against the constant k the seed recommends
    (4-8, nearest feasible), paired over the sampling-seed blocks; with what the calibration cost."""
    lines = ["## Calibrated schedules (beyond the paper; `fpdm calibrate`)", "",
             "A schedule measured on calibration seeds 900000+ (disjoint from the evaluation blocks): steps "
             "chosen by digits-FID on those seeds, iterations per step by the measured error tables. "
             "Compared, paired over the same sampling-seed blocks (DDPM), with the best fixed cell of the "
             "grid at that budget (constant k or a Table 5 profile, picked on the evaluation seeds) and with "
             "the constant k the seed recommends (4–8, nearest feasible). Verdict: a difference beyond "
             "2 s.e.", "",
             "| model | budget | calibrated: FID | steps; iterations | best fixed cell | cal − best | "
             "verdict | seed's k | cal − seed's k | verdict | calibration cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fixed_cells(name: str, budget: int) -> dict[tuple, list[dict]]:
        out: dict[tuple, list[dict]] = {}
        for r in results:
            st = r["settings"]
            if st["train"] == name and st["budget"] == budget and st["experiment"] in ("smoothing",
                                                                                        "allocation") \
                    and st["sampler"] == "ddpm" and not st["reuse"] and st.get("tol") is None \
                    and st.get("solver", "picard") == "picard" and not st.get("snapshot") \
                    and not st.get("calibrated"):
                key = ("k", st["iters"]) if st["iters"] is not None else (st["profile"], st["steps"])
                out.setdefault(key, []).append(r)
        return out

    measured: list[str] = []

    def diffs(a: list[dict], b: list[dict]) -> list[float]:
        fb = {r["settings"]["seed_block"]: r["digits_fid"] for r in b}
        return [r["digits_fid"] - fb[r["settings"]["seed_block"]] for r in a
                if r["settings"]["seed_block"] in fb]

    for name in names:
        for budget in budgets:
            cal = [r for r in results if r["settings"]["experiment"] == "calibrated"
                   and r["settings"]["train"] == name and r["settings"]["budget"] == budget]
            if not cal:
                continue
            cells = fixed_cells(name, budget)
            full = {k: v for k, v in cells.items() if len(v) == len(cal)}
            best_key = min(full, key=lambda k: _mean_se(r["digits_fid"] for r in full[k])[0]) if full \
                else None
            ks = [k[1] for k in full if k[0] == "k"]
            lo, hi = RECOMMENDED_K
            seed_k = min(ks, key=lambda k: (max(lo - k, 0, k - hi), abs(k - (lo + hi) / 2))) if ks else None
            sch = cal[0]["schedule"]
            iters = sch["iters"]
            plan = f"{sch['steps']}; {min(iters)}–{max(iters)}" if iters else f"{sch['steps']}; –"
            cost = sch["cost"]
            row = [name, str(budget), _fmt(cal), plan]
            for key in (best_key, ("k", seed_k) if seed_k is not None else None):
                if key is None:
                    row += ["–", "–", "–"]
                    continue
                label = f"k = {key[1]}" if key[0] == "k" else f"{key[0]}, {key[1]} steps"
                d = diffs(cal, full[key])
                m, se = _mean_se(d)
                row += ([f"{label}: {_fmt(full[key])}"] if key == best_key else [label]) + \
                    [f"{m:+.2f} ± {se:.2f}", _verdict(d)]
            worth = cost.get("as_many_blocks_as_sampling_images", 0)
            row.append(f"{cost['seconds']:.0f} s, {cost['blocks']:,} blocks (≈ {worth:,.0f} samples' worth)")
            lines.append("| " + " | ".join(row) + " |")
            measured.append(f"- {name}, budget {budget}: " + ", ".join(
                f"{c['steps']} steps" + (f" → {c['score']:.2f}" if c.get("score") is not None else "")
                for c in sch["candidates"]))
    if measured:
        lines += ["", "What the calibration measured: digits-FID of each candidate step count on the "
                  "calibration seeds (with its measured allocation); the lowest was used.", "", *measured]
    return lines + [""]


def write_report(root: Path, scale_name: str, scale: Scale, summaries: list[dict], results: list[dict],
                 wall: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# fpdm reproduce ({scale_name})", "",
             f"Scale: `{json.dumps(asdict(scale))}`; wall time {wall / 60:.1f} min (cached tasks not "
             "re-run).", "Metric: digits-FID vs the 297 held-out digits (lower is better), mean ± s.e. over "
             f"{scale.sampling_seeds} sampling-seed blocks of {scale.num_samples} samples; every cell uses "
             "the same noise and labels per block.", "", "## Trainings", "",
             "| name | steps | parameters | ms/step | peak RSS MiB |", "|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['name']} | {s['step']} | {s['parameters']:,} | {s['ms_per_step']} | "
                     f"{s['peak_rss_mib']} |")
    # Training curves: the comparisons only mean something once the losses have flattened
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for summ in summaries:
        log_path = Path(summ["checkpoint"]).parent / "log.jsonl"
        if log_path.exists():
            recs = [json.loads(line) for line in log_path.read_text().splitlines() if line]
            ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], lw=1, label=summ["name"])
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "training.png", dpi=120)
    plt.close(fig)
    lines += ["", "![training curves](training.png)"]
    # Fig. 4: smoothing
    smooth = _group(results, "smoothing", ("train", "budget", "sampler", "iters", "reuse"))
    fig, axes = plt.subplots(1, len(scale.budgets), figsize=(4.5 * len(scale.budgets), 3.5), squeeze=False)
    lines += ["", "## Smoothing across timesteps (Fig. 4) and reuse (Sec. 5.3)", "",
              "| budget | sampler | k | steps | FPDM | FPDM + reuse | DiT (same width) | DiT (depth 3) | "
              "FPDM − DiT (paired) | reuse − no reuse (paired) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for ax, budget in zip(axes[0], scale.budgets, strict=True):
        for sampler, style in (("ddpm", "-"), ("ddim", "--")):
            ks = sorted(k for (t, b, s, k, r) in smooth
                        if t == "fpdm" and b == budget and s == sampler and not r)
            if not ks:
                continue
            means = [_mean_se(r["digits_fid"] for r in smooth[("fpdm", budget, sampler, k, False)])
                     for k in ks]
            ax.errorbar(ks, [m for m, _ in means], yerr=[e for _, e in means], fmt="o" + style,
                        label=f"FPDM {sampler}")
            for name, color in (("dit", "k"), ("dit-depth3", "grey")):
                base = smooth.get((name, budget, sampler, None, False))
                if base:
                    ax.axhline(_mean_se(r["digits_fid"] for r in base)[0], color=color, ls=style, lw=1,
                               label=f"{name} {sampler}")
            for k in ks:
                row = smooth[("fpdm", budget, sampler, k, False)]
                reuse = smooth.get(("fpdm", budget, sampler, k, True), [])
                dit = smooth.get(("dit", budget, sampler, None, False), [])
                eq = smooth.get(("dit-depth3", budget, sampler, None, False), [])
                lines.append(f"| {budget} | {sampler} | {k} | {row[0]['steps']} | {_fmt(row)} | "
                             f"{_fmt(reuse) if reuse else '–'} | {_fmt(dit) if dit else '–'} | "
                             f"{_fmt(eq) if eq else '–'} | {_paired(row, dit)} | {_paired(reuse, row)} |")
        ax.set_title(f"budget {budget} blocks (DiT: {budget // 6} steps)")
        ax.set_xlabel("iterations per step")
        ax.set_ylabel("digits-FID")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "smoothing.png", dpi=120)
    plt.close(fig)
    lines += ["", "![smoothing](smoothing.png)", ""]
    # Headline: best FPDM k per budget against the baselines, with FLOPs and sampling wall-clock per sample
    lines += ["## Headline: FPDM (best k) vs DiT at equal block budget (DDPM)", "",
              "| budget | model | k | digits-FID | FPDM − this (paired) | GFLOPs/sample | "
              "sampling ms/sample |",
              "|---|---|---|---|---|---|---|"]
    for budget in scale.budgets:
        fp = {k: rows for (t, b, smp, k, r), rows in smooth.items()
              if t == "fpdm" and b == budget and smp == "ddpm" and not r}
        entries = []
        if fp:
            best = min(fp, key=lambda k: _mean_se(r["digits_fid"] for r in fp[k])[0])
            entries.append(("fpdm", best, fp[best]))
        for name in ("dit", "dit-depth3", "dit-eqwall"):
            if (name, budget, "ddpm", None, False) in smooth:
                entries.append((name, "–", smooth[(name, budget, "ddpm", None, False)]))
        for name, k, rows in entries:
            per = 1000 * np.mean([r["sample_wall_s"] for r in rows]) / scale.num_samples
            gflops = rows[0]["flops_per_sample"] / 1e9
            diff = _paired(entries[0][2], rows) if entries[0][0] == "fpdm" and name != "fpdm" else "–"
            lines.append(f"| {budget} | {name} | {k} | {_fmt(rows)} | {diff} | {gflops:.3f} | {per:.2f} |")
    lines.append("")
    # Every other table with a paired column against its natural reference (same noise and labels)
    alloc = _group(results, "allocation", ("budget", "profile"))
    t4_sjfb = {k[0]: rows for k, rows in _group(results, "table4", ("train",)).items()}
    seeds = _group(results, "training_seeds", ("train", "budget", "iters"))
    seed0 = {"fpdm-seed1": "fpdm", "dit-seed1": "dit"}
    t3_ref = _group(results, "table3", ("train",)).get(("sjfb-N3-M3",))
    sections = (
        ("Training-seed repeat (seed 0 vs 1, DDPM)", "training_seeds", ("train", "budget", "iters"),
         "the seed-0 model",
         lambda key: next((rows for k, rows in seeds.items() if k[0] == seed0.get(key[0]) and k[1] == key[1]),
                          None)),
        ("Allocation profiles (Table 5)", "allocation", ("budget", "profile"), "constant",
         lambda key: alloc.get((key[0], "constant"))),
        ("Adaptive tolerance and Anderson (beyond the paper)", "adaptive", ("budget", "tol", "solver"),
         "constant allocation, plain iteration", lambda key: alloc.get((key[0], "constant"))),
        ("S-JFB training iterations (Table 3)", "table3", ("train", "budget", "iters"), "S-JFB N = M = 3",
         lambda key: t3_ref),
        ("JFB vs multi-step JFB vs S-JFB (Table 4)", "table4", ("train", "budget", "iters"),
         "S-JFB at the same N", lambda key: t4_sjfb.get("sjfb-" + key[0].split("-", 1)[1])),
    )
    for title, exp, keys, ref_name, ref in sections:
        groups = _group(results, exp, keys)
        lines += [f"## {title}", "", "| " + " | ".join(keys) + f" | digits-FID | class consistency | "
                  f"− {ref_name} (paired) |", "|" + "---|" * (len(keys) + 3)]
        for key, rows in groups.items():
            base = ref(key)
            lines.append("| " + " | ".join(str(v) for v in key) + f" | {_fmt(rows)} | "
                         f"{_fmt(rows, 'class_consistency')} | {_paired(rows, base) if base else '–'} |")
        lines.append("")
    lines += calibrated_section(results, ["fpdm"], scale.budgets)
    grids = sorted((root / "grids").glob("*.png")) if (root / "grids").exists() else []
    if grids:
        lines += [f"## Sample grids at budget {scale.grid_budget} (Fig. 5), same seeds", ""]
        lines += [f"{g.stem}: ![{g.stem}](grids/{g.name})" for g in grids]
    path = root / "README.md"
    path.write_text("\n".join(lines) + "\n")
    (root / "results.json").write_text(json.dumps({"trainings": summaries, "cells": results}, indent=1))
    return path


__all__ = ["FULL", "QUICK", "SCALES", "TINY", "EvalSpec", "Scale", "TrainSpec", "experiments", "run"]
