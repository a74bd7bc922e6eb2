"""Shared helpers for the benchmark scripts: interleaved timing with medians, machine facts, JSON output.

These machines are noisy, so every comparison is timed in one process, alternating the variants on each
repeat, and reported as the ratio of medians."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                device: torch.device | str = "cpu", before: Callable[[], Any] | None = None
                ) -> dict[str, list[float]]:
    """Seconds per call of each variant, `repeats` times, alternating variants within each repeat;
    `before` runs untimed before every timed call (e.g. to evict the CPU caches)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if before is not None:
                before()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def median_ms(ts: list[float]) -> float:
    return 1000 * statistics.median(ts)


def write_json(name: str, payload: dict[str, Any], path: str | None = None) -> Path:
    out = Path(path) if path else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=1) + "\n")
    return out


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A Markdown table of `rows` restricted to `cols`."""
    def fmt(v: Any) -> str:
        return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def parser(name: str, settings: dict[str, Any] | None = None, repeats: int = 5) -> argparse.ArgumentParser:
    """The options every timing benchmark takes: --repeats, --threads, --json (and --settings)."""
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats (median reported)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    if settings:
        p.add_argument("--settings", default=",".join(settings), help="comma-separated settings")
    p.add_argument("--json", default=None, help=f"output JSON (default: benchmarks/results/{name}.json)")
    return p
