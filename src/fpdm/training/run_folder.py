"""A training run's folder: the checkpoint and its kept predecessors (rotation, fallback on damage), the
numbered snapshots, the loss log and the summary. The loop (`fpdm.training.loop`) writes them; resume,
sampling and the studies read them.
"""

from __future__ import annotations

import json
import os
import resource
from functools import partial
from pathlib import Path
from typing import IO, Any

from fpdm.common.checkpoint import atomic_write, load_checkpoint
from fpdm.common.digest import DamagedFile

CHECKPOINT_NAME = "ckpt.pt"
LOG_NAME = "log.jsonl"


def _write_bytes(data: bytes, f: IO[bytes]) -> None:
    f.write(data)


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> None:
    """`<out_dir>/summary.json`: the run's wall time, speed and memory (`fpdm train` writes it)."""
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def train_summary_lines(summary: dict[str, Any], out_dir: str | Path) -> list[str]:
    """A short aligned account of a training run for people (summary.json keeps every number)."""
    log = Path(out_dir) / LOG_NAME
    last = None
    if log.exists():
        losses = [r for r in map(json.loads, filter(str.strip, log.read_text().splitlines())) if "loss" in r]
        last = losses[-1]["loss"] if losses else None
    ms = summary.get("ms_per_step")
    rows = [("model", f"{summary['arch']}, {summary['parameters']:,} parameters"),
            ("steps", f"{summary['step']} ({summary['steps_this_run']} this run"
                      f"{', interrupted' if summary.get('interrupted') else ''})"),
            ("wall", f"{summary['wall_s']:.1f} s" + (f", {ms:.1f} ms/step" if ms else "")
             + f", peak RSS {summary['peak_rss_mib']:.0f} MiB"),
            ("loss", "–" if last is None else f"{last:.4f} (last log record)"),
            ("files", f"{summary['checkpoint']}, {log}, {Path(out_dir) / 'summary.json'}")]
    return [f"{k:>6}  {v}" for k, v in rows]


def previous_path(out_dir: str | Path, i: int) -> Path:
    """Where `keep_last` keeps the i-th checkpoint before the latest (i = 1 is the one just before)."""
    return Path(out_dir) / f"ckpt.prev{i}.pt"


def _hold_latest(out: Path, keep_last: int) -> Path | None:
    """Before `ckpt.pt` is replaced: a second name (hard link) for it, so it survives the replacement."""
    ckpt, held = out / CHECKPOINT_NAME, out / f"{CHECKPOINT_NAME}.held"
    if keep_last < 1 or not ckpt.exists():
        return None
    held.unlink(missing_ok=True)
    try:
        os.link(ckpt, held)  # the same bytes under a second name, without copying them
    except OSError:  # a filesystem without hard links
        atomic_write(held, partial(_write_bytes, ckpt.read_bytes()))
    return held


def _keep_previous(out: Path, held: Path | None, keep_last: int) -> None:
    """Once the new `ckpt.pt` is safely written: the held one becomes `ckpt.prev1.pt` (prev1 → prev2, …),
    `keep_last` of them kept. Done after the write so a failed write (a full disk) loses none of them."""
    for i in range(keep_last + 1, keep_last + 100):  # fewer kept than before: drop the surplus
        if not previous_path(out, i).exists():
            break
        previous_path(out, i).unlink()
    if held is None:
        return
    for i in range(keep_last, 1, -1):
        if previous_path(out, i - 1).exists():
            os.replace(previous_path(out, i - 1), previous_path(out, i))
    os.replace(held, previous_path(out, 1))


def resume_point(out_dir: str | Path, fallback: bool = False) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a resume starts from, and its state: `ckpt.pt`, checked. If it is missing or damaged,
    a ValueError names the damage and the newest intact `ckpt.prevN.pt` (which `fallback` resumes from)."""
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    kept = [previous_path(out, i) for i in range(1, 100) if previous_path(out, i).exists()]
    if not ckpt_path.exists() and not kept:
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
    try:
        return ckpt_path, load_checkpoint(ckpt_path)
    except DamagedFile as e:
        damage = f"{e.path} is damaged: {e.what}"
    except (ValueError, FileNotFoundError) as e:  # unreadable (truncated, not a checkpoint) or missing
        damage = str(e).splitlines()[0]
    for prev in kept:
        try:
            state = load_checkpoint(prev)
        except ValueError:
            continue
        if not fallback:
            raise ValueError(f"{damage}; {prev} (step {state.get('step')}) is intact: add --fallback to "
                             "resume from it (the steps after it are trained again)")
        state["_fallback_from"] = damage  # resume() says so and sets the damaged file aside
        return prev, state
    raise ValueError(f"{damage}; " + ("no intact earlier checkpoint is kept either" if kept else
                                      "no earlier checkpoint is kept (--keep-last)")
                     + ": restore the run folder from a copy or start again")


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    """Where `keep_every` keeps the checkpoint of `step` (beside the latest `ckpt.pt`)."""
    return Path(out_dir) / f"ckpt-{step:07d}.pt"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a record torn by a crash mid-write
            continue
    path.write_text("".join(line + "\n" for line in keep))
