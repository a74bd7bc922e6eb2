"""Budget sweeps (`fpdm sweep`): one budget, several k, and their table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig


def write_table(rows: list[dict[str, Any]], prefix: str | Path, settings: dict[str, Any]) -> None:
    """`<prefix>.json` (rows + settings) and `<prefix>.md` (a Markdown table)."""
    prefix = Path(prefix)
    Path(f"{prefix}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    head = ", ".join(f"{k}={v}" for k, v in settings.items())
    Path(f"{prefix}.md").write_text(f"{head}\n\n" + "\n".join(lines) + "\n")


def run_sweep(sample_k: Callable[[int | None], Any], ks: list[int | None], prefix: str | Path,
              model_cfg: ModelConfig, settings: dict[str, Any],
              on_row: Callable[[dict[str, Any]], None] = lambda row: None,
              on_skip: Callable[[int | None, ValueError], None] = lambda k, e: None) -> list[dict[str, Any]]:
    """Sample with each k (`sample_k(k)` returns a `SampleRun`; a k it refuses with ValueError is skipped),
    write `<prefix>-k<k>.png/.npz` and the table, and return the rows (digits metrics where they apply)."""
    from .evaluate import digits_eval
    from .images import save_image_grid

    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in ks:
        try:
            run = sample_k(k)
        except ValueError as e:
            on_skip(k, e)
            continue
        save_image_grid(run.samples, f"{prefix}-k{k}.png", nrow=10, upscale=4)
        np.savez_compressed(f"{prefix}-k{k}.npz", samples=run.samples.numpy(), labels=run.labels.numpy())
        rec = run.record
        rows.append({"iters": k, "steps": rec["steps"], "blocks_counted": rec["blocks_counted"],
                     "flops_per_sample": rec["flops_per_sample"], "wall_s": rec["wall_s"],
                     **digits_eval(run.samples, run.labels, model_cfg)})
        on_row(rows[-1])
    if rows:
        write_table(rows, prefix, settings)
    return rows
