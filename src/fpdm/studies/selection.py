"""Picking a sampling configuration on selection seeds: the rows of one model and budget, grouped by
(sampler, spacing, k, reuse), ranked by mean FID. Shared by the studies that choose settings on seeds
disjoint from the ones they report on (`solvers`, `fashion`)."""

from __future__ import annotations

import numpy as np

from fpdm.diffusion.schedules import SPACINGS
from fpdm.studies.engine import fid_of

Config = tuple[str, str, "int | None", bool]  # (sampler, spacing, k, reuse)

__all__ = ["best_configs", "config_of", "label", "mean_fid", "select_rows"]


def mean_fid(rows: list[dict]) -> float:
    return float(np.mean([fid_of(r) for r in rows])) if rows else float("inf")


def config_of(r: dict) -> tuple[str, str, int | None, bool]:
    s = r["settings"]
    return s["sampler"], s.get("spacing", "uniform"), s["iters"], s["reuse"]


def best_configs(rows: list[dict], samplers: tuple[str, ...], top: int = 1
                 ) -> list[tuple[str, str, int | None, bool]]:
    """The `top` configurations of the lowest mean FID (ties: the first in `samplers`, spacing, k order)."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(config_of(r), []).append(r)
    order = sorted(by, key=lambda c: (mean_fid(by[c]), samplers.index(c[0]) if c[0] in samplers else 99,
                                      SPACINGS.index(c[1]), c[2] or 0))
    return order[:top]


def select_rows(results: list[dict], experiment: str, name: str, budget: int, sampler: str | None = None
                ) -> list[dict]:
    """Rows of `experiment` (a prefix) for model `name` at `budget` (one sampler, or all), without reuse."""
    return [r for r in results if r["settings"]["experiment"].startswith(experiment)
            and r["settings"]["train"] == name and r["settings"]["budget"] == budget
            and (sampler is None or r["settings"]["sampler"] == sampler) and not r["settings"]["reuse"]]


def label(config: tuple) -> str:
    sampler, spacing, k, reuse = config
    return f"{sampler}/{spacing}" + (f", k={k}" if k else "") + (", reuse" if reuse else "")
