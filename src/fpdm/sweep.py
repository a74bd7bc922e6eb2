"""Tables for budget sweeps, and the quality number they report until the evaluation issue lands.

The placeholder metric is *class consistency* on the built-in digits only: the share of samples that an
SVC trained on the digits train split (raw pixels; 0.9899 on the held-out split) assigns to the class they
were drawn for. It is a real measurement but a weak one (it ignores diversity); digits-FID replaces it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .config import ModelConfig


@functools.lru_cache(maxsize=1)
def _digits_svc():
    from sklearn.svm import SVC

    from .data import load_dataset

    train = load_dataset("digits", split="train")
    return SVC(gamma=0.001).fit(_pixels(train.images.numpy()), train.labels.numpy())


def _pixels(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x) + 1) * 8).reshape(len(x), -1)  # back to the 0..16 scale of the raw data


def placeholder_metric(samples: Tensor, labels: Tensor, cfg: ModelConfig) -> dict[str, Any]:
    """{"class_consistency": float} for 8×8 greyscale 10-class models (digits); {} otherwise."""
    if (cfg.input_size, cfg.in_channels, cfg.num_classes) != (8, 1, 10):
        return {}
    pred = _digits_svc().predict(_pixels(samples.numpy()))
    return {"class_consistency": float((pred == labels.numpy()).mean())}


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
