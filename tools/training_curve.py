"""Quality against training steps: sample every kept checkpoint (`ckpt-<step>.pt`, `--keep-every`) of one or
more run folders at one block budget on fixed seeds, score it with the dataset's feature network, and plot
FID ± s.e. against steps. Results are cached per checkpoint in `<out>.json` (a rerun samples only what is
missing), the plot is `<out>.png`.

    .venv/bin/python tools/training_curve.py /root/fpdm-cache/fashion/runs/fpdm-s0 \\
        /root/fpdm-cache/fashion/runs/dit28-s0 --budget 140 --iters 5 --out /root/fpdm-cache/fashion/curve
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

import fpdm
from fpdm.evaluation.evaluate import digits_eval


def _kept(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.glob("ckpt-*.pt")
             if (m := re.fullmatch(r"ckpt-(\d+)\.pt", p.name))]
    return sorted(found)


def _score(path: Path, budget: int, iters: int, seeds: range, batch_size: int) -> dict:
    model, diffusion, ckpt = fpdm.load_model(path)
    k = iters if model.config.arch == "fpdm" else None
    t0 = time.perf_counter()
    run = fpdm.sample_seeds(model, diffusion, seeds, budget=budget, iters=k, batch_size=batch_size)
    metrics = digits_eval(run.samples, run.labels, model.config, ckpt["train_config"].get("data"))
    if not metrics:
        raise SystemExit(f"{path}: no feature network for its data ({ckpt['train_config'].get('data')})")
    return {"step": ckpt["step"], "arch": model.config.arch, "iters": k, "steps": run.record["steps"],
            "blocks": run.record["blocks_counted"], "sample_s": round(time.perf_counter() - t0, 1), **metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders with kept checkpoints")
    p.add_argument("--budget", type=int, default=140, help="blocks per sample")
    p.add_argument("--iters", type=int, default=5, help="FPDM iterations per step (DiT: ignored)")
    p.add_argument("--seeds", type=int, default=1000, help="samples: seeds 0..N-1")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="prefix of <out>.json and <out>.png")
    p.add_argument("--cached-only", action="store_true",
                   help="plot what <out>.json holds, sample nothing (while runs are still training)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cache_path = Path(f"{a.out}.json")
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for run in a.runs:
        for step, path in _kept(run):
            key = f"{run.name}/{step}/B{a.budget}/k{a.iters}/n{a.seeds}"
            if key in cache or a.cached_only:
                continue
            cache[key] = {"run": run.name, **_score(path, a.budget, a.iters, range(a.seeds), a.batch_size)}
            cache_path.write_text(json.dumps(cache, indent=1) + "\n")  # after every checkpoint: resumable
            row = cache[key]
            fid = next(k for k in row if k.endswith("_fid"))
            print(f"{run.name} step {step}: {fid} {row[fid]:.2f} ± {row[fid + '_se']:.2f}, class consistency "
                  f"{row.get('class_consistency', float('nan')):.3f} ({row['sample_s']} s)", flush=True)
    _plot(cache, a)
    return 0


def _plot(cache: dict, a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in a.runs:
        tag = f"/B{a.budget}/k{a.iters}/n{a.seeds}"
        rows = sorted((r for k, r in cache.items() if r["run"] == run.name and k.endswith(tag)),
                      key=lambda r: r["step"])
        if not rows:
            continue
        fid = next(k for k in rows[0] if k.endswith("_fid"))
        ax.errorbar([r["step"] for r in rows], [r[fid] for r in rows], yerr=[r[fid + "_se"] for r in rows],
                    marker="o", capsize=3, label=run.name)
        ax.set_ylabel(f"{fid.replace('_', '-')} ({a.seeds} samples, {a.budget} blocks)")
    ax.set_xlabel("training steps")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{a.out}.png", dpi=120)
    print(f"wrote {a.out}.png", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
