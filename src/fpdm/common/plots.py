"""Figures people would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def residual_figure(record: dict[str, Any]) -> Any:
    """The figure of `plot_residuals` (returned, not saved)."""
    from matplotlib.ticker import MaxNLocator

    traces = record.get("residuals") or []
    if not any(traces):
        raise ValueError("the record has no residual traces (it is not from an FPDM checkpoint)")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    cmap = plt.get_cmap("viridis")
    for j, trace in enumerate(traces):
        if trace:
            ax.plot(range(1, len(trace) + 1), trace, color=cmap(j / max(len(traces) - 1, 1)), lw=1, alpha=0.8)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    ax.set_xlabel("iteration within the step")
    ax.set_ylabel("relative residual (max over the samples iterating)")
    s = record.get("settings", {})
    tol = s.get("tol")
    if tol:
        ax.axhline(tol, color="tab:red", ls="--", lw=1, label=f"tol {tol}")
        ax.legend(fontsize=8, loc="upper right")
    words = [f"{record.get('steps')} {s.get('sampler', 'ddpm').upper()} steps"]
    words += [f"budget {record['budget']}"] if record.get("budget") else []
    words += [f"{s.get('solver', 'picard')} solver"] + (["reuse"] if s.get("reuse") else []) + \
        ([f"tol {tol}"] if tol else [])
    ax.set_title(", ".join(words), fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, len(traces) - 1))
    fig.colorbar(sm, ax=ax, label="sampling step (0 = noisiest)")
    fig.tight_layout()
    return fig


def plot_residuals(record: dict[str, Any], out: str | Path) -> None:
    """Relative residual ||f(z) - z|| / ||f(z)|| against iteration, one line per sampling step, coloured
    from the noisiest step (dark) to the cleanest (light); the tolerance, if any, dashed."""
    fig = residual_figure(record)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def iterations_bars(ax: Any, timesteps: Any, iters: Any) -> None:
    """Iterations per step as bars over t (sampling order, so time runs right as t falls)."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    t = np.asarray(timesteps)
    width = 0.8 * (float(np.min(np.abs(np.diff(t)))) if len(t) > 1 else 1.0)
    ax.bar(t, iters, width=width, color="tab:blue")
    ax.set_ylabel("iterations")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.invert_xaxis()


def plot_schedule(schedule: dict[str, Any], out: str | Path) -> None:
    """A calibrated schedule (`fpdm calibrate`): iterations per step (top) over the measured error of each
    step's next state against a converged solve, for a few iteration counts (bottom, log scale)."""
    import numpy as np

    chosen = next(r for r in schedule["candidates"] if r["steps"] == schedule["steps"])
    errors = np.asarray(chosen["errors"])
    t = np.asarray(schedule["timesteps"])  # sampling order: from the noisiest t down
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=120, sharex=True)
    iterations_bars(top, t, schedule["iters"])
    s = schedule["settings"]
    top.set_title(f"calibrated: budget {schedule['budget']}, {schedule['steps']} steps, {s['sampler']}"
                  + (" + reuse" if s["reuse"] else "") + (f", cfg {s['cfg_scale']}" if s["cfg_scale"] != 1
                                                          else ""), fontsize=9)
    for k in (1, 2, 4, 8, 16):
        if k <= errors.shape[1]:
            bottom.semilogy(t, np.maximum(errors[:, k - 1], 1e-30), label=f"{k} iteration" + "s" * (k > 1))
    bottom.set_xlabel("timestep t (sampling runs right)")
    bottom.set_ylabel("mean sq. change of x_{t-1}\nvs a converged solve")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def training_curve_figure(losses: list[dict[str, Any]], samples: list[dict[str, Any]]) -> Any:
    """Loss records and `--sample-every` records (`fpdm.training.monitor`) against steps (returned)."""
    fid_key = next((k for k in ("fashion_fid", "digits_fid") if samples and k in samples[0]["sample"]), None)
    fig, axes = plt.subplots(1, 2 if fid_key else 1, figsize=(10 if fid_key else 5, 3.6), dpi=110,
                             squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (mean over each log interval)")
    if fid_key:
        ax = axes[0][1]
        steps = [r["step"] for r in samples]
        s = [r["sample"] for r in samples]
        ax.errorbar(steps, [v[fid_key] for v in s], yerr=[v.get(f"{fid_key}_se", 0) for v in s], fmt="o-",
                    ms=3, capsize=2, label=fid_key.replace("_", "-"))
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{fid_key.replace('_', '-')} ({s[-1]['count']} samples, {s[-1]['blocks']} blocks)")
        if "class_consistency" in s[-1]:
            twin = ax.twinx()
            twin.plot(steps, [v.get("class_consistency", float("nan")) for v in s], "s--", ms=3,
                      color="tab:green")
            twin.set_ylabel("class consistency", color="tab:green")
    fig.tight_layout()
    return fig
