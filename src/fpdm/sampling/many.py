"""Sampling many seeds: a budget or step spec turned into a plan, batches, a resumable parts folder and
torchrun sharding — the one library call behind `fpdm sample`, `fpdm sweep` and `fpdm reproduce`.

    run = sample_seeds(model, diffusion, range(1000), budget=120, iters=2, parts="out/x.parts")
    run.samples, run.labels, run.seeds, run.record

With `parts`, each finished batch is kept there atomically and batches already there are loaded instead of
sampled again, so an interrupted run resumes with the same result (every sample has its own seeded
generator). Under torchrun (`world`), batch i is sampled by process i mod N and the first process gathers
the batches from `parts`; the others get None. The batches are the same whatever N, so are the samples.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fpdm.common.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from fpdm.common.distributed import World
from fpdm.common.lock import hold
from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.diffusion.samplers import SAMPLERS
from fpdm.models.dit import DiT
from fpdm.models.fpdm import FPDM
from fpdm.sampling import (
    loop as sampling,  # looked up at call time, so a patched sampler (tests) is the one used
)
from fpdm.sampling.budget import DEFAULT_RATIO, plan_budget
from fpdm.sampling.loop import SamplerSettings

__all__ = ["MAX_ITERS", "MAX_STEPS", "SampleRun", "check_settings", "class_labels", "count_parts",
           "discard_empty_parts", "parts_folder", "remove_parts",
           "resolve_steps", "sample_seeds", "summary_lines", "write_record", "write_samples"]


@dataclass
class SampleRun:
    samples: Tensor  # (N, C, H, W) in [-1, 1]
    labels: Tensor  # (N,) int64
    seeds: list[int]
    record: dict[str, Any]  # what ran: settings, steps, iterations and blocks per batch, FLOPs, wall time


def label_index(label: int | str | None, class_names: Sequence[str] | None, num_classes: int) -> int | None:
    """`--label` as a class index: a number, or a class name of the weights (any case), e.g. "dogs" for a
    folder dataset or "Ankle boot" for Fashion-MNIST; an unknown name is a ValueError listing the names."""
    if label is None or isinstance(label, int):
        return label
    text = str(label).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    names = [str(n) for n in class_names or []]
    found = [i for i, n in enumerate(names) if n.lower() == text.lower()]
    if not found:
        known = ", ".join(repr(n) for n in names) if names else \
            f"indices 0-{max(num_classes - 1, 0)} (these weights record no class names)"
        raise ValueError(f"--label {label!r} is not a class of these weights; expected one of {known}")
    return found[0]


def class_labels(num_classes: int, n: int, label: int | None = None) -> Tensor:
    """`label` for every sample, or the classes in turn (0, 1, …); zeros for an unconditional model."""
    if label is not None and not 0 <= label < max(num_classes, 1):
        raise ValueError(f"--label {label} is out of range: the model has {num_classes} classes")
    if num_classes == 0:
        return torch.zeros(n, dtype=torch.long)
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) % num_classes


def resolve_steps(model: DiT | FPDM, budget: int | None, steps: int | str | None, iters: int | None,
                  profile: str = "constant", ratio: float = DEFAULT_RATIO, sampler: str = "ddpm"
                  ) -> tuple[int | str, list[int] | int | None]:
    """(steps for the sampler, iterations per model evaluation) from a budget with `iters` or `steps`, or
    from a step spec ("50", "ddim25", "10,20"; default 50) and a constant `iters` without one."""
    if iters is not None and iters < 0:
        raise ValueError(f"--iters must be >= 0 (0 skips the fixed-point layer), got {iters}")
    cfg = model.config
    spec = steps if steps is not None else (None if budget is not None else "50")
    if budget is not None:
        if spec is not None and not str(spec).isdigit():
            raise ValueError(f"--steps {spec!r}: with --budget give a plain number of steps")
        plan = plan_budget(cfg, budget, iters=iters, steps=int(spec) if spec else None, profile=profile,
                           ratio=ratio, sampler=sampler)
        n_steps, per_step = plan.steps, (list(plan.iters) or None)
    else:
        n_steps = int(spec) if str(spec).isdigit() else spec
        if n_steps == 0:
            raise ValueError("--steps must be >= 1, got 0")
        per_step = iters
    if cfg.arch == "dit" and iters is not None:
        raise ValueError("--iters applies to FPDM checkpoints only")
    return n_steps, per_step


MAX_STEPS, MAX_ITERS = 100_000, 10_000  # beyond these a run is almost surely a typo (`--no-limits`)


def check_settings(model: DiT | FPDM, settings: SamplerSettings, *, budget: int | None, steps: Any,
                   profile: str, label: int | None, n_steps: int | str, per_step: Any,
                   limits: bool = True) -> None:
    """Refuse settings that would change nothing (and so make the record lie) or run absurdly long:
    a ValueError naming the flag and why."""
    cfg = model.config
    rule = SAMPLERS[settings.sampler]
    if settings.eta != 0 and not rule.takes_eta:
        why = "DDPM's noise is set by the schedule" if settings.sampler == "ddpm" else \
            f"{settings.sampler} solves the deterministic probability-flow ODE"
        raise ValueError(f"--eta {settings.eta} applies to --sampler ddim only ({why})")

    if isinstance(steps, str) and steps.startswith("ddim") and settings.sampler != "ddim":
        raise ValueError(f"--steps {steps} is DDIM's spacing; add --sampler ddim, or give a plain number of "
                         "steps for DDPM")
    if settings.anderson_window != 5 and settings.solver != "anderson":
        raise ValueError(f"--anderson-window {settings.anderson_window} applies to --solver anderson only")
    if profile != "constant" and (budget is None or steps is None):
        raise ValueError(f"--profile {profile} spreads the iterations of --budget over --steps; without both "
                         "it changes nothing")
    if cfg.arch == "dit":
        for flag, used in (("--reuse", settings.reuse), ("--tol", settings.tol is not None),
                           (f"--solver {settings.solver}", settings.solver != "picard")):
            if used:
                raise ValueError(f"{flag} applies to FPDM checkpoints only: a DiT has no fixed point to "
                                 "solve")
    if label is not None and cfg.num_classes == 0:
        raise ValueError(f"--label {label}: this model is unconditional (it was trained without classes)")
    if limits:
        if isinstance(n_steps, int) and n_steps > MAX_STEPS:
            raise ValueError(f"{n_steps:,} sampling steps is over the limit of {MAX_STEPS:,}; pass "
                             "--no-limits if you mean it")
        most = max(per_step) if isinstance(per_step, list) and per_step else per_step
        if isinstance(most, int) and most > MAX_ITERS:
            raise ValueError(f"{most:,} fixed-point iterations in one step is over the limit of "
                             f"{MAX_ITERS:,}; pass --no-limits if you mean it")


def sample_seeds(model: DiT | FPDM, diffusion: GaussianDiffusion, seeds: Sequence[int], *,
                 labels: Tensor | None = None, budget: int | None = None, steps: int | str | None = None,
                 iters: int | None = None, profile: str = "constant", ratio: float = DEFAULT_RATIO,
                 settings: SamplerSettings | None = None, batch_size: int = 256, device: str = "cpu",
                 parts: str | Path | None = None, world: World | None = None, progress: bool = False,
                 identity: dict[str, Any] | None = None, schedule: dict[str, Any] | None = None
                 ) -> SampleRun | None:
    """Sample every seed (labels: default `class_labels`) in batches and merge the batches' records.

    `schedule` (`fpdm.sampling.calibrate`; checked by the caller with `check_schedule`) gives the steps and
    every
    step's iterations in place of `budget`/`steps`/`iters`/`profile`.
    `identity` (e.g. the checkpoint and whether EMA weights are used) joins the settings that a parts
    folder must match to be resumed; the folder stays until the caller has written the samples out and
    calls `remove_parts`. Returns None on the processes of a torchrun world other than the first."""
    world = world or World()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    settings = settings or SamplerSettings()
    if settings.sampler in ("euler", "heun") and float(diffusion.alphas_cumprod[-1]) == 0.0:
        raise ValueError(f"--sampler {settings.sampler} integrates in σ = √((1 − ᾱ)/ᾱ), which is infinite at "
                         "this zero-terminal-SNR model's first step: use --sampler ddim, ddpm or dpm++2m")
    if schedule is not None:
        n_steps, per_step = schedule["steps"], schedule["iters"]
        budget, profile = schedule["budget"], "calibrated"
    else:
        n_steps, per_step = resolve_steps(model, budget, steps, iters, profile, ratio, settings.sampler)
    seeds = [int(s) for s in seeds]
    labels = class_labels(model.config.num_classes, len(seeds)) if labels is None else labels
    parts = Path(parts) if parts is not None else None
    if parts is None and world.size > 1:
        raise ValueError("sampling with several processes needs an output folder for the batches")
    with hold(parts or ".", "fpdm sample", enabled=parts is not None and world.is_main):  # one per folder
        run = _sample_batches(model, diffusion, seeds, labels, n_steps, per_step, settings, batch_size,
                              device, parts, world, progress, identity, budget, profile, ratio)
    if run is not None and schedule is not None:  # the record says where the plan came from
        run.record["schedule"] = {k: schedule.get(k) for k in ("checkpoint", "weights_hash",
                                                                "calibration_seeds", "cost")}
    return run


def _sample_batches(model: DiT | FPDM, diffusion: GaussianDiffusion, seeds: list[int], labels: Tensor,
                    n_steps: int | str, per_step: Any, settings: SamplerSettings, batch_size: int,
                    device: str, parts: Path | None, world: World, progress: bool,
                    identity: dict[str, Any] | None, budget: int | None, profile: str, ratio: float
                    ) -> SampleRun | None:
    done: dict[int, tuple[Tensor, dict]] = {}  # this process's batches, by index into `chunks`
    kept: dict[tuple[int, int], Path] = {}
    if parts is not None:
        if world.is_main:
            legacy = _open_parts(parts, {**(identity or {}), "steps": n_steps, "iters": per_step,
                                         "settings": settings_fingerprint(settings), "seeds": seeds,
                                         "labels": labels.tolist()})
            _name_legacy_parts(parts, legacy, len(seeds))
        world.barrier()
        kept = finished_ranges(parts, len(seeds))
        world.barrier()  # every process has the same plan before any writes a batch
    ranges = plan_batches(len(seeds), batch_size, list(kept))
    for i, (lo, hi) in enumerate(ranges):
        if i % world.size != world.rank:
            continue
        shard = parts / f"{lo:07d}-{hi:07d}.pt" if parts is not None else None
        part = _load_part(kept.get((lo, hi)))
        if part is not None:
            x, rec = part
        else:
            x, rec = sampling.sample(model, diffusion, labels[lo:hi], seeds[lo:hi],
                                     steps=n_steps, iters=per_step, settings=settings, device=device,
                                     progress=progress)
            if shard is not None:
                save_checkpoint(shard, {"x": x, "record": rec})
        done[i] = (x, rec)
    if world.size > 1:
        world.barrier()  # every batch is in `parts` now
        if not world.is_main:
            return None
        for i, (lo, hi) in enumerate(ranges):  # the other processes' batches
            if i not in done and (part := _load_part(parts / f"{lo:07d}-{hi:07d}.pt")) is not None:
                done[i] = part
        if len(done) != len(ranges):
            raise RuntimeError(f"a process did not leave its batches in {parts}")
    chunks, records = [done[i][0] for i in range(len(ranges))], [done[i][1] for i in range(len(ranges))]
    record = dict(records[0])
    record.update(budget=budget, profile=profile, ratio=ratio, num_samples=len(seeds),
                  seeds=[seeds[0], seeds[-1]], wall_s=round(sum(r["wall_s"] for r in records), 4),
                  batch_sizes=[hi - lo for lo, hi in ranges],
                  blocks_counted_per_batch=[r["blocks_counted"] for r in records],
                  iters_run_per_batch=[r["iters_run"] for r in records])
    record.update(_merged(records, [len(c) for c in chunks]))
    return SampleRun(torch.cat(chunks), labels, seeds, record)


def _merged(records: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """The whole run's figures from its batches' records (not the first batch's): blocks per sample and
    mean iterations per step weighted by batch size, the batches' largest iteration counts per step, and
    every batch's block calls and FLOPs."""
    total = sum(sizes)

    def mean(key: str) -> float | int:
        v = sum(r[key] * n for r, n in zip(records, sizes, strict=True)) / total
        return int(v) if float(v).is_integer() else round(v, 3)

    out: dict[str, Any] = {
        "blocks_counted": mean("blocks_counted"), "flops_per_sample": mean("flops_per_sample"),
        "block_calls": sum(r.get("block_calls", r["blocks_counted"]) for r in records)}
    if records[0]["iters_run"]:
        out["iters_run"] = [max(steps) for steps in zip(*(r["iters_run"] for r in records), strict=True)]
    if all("iters_run_mean" in r for r in records):
        out["iters_run_mean"] = [round(sum(m * n for m, n in zip(col, sizes, strict=True)) / total, 3)
                                 for col in zip(*(r["iters_run_mean"] for r in records), strict=True)]
    return out


def settings_fingerprint(settings: SamplerSettings) -> dict[str, Any]:
    """The sampler settings a parts folder must match: the fields added after a folder was written are
    left out at their defaults, so interrupted runs of older versions still resume."""
    d = asdict(settings)
    for later, default in (("tol_mode", "reallocate"), ("spacing", "uniform")):
        if d.get(later) == default:
            del d[later]
    return d


def parts_folder(prefix: str | Path) -> Path:
    """The resumable parts folder kept beside an output prefix while its batches are sampled."""
    return Path(f"{prefix}.parts")


def remove_parts(parts: str | Path) -> None:
    """Remove a parts folder once its batches are written out."""
    shutil.rmtree(parts)


def count_parts(parts: str | Path) -> int:
    """Finished batches kept in a parts folder."""
    return len(list(Path(parts).glob("[0-9]*.pt")))


def discard_empty_parts(parts: str | Path) -> None:
    """Remove a parts folder that holds no finished batch (nothing worth keeping)."""
    parts = Path(parts)
    if parts.exists() and not count_parts(parts):
        shutil.rmtree(parts)


def write_samples(prefix: str | Path, samples: Tensor, labels: Tensor, seeds: Sequence[int], *,
                  latents: Tensor | None = None, nrow: int = 10, upscale: int = 4,
                  caption: str | None = None, show_labels: bool = True,
                  class_names: Sequence[str] | None = None) -> tuple[Path, Path]:
    """`<prefix>.png` (grid: class labels in the corners, or `class_names` above columns of one class;
    `caption` above) and `<prefix>.npz` (samples,
    labels, seeds[, latents]); returns both paths. The suffix is appended, not substituted, so a prefix
    like "…-tol0.1" keeps its dot."""
    from fpdm.common.images import save_image_grid

    png, npz = Path(f"{prefix}.png"), Path(f"{prefix}.npz")
    save_image_grid(samples, png, nrow=nrow, upscale=upscale, padding=2,
                    labels=labels if show_labels else None, caption=caption, class_names=class_names)
    np.savez_compressed(npz, samples=samples.numpy(), labels=labels.numpy(), seeds=np.array(seeds),
                        **({"latents": latents.numpy()} if latents is not None else {}))
    return png, npz


def write_record(prefix: str | Path, record: dict[str, Any]) -> Path:
    """`<prefix>.json`: the record of what ran, beside the samples."""
    path = Path(f"{prefix}.json")
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def grid_caption(record: dict[str, Any], name: str) -> str:
    """One line of settings for a sample grid, from the run's record."""
    s = record.get("settings", {})
    per = record.get("iters_planned") or []
    # ASCII only: the grid's font has no "×" or "–"
    iters = f", {min(per)}-{max(per)} iterations" if per and min(per) != max(per) else \
        f" x {per[0]} iterations" if per else ""
    extras = [v for v in (s.get("reuse") and "reuse", s.get("tol") and f"tol {s['tol']}",
                          s.get("cfg_scale", 1) != 1 and f"cfg {s['cfg_scale']}",
                          s.get("eta") and f"eta {s['eta']}") if v]
    budget = f"budget {record['budget']}, " if record.get("budget") else ""
    seeds = record.get("seeds", ["?", "?"])
    return (f"{name}: {s.get('sampler', 'ddpm')} {record.get('steps')} steps{iters}, {budget}"
            + "".join(f"{e}, " for e in extras) + f"seeds {seeds[0]}-{seeds[-1]}")


def summary_lines(record: dict[str, Any], prefix: str | Path) -> list[str]:
    """A short aligned account of a sampling run for people (the whole record stays in `<prefix>.json`)."""
    s = record.get("settings", {})
    runs = record.get("iters_run_per_batch") or [record.get("iters_run", [])]
    per_step = sorted({k for batch in runs for k in batch})
    iters = (f" × {per_step[0]} iterations" if len(per_step) == 1 else
             f", {per_step[0]}–{per_step[-1]} iterations per step" if per_step else "")
    counted = sorted(set(record.get("blocks_counted_per_batch") or [record.get("blocks_counted")]))
    budget = f"budget {record['budget']}, " if record.get("budget") is not None else ""
    seeds = record.get("seeds", ["?", "?"])
    lines = [("samples", f"{record.get('num_samples')} (seeds {seeds[0]}–{seeds[-1]}), {record.get('arch')}, "
                         f"{'EMA' if record.get('ema', True) else 'raw'} weights"),
             ("steps", f"{record.get('steps')} {s.get('sampler', '')} steps{iters}"
                       + (", reuse" if s.get("reuse") else "")
                       + (f", guidance {s['cfg_scale']}" if s.get("cfg_scale", 1) != 1 else "")),
             ("blocks", f"{budget}counted {', '.join(str(c) for c in counted)} per sample"),
             ("FLOPs", f"{record.get('flops_per_sample', 0) / 1e9:.3f} GFLOP per sample"),
             ("wall", f"{record.get('wall_s', 0):.1f} s")]
    if record.get("diverged_steps"):
        lines.append(("warning", f"the fixed point diverged at {len(record['diverged_steps'])} step(s)"))
    ev = record.get("eval")
    if ev:
        name = "fashion" if "fashion_fid" in ev else "digits"  # the feature network's data
        lines.append((name, f"FID {ev[f'{name}_fid']:.2f} ± {ev.get(f'{name}_fid_se', float('nan')):.2f}, "
                            f"precision {ev['precision']:.3f}, recall {ev['recall']:.3f}"
                            + (f", class consistency {ev['class_consistency']:.3f}"
                               if ev.get("class_consistency") is not None else "")))
    lines.append(("files", f"{prefix}.png, .npz, .json"))
    return [f"{k:>8}  {v}" for k, v in lines]


def _open_parts(parts: Path, fingerprint: dict) -> int | None:
    """Create the resumable-sampling folder, or check that the one there is for these very settings (the
    batch size is not one: a run may resume with another). Returns the batch size recorded by an older
    folder whose batches are named by index, else None."""
    spec = parts / "settings.json"
    text = json.dumps(fingerprint, sort_keys=True)
    if spec.exists():
        try:
            theirs = json.loads(spec.read_text())
        except (UnicodeDecodeError, ValueError):
            theirs = None  # damaged: refused like another run's settings (its batches cannot be trusted)
        legacy = theirs.pop("batch_size", None) if isinstance(theirs, dict) else None
        if theirs != fingerprint:
            differ = sorted(k for k in {*theirs, *fingerprint} if theirs.get(k) != fingerprint.get(k)) \
                if isinstance(theirs, dict) else ["(its settings.json is unreadable)"]
            raise ValueError(f"{parts} holds batches of an interrupted run with other settings "
                             f"({', '.join(differ)} differ); run again with that run's settings to resume "
                             "it, or delete the folder or choose another --out")
        print(f"resuming: {count_parts(parts)} finished batch(es) in {parts}", file=sys.stderr)
        if legacy is not None:
            atomic_write(spec, lambda f: f.write(text.encode()))
        return legacy
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write(spec, lambda f: f.write(text.encode()))
    return None


def _name_legacy_parts(parts: Path, batch_size: int | None, n: int) -> None:
    """Rename an older folder's batches (`00003.pt`: the fourth batch of `batch_size`) by the samples they
    hold (`0000768-0001024.pt`), the names `finished_ranges` reads."""
    if batch_size is None:
        return
    for shard in parts.glob("[0-9][0-9][0-9][0-9][0-9].pt"):
        lo = int(shard.stem) * batch_size
        if lo < n:
            os.replace(shard, parts / f"{lo:07d}-{min(lo + batch_size, n):07d}.pt")


def finished_ranges(parts: str | Path, n: int) -> dict[tuple[int, int], Path]:
    """The finished batches in a parts folder, by the positions [lo, hi) of the seeds they hold; batches
    that overlap an earlier one or fall outside the n seeds are left aside (sampled again)."""
    found = {}
    for shard in sorted(Path(parts).glob("[0-9]*-[0-9]*.pt")):
        try:
            lo, hi = (int(v) for v in shard.stem.split("-"))
        except ValueError:
            continue
        if 0 <= lo < hi <= n and all(hi <= a or lo >= b for a, b in found):
            found[(lo, hi)] = shard
    return found


def plan_batches(n: int, batch_size: int, kept: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The batches [lo, hi) that cover n seeds in order: the finished ones `kept`, and the gaps between
    them cut into batches of at most `batch_size` (so a resume may use another batch size)."""
    out, pos = [], 0
    for lo, hi in sorted(kept) + [(n, n)]:
        while pos < lo:
            out.append((pos, min(pos + batch_size, lo)))
            pos = out[-1][1]
        if hi > lo:
            out.append((lo, hi))
        pos = max(pos, hi)
    return out


def _load_part(shard: Path | None) -> tuple[Tensor, dict] | None:
    """A finished batch, or None (not there, or unreadable or damaged: it is sampled again and rewritten,
    with a warning)."""
    if shard is None or not shard.exists():
        return None
    try:
        state = load_checkpoint(shard)
        return state["x"], state["record"]
    except (ValueError, KeyError) as e:
        why = str(e) if isinstance(e, ValueError) else f"{shard} has no {e} entry"
        warnings.warn(f"{why.splitlines()[0]}; sampling that batch again", stacklevel=2)
        return None
