"""Samples during training (`--sample-every`): the EMA weights' samples on fixed seeds, a grid of them, and
where the data has a feature network its FID and class consistency, as records in log.jsonl and a plot of
loss and FID against steps. The training's own random streams are left exactly as they were."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from fpdm.common.images import save_image_grid
from fpdm.config import TrainConfig
from fpdm.evaluation.evaluate import digits_eval
from fpdm.sampling.many import sample_seeds

GRID_DIR = "samples"  # <run>/samples/step-<step>.png
CURVE_NAME = "training_curve.png"


def grid_path(out: str | Path, step: int) -> Path:
    return Path(out) / GRID_DIR / f"step-{step:07d}.png"


@torch.no_grad()
def sample_record(ema: Any, diffusion: Any, train_cfg: TrainConfig, step: int, out: str | Path,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Sample `train_cfg.sample_count` seeds from the EMA weights (DDPM, `sample_steps` steps, no guidance),
    write their grid, and return the log record {"step", "sample": {metrics, blocks, grid, seconds}}."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # label dropout draws from the global RNG: keep it untouched
        run = sample_seeds(ema, diffusion, range(train_cfg.sample_count), steps=train_cfg.sample_steps,
                           device=str(device))
        metrics = digits_eval(run.samples, run.labels, ema.config, train_cfg.data)
    cfg = ema.config
    grid = grid_path(out, step)
    save_image_grid(run.samples[:100], grid, nrow=10, upscale=max(1, 64 // cfg.input_size), padding=2,
                    labels=run.labels[:100] if cfg.num_classes else None)
    info = {"count": train_cfg.sample_count, "steps": train_cfg.sample_steps,
            "blocks": run.record["blocks_counted"], **metrics,
            "grid": str(grid.relative_to(out)), "seconds": round(time.perf_counter() - start, 3)}
    return {"step": step, "sample": info}


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(loss records, sample records) of a run's log.jsonl (a torn last line is skipped)."""
    losses, samples = [], []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        (samples if "sample" in rec else losses).append(rec)
    return losses, samples


def plot_training_curve(log: str | Path, out: str | Path) -> None:
    """Loss and, where measured, FID (± bootstrap s.e.) and class consistency against training steps."""
    from fpdm.common.plots import training_curve_figure

    losses, samples = read_log(log)
    fig = training_curve_figure(losses, samples)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    import matplotlib.pyplot as plt

    plt.close(fig)
