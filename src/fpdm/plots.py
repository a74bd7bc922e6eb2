"""Figures people would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_residuals(record: dict[str, Any], out: str | Path) -> None:
    """Relative residual ||f(z) - z|| / ||f(z)|| against iteration, one line per sampling step, coloured
    from the noisiest step (dark) to the cleanest (light)."""
    traces = record.get("residuals") or []
    if not any(traces):
        raise ValueError("the record has no residual traces (it is not from an FPDM checkpoint)")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    cmap = plt.get_cmap("viridis")
    for j, trace in enumerate(traces):
        if trace:
            ax.plot(range(1, len(trace) + 1), trace, color=cmap(j / max(len(traces) - 1, 1)), lw=1, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration within the step")
    ax.set_ylabel("relative residual (max over batch)")
    s = record.get("settings", {})
    ax.set_title(f"{record.get('steps')} steps, budget {record.get('budget')}, solver {s.get('solver')}, "
                 f"reuse {s.get('reuse')}", fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, len(traces) - 1))
    fig.colorbar(sm, ax=ax, label="sampling step (0 = noisiest)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
