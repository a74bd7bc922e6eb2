"""The studies engine: training and evaluation cells keyed by their settings, a cache folder that makes
every study resumable, single-threaded worker processes, calibrated schedules for cells that ask for one,
and the paired statistics the reports print. Each study (`digits`, `ratio`, `longer`) declares its models,
cells and verdicts on top of it."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def cache_key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainSpec:
    name: str  # human label, e.g. "fpdm", "dit", "sjfb-N6-M6"
    model: str
    overrides: tuple[tuple[str, Any], ...] = ()
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig fields beyond the scale's
    data: str = "digits"  # a named dataset (`fpdm.data.datasets.DATASETS`)
    # a built-in model trained by this very recipe: sampled from the package's weights, not trained here
    builtin: str | None = None

    def key(self, scale: Any, steps: int) -> str:  # a study's scale: batch_size, lr, warmup_steps
        if self.builtin:
            return cache_key({"builtin": self.builtin})
        d = {"model": self.model, "overrides": list(self.overrides), "train": list(self.train),
             "steps": steps, "batch": scale.batch_size, "lr": scale.lr, "warmup": scale.warmup_steps}
        if self.data != "digits":  # the digits studies' keys stay as they were
            d["data"] = self.data
        return cache_key(d)


IMAGE_SIZE = {"digits": 8, "fashion-mnist": 32}  # the side a study's models are built for, by dataset


def fid_of(result: dict[str, Any]) -> float:
    """A cell's FID, whichever feature network scored it (digits-FID or fashion-FID)."""
    return result["digits_fid"] if "digits_fid" in result else result["fashion_fid"]


def score_samples(x: Any, labels: Any, data: str, *, bootstrap: int = 10, kid_subsets: int = 20
                  ) -> dict[str, Any]:
    """A study's metrics for samples of `data`: digits-FID or fashion-FID and their companions."""
    from fpdm.evaluation.evaluate import digits_metrics, fashion_metrics

    metric = fashion_metrics if data == "fashion-mnist" else digits_metrics
    return metric(x, labels, bootstrap=bootstrap, kid_subsets=kid_subsets)


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
    spacing: str = "uniform"
    reuse: bool = False
    tol: float | None = None
    solver: str = "picard"
    seed_block: int = 0
    snapshot: int | None = None  # evaluate the training's kept checkpoint of this step, not its last one
    # sample with a schedule `fpdm.sampling.calibrate` measured for this budget and sampler
    calibrated: bool = False
    labels: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def sampler_settings(self) -> Any:
        """The sampler options a cell samples with (`fpdm.sampling.loop.SamplerSettings`)."""
        from fpdm.sampling.loop import SamplerSettings

        return SamplerSettings(sampler=self.sampler, spacing=self.spacing, reuse=self.reuse, tol=self.tol,
                               solver=self.solver)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("labels")
        d["train"] = d["train"]["name"]
        for later in ("snapshot", "calibrated"):  # cells without them keep the keys they had before them
            if not d[later]:
                d.pop(later)
        if d["spacing"] == "uniform":
            d.pop("spacing")
        if d["tol"] is not None:  # --tol's rules changed (per-sample, then savings spent as they come):
            d["tol_rule"] = "per-sample-spent"  # results of an older rule are not reused
        if self.calibrated:  # a change in how schedules are measured must not reuse the cells of the old
            d["calibration"] = CALIBRATION_RULE
        return d


def _one_thread() -> None:
    """One intra-op thread for torch and for numpy's BLAS: with two workers on two cores, a second BLAS
    thread made a 128×128 eigh in the metrics 25× slower."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def cached_result(path: Path) -> dict[str, Any] | None:
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


def store_result(path: Path, result: dict[str, Any]) -> None:
    """Keep a finished task's result, with its digest, atomically."""
    from fpdm.common.checkpoint import atomic_write
    from fpdm.common.digest import with_json_digest

    text = json.dumps(with_json_digest(result), indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def train_task(args: tuple) -> dict[str, Any]:
    spec, scale, steps, root, *rest = args  # (..., device) optionally
    device = rest[0] if rest else "cpu"
    from fpdm.config import TrainConfig
    from fpdm.models.registry import model_config
    from fpdm.training.loop import resume, train
    from fpdm.training.run_folder import CHECKPOINT_NAME

    _one_thread()
    if spec.builtin:
        return builtin_summary(spec)
    out = Path(root) / "train" / spec.key(scale, steps)
    summary_path = out / "summary.json"
    cached = cached_result(summary_path)
    if cached is not None:  # the name is a label: equal settings under two names share one training
        return cached | {"name": spec.name}
    kw = dict(out_dir=str(out), steps=steps, batch_size=scale.batch_size, lr=scale.lr,
              warmup_steps=scale.warmup_steps, log_every=max(1, steps // 40), ckpt_every=max(1, steps // 10),
              device=device, data=spec.data)
    cfg = TrainConfig(**(kw | dict(spec.train)))  # a spec's recipe may set the log and checkpoint cadence
    if (out / CHECKPOINT_NAME).exists():  # to the key's steps: a folder seeded from a shorter run trains on
        summary = resume(out, steps=steps, device=device, progress=False)
    else:
        mc = model_config(spec.model, input_size=IMAGE_SIZE[spec.data], in_channels=1, num_classes=10,
                          **dict(spec.overrides))
        # a log left by this very training, killed before its first checkpoint, is started afresh
        summary = train(cfg, mc, progress=False, overwrite=True)
    summary.update(name=spec.name, spec=asdict(spec))
    if not summary["interrupted"]:
        store_result(summary_path, summary)
    return summary


def builtin_summary(spec: TrainSpec) -> dict[str, Any]:
    """A training's summary for a built-in model, from what its weights folder records of its run."""
    from safetensors import safe_open

    from fpdm.weights.builtin import resolve

    folder = Path(resolve(spec.builtin))
    cfg = json.loads((folder / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        parameters = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    recipe, steps = cfg.get("recipe", {}), cfg["step"]
    if recipe.get("data", "digits") != spec.data:
        raise ValueError(f"built-in {spec.builtin} was trained on {recipe.get('data')!r}, not {spec.data!r}")
    wall = cfg.get("train_wall_s")
    return {"name": spec.name, "builtin": spec.builtin, "step": steps, "checkpoint": spec.builtin,
            "parameters": parameters,
            "ms_per_step": round(1000 * wall / steps, 3) if wall else None,
            "recipe": recipe, "interrupted": False, "spec": asdict(spec)}


def eval_path(root: Path, spec: EvalSpec, scale: Any) -> Path:
    """Where a cell's result is cached: keyed by its settings and its study's scale."""
    return Path(root) / "eval" / f"{cache_key(spec.settings() | {'scale': asdict(scale)})}.json"


def eval_task(args: tuple) -> dict[str, Any]:
    spec, scale, root, *rest = args  # (..., device) optionally; the device does not enter the cache key
    device = rest[0] if rest else "cpu"
    from fpdm.sampling.many import class_labels, sample_seeds

    _one_thread()
    path = eval_path(root, spec, scale)
    cached = cached_result(path)
    if cached is not None:
        return cached
    started = time.perf_counter()
    model, diffusion = cell_model(spec, scale, root, device)
    seeds = list(range(spec.seed_block * 100_000, spec.seed_block * 100_000 + scale.num_samples))
    labels = class_labels(10, len(seeds))
    settings = spec.sampler_settings()
    schedule = None
    if spec.calibrated:
        from fpdm.sampling.calibrate import check_schedule

        schedule = _schedule(Path(root), spec, scale, model, diffusion, settings, device)
        check_schedule(schedule, model, settings, spec.budget, source=f"the schedule of {spec.train.name}")
    run = sample_seeds(model, diffusion, seeds, labels=labels, budget=spec.budget, iters=spec.iters,
                       steps=spec.steps, profile=spec.profile, settings=settings, batch_size=len(seeds),
                       device=device, schedule=schedule)
    x, rec = run.samples, run.record
    metrics = score_samples(x, labels, spec.train.data)
    fid = "fashion_fid" if spec.train.data == "fashion-mnist" else "digits_fid"
    result = {"settings": spec.settings(), "steps": rec["steps"], "blocks": rec["blocks_counted"],
              "flops_per_sample": rec["flops_per_sample"], "sample_wall_s": rec["wall_s"],
              "iters_run": rec["iters_run"], **{k: metrics[k] for k in (fid, "kid", "precision", "recall",
                                                                        "class_consistency")}}
    if schedule is not None:
        result["schedule"] = {
            "steps": schedule["steps"], "iters": schedule["iters"], "cost": schedule["cost"],
            "candidates": [{k: c.get(k) for k in ("steps", "score", "predicted_error")}
                           for c in schedule["candidates"]]}
    if spec.labels.get("grid") or (spec.seed_block == 0 and spec.experiment == "smoothing"
                                   and spec.budget == scale.grid_budget and spec.sampler == "ddpm"
                                   and not spec.reuse):
        from fpdm.common.images import save_image_grid

        dit = spec.iters is None  # a DiT has no k
        spaced = "" if spec.spacing == "uniform" else f"-{spec.spacing}"  # two spacings: two files
        grid = Path(root) / "grids" / f"{spec.train.name}{'' if dit else f'-k{spec.iters}'}{spaced}.png"
        sampler = ("DDPM" if spec.sampler == "ddpm" else spec.sampler) + spaced.replace("-", " ")
        shown = seeds[:100]
        name = f"{spec.train.name}{'' if dit else f', k={spec.iters}'}"
        save_image_grid(x[:100], grid, nrow=10, upscale=4 if x.shape[-1] <= 8 else 2, padding=2,
                        labels=labels[:100], caption=f"{name}: {rec['steps']} {sampler} steps, budget "
                                                     f"{spec.budget}, seeds {shown[0]}-{shown[-1]}")
        result["grid"] = str(grid)
    result["task_wall_s"] = round(time.perf_counter() - started, 3)  # what the cell cost: plans read it
    store_result(path, result)
    return result


def cell_model(spec: EvalSpec, scale: Any, root: Path, device: str = "cpu") -> tuple[Any, Any]:
    """(model, diffusion) a cell samples: a built-in's weights, or the study's own training (its last
    checkpoint, or the kept one of `spec.snapshot`)."""
    from fpdm.training.run_folder import CHECKPOINT_NAME, snapshot_path
    from fpdm.weights.loading import load_model

    folder = Path(root) / "train" / spec.train.key(scale, spec.train_steps)
    ckpt = folder / CHECKPOINT_NAME if spec.snapshot is None else snapshot_path(folder, spec.snapshot)
    model, diffusion, _ = load_model(spec.train.builtin or ckpt)
    return model.to(device), diffusion


def strip_path(root: Path, spec: EvalSpec, scale: Any, n: int) -> Path:
    return Path(root) / "strips" / f"{cache_key(spec.settings() | {'scale': asdict(scale), 'n': n})}.npy"


def sample_strip(spec: EvalSpec, scale: Any, root: Path, n: int, device: str = "cpu") -> np.ndarray:
    """The first `n` samples of a cell (its seed block's first seeds and classes: the cell's own first `n`,
    up to float rounding between batch sizes) as uint8 [n, H, W, C], cached under <root>/strips: what a
    figure shows, at a fraction of the cell's cost and without its metrics."""
    from fpdm.common.checkpoint import atomic_write
    from fpdm.common.images import to_uint8
    from fpdm.sampling.many import class_labels, sample_seeds

    if spec.calibrated:
        raise ValueError("a strip samples fixed settings; a calibrated cell's schedule is not measured here")
    path = strip_path(root, spec, scale, n)
    if path.exists():
        return np.load(path)
    _one_thread()
    model, diffusion = cell_model(spec, scale, root, device)
    first = spec.seed_block * 100_000
    settings = spec.sampler_settings()
    run = sample_seeds(model, diffusion, range(first, first + n), labels=class_labels(10, n),
                       budget=spec.budget, iters=spec.iters, steps=spec.steps, profile=spec.profile,
                       settings=settings, batch_size=n, device=device)
    pixels = to_uint8(run.samples)  # [n, H, W, C]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.save(f, pixels))
    return pixels


def calibration_seeds(scale: Any) -> range:
    """The calibration seeds of a study: `fpdm.sampling.calibrate`'s default block (disjoint from the
    evaluation
    blocks, which start at 0, 100000, ...), no more than a cell samples."""
    from fpdm.sampling.calibrate import DEFAULT_SEEDS

    return DEFAULT_SEEDS[:min(len(DEFAULT_SEEDS), scale.num_samples)]


def calibration_max_iters(scale: Any) -> int:
    """The most iterations a calibrated schedule may give one step in a study of this scale."""
    return getattr(scale, "max_iters", None) or max(scale.iters)


def schedule_path(root: Path, spec: EvalSpec, scale: Any) -> Path:
    """Where the calibrated schedule of a cell's training, budget and sampler is cached: shared by the cells
    of every seed block."""
    key = cache_key({"train": spec.train.key(scale, spec.train_steps), "budget": spec.budget,
                     "sampler": spec.sampler, "reuse": spec.reuse, "max_iters": calibration_max_iters(scale),
                     "seeds": len(calibration_seeds(scale)), "rule": CALIBRATION_RULE})
    return Path(root) / "schedules" / key / "schedule.json"


def _schedule(root: Path, spec: EvalSpec, scale: Any, model: Any, diffusion: Any, settings: Any,
              device: str) -> dict[str, Any]:
    """The calibrated schedule of a cell's training, budget and sampler: measured once (under a lock, as
    the cells of several seed blocks share it and run side by side), cached under `<root>/schedules`."""
    from fpdm.common.lock import FolderInUse, hold
    from fpdm.sampling.calibrate import calibrate

    max_iters = calibration_max_iters(scale)
    path = schedule_path(root, spec, scale)
    folder = path.parent
    while True:
        try:
            with hold(folder, "calibration"):
                cached = cached_result(path)
                if cached is not None:
                    return cached
                seeds = calibration_seeds(scale)

                def fid(x: Any, labels: Any) -> float:
                    return fid_of(score_samples(x, labels, spec.train.data, bootstrap=2, kid_subsets=2))

                schedule = calibrate(model, diffusion, spec.budget, seeds=seeds, settings=settings,
                                     max_iters=max_iters, measure_samples=min(64, len(seeds)), score=fid,
                                     device=device, checkpoint=spec.train.name)
                store_result(path, schedule)
                return schedule
        except FolderInUse:  # another worker is measuring it: wait for its result
            time.sleep(2)


def run_parallel(fn: Callable, jobs: list, workers: int, progress: Callable[[str], None]) -> list:
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


PROGRESS_EVERY_S = 300.0  # a study's trainings run for hours: say where they are this often


def last_logged(root: Path, spec: TrainSpec, scale: Any, steps: int) -> dict[str, Any] | None:
    """The last complete line of a training's log.jsonl (None before its first): a line being written is
    skipped."""
    path = Path(root) / "train" / spec.key(scale, steps) / "log.jsonl"
    last = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                last = rec
    return last


def training_progress(root: Path, spec: TrainSpec, scale: Any, steps: int) -> str:
    """Where a training stands: 'name step S/N (P %, ≈ M min left)' at its latest ms/step; 'name starting'
    before its first log line."""
    last = last_logged(root, spec, scale, steps)
    if last is None:
        return f"{spec.name} starting"
    done = int(last["step"])
    left = (steps - done) * float(last.get("ms_per_step") or 0.0) / 60e3
    return f"{spec.name} step {done:,}/{steps:,} ({100 * done / steps:.0f} %, ≈ {left:.0f} min left)"


def pick_cell(waiting: list[tuple[int, EvalSpec]], trained: Callable[[EvalSpec], bool],
              measuring: set[Path], root: Path, scale: Any) -> int | None:
    """Position in `waiting` of the next cell to start: the first whose training has finished, passing over
    a calibrated cell whose schedule an in-flight cell is measuring (it would only wait on that worker for
    minutes; the cells of two seed blocks come side by side); None if none can start now."""
    for pos, (_, c) in enumerate(waiting):
        if not trained(c):
            continue
        if c.calibrated and (path := schedule_path(root, c, scale)) in measuring and not path.exists():
            continue
        return pos
    return None


def run_tasks(trains: list[tuple[TrainSpec, int]], cells: list[EvalSpec], scale: Any, root: Path,
               workers: int, log: Callable[[str], None], device: str = "cpu",
               progress_every: float = PROGRESS_EVERY_S) -> tuple[list[dict], list[dict]]:
    """Run the trainings (in the given order) and the cells on `workers` processes, each cell as soon as
    its training has finished, so no worker waits at a barrier. Returns (summaries, results) in input order
    (a cell listed twice is run once and its result returned at both places).
    A cell whose training is not in `trains` must have been trained already. Every `progress_every`
    seconds, `log` gets a line with the trainings in flight and the cells done."""
    jobs: list[tuple[str, int, tuple]] = [("train", i, (spec, scale, n, str(root), device))
                                          for i, (spec, n) in enumerate(trains)]
    index = {t: i for i, t in enumerate(trains)}
    # a cell listed twice runs once: two workers on one cell would race on its cache file and return
    # two measurements (different wall-clocks) of what a rerun reads back as one
    first: dict[EvalSpec, int] = {}
    for i, c in enumerate(cells):
        first.setdefault(c, i)
    waiting = [(i, c) for c, i in first.items()]
    summaries: list[Any] = [None] * len(trains)
    results: list[Any] = [None] * len(cells)
    measuring: dict[int, Path] = {}  # in-flight calibrated cells: the schedule each may be measuring

    def ready() -> tuple[str, int, tuple] | None:
        if jobs:
            return jobs.pop(0)
        pos = pick_cell(waiting, lambda c: (c.train, c.train_steps) not in index
                        or summaries[index[(c.train, c.train_steps)]] is not None,
                        set(measuring.values()), root, scale)
        if pos is None:
            return None
        i, c = waiting.pop(pos)
        if c.calibrated:
            measuring[i] = schedule_path(root, c, scale)
        return ("eval", i, (c, scale, str(root), device))

    def finished(kind: str, i: int, res: dict) -> None:
        if kind == "train":
            if res.get("interrupted"):
                raise KeyboardInterrupt("a training was interrupted; run the same command again to resume")
            summaries[i] = res
            log(f"trained {res['name']} ({sum(s is not None for s in summaries)}/{len(trains)})")
        else:
            measuring.pop(i, None)
            results[i] = res
            n = sum(r is not None for r in results)
            if n % 20 == 0 or n == len(first):
                log(f"eval {n}/{len(first)}")

    fns = {"train": train_task, "eval": eval_task}
    if workers <= 1:
        while (job := ready()) is not None:
            finished(job[0], job[1], fns[job[0]](job[2]))
        return summaries, [results[first[c]] for c in cells]
    pool = mp.get_context("spawn").Pool(workers)
    try:
        flight: list[tuple[Any, str, int]] = []
        said = time.monotonic()
        while True:
            while len(flight) < workers and (job := ready()) is not None:
                flight.append((pool.apply_async(fns[job[0]], (job[2],)), job[0], job[1]))
            if not flight:
                break
            done = [f for f in flight if f[0].ready()]
            if not done:
                if time.monotonic() - said >= progress_every:
                    said = time.monotonic()
                    running = [training_progress(root, trains[i][0], scale, trains[i][1])
                               for _, kind, i in flight if kind == "train"]
                    cells_done = sum(r is not None for r in results)
                    log("progress: " + "; ".join([*running, f"cells {cells_done}/{len(first)}"]))
                time.sleep(0.1)
                continue
            for f in done:
                flight.remove(f)
                finished(f[1], f[2], f[0].get())
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return summaries, [results[first[c]] for c in cells]


def grid_section(root: Path, title: str) -> list[str]:
    """Markdown lines showing the sample grids under `<root>/grids` (none: no lines)."""
    grids = sorted((root / "grids").glob("*.png")) if (root / "grids").exists() else []
    return [f"## {title}", "", *[f"{g.stem}: ![{g.stem}](grids/{g.name})" for g in grids]] if grids else []


def environment() -> dict[str, Any]:
    """Where a study's numbers came from: the commit of this source tree (None outside git), the CPU and
    its logical CPU count, the Python version."""
    import os
    import platform
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"commit": commit, "machine": f"{cpu}, {os.cpu_count()} logical CPUs",
            "python": platform.python_version()}


INVOCATIONS = "invocations.jsonl"


def start_invocation(root: Path, meta: dict[str, Any]) -> Callable[[], None]:
    """Record one run of a study's command in <root>/invocations.jsonl (its start, commit, machine, workers)
    and return a heartbeat that moves its `last` time to now: a study resumed over several sessions sums
    its wall time from these, and a killed run loses only the time since its last heartbeat."""
    path = Path(root) / INVOCATIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    records = read_invocations(root)
    now = time.time()
    records.append(meta | {"start": now, "last": now})

    def beat() -> None:
        records[-1]["last"] = time.time()
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(path)  # whole or not at all: a kill mid-write leaves the previous file

    beat()
    return beat


def read_invocations(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / INVOCATIONS
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def invocations_wall_s(records: list[dict[str, Any]]) -> float:
    """Total wall seconds of a study's runs: each from its start to its last heartbeat."""
    return float(sum(r["last"] - r["start"] for r in records))


def mean_se(vals: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(vals), dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def group_results(results: list[dict], experiment: str, keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in results:
        s = r["settings"]
        if s["experiment"] == experiment:
            out.setdefault(tuple(s[k] for k in keys), []).append(r)
    return out


def _metric(r: dict, metric: str | None) -> float:
    return fid_of(r) if metric is None else r[metric]


def paired_diffs(a: list[dict], b: list[dict], metric: str | None = None) -> list[float]:
    """a − b per sampling-seed block both have (same noise and labels: paired); FID unless `metric`."""
    fb = {r["settings"]["seed_block"]: _metric(r, metric) for r in b}
    return [_metric(r, metric) - fb[r["settings"]["seed_block"]] for r in a
            if r["settings"]["seed_block"] in fb]


def paired(a: list[dict], b: list[dict], metric: str | None = None) -> str:
    """Mean ± s.e. of a − b over the sampling-seed blocks both have (same noise and labels: paired)."""
    diffs = paired_diffs(a, b, metric)
    if not diffs:
        return "–"
    m, se = mean_se(diffs)
    return f"{m:+.2f} ± {se:.2f}"


def fmt(rows: list[dict], metric: str | None = None) -> str:
    m, se = mean_se(_metric(r, metric) for r in rows)
    return f"{m:.2f} ± {se:.2f}"


def verdict_of(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return "one block: no verdict"
    m, se = mean_se(diffs)
    return "calibrated wins" if m + 2 * se < 0 else "calibrated loses" if m - 2 * se > 0 else \
        "within 2 s.e."
