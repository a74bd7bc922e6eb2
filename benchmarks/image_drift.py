"""How far the throughput work moves the sampled images of the built-in models: each model samples the same
seeds with this tree's code and with a baseline commit's (checked out with `git worktree` under /tmp, run in
its own process), and the largest absolute pixel difference is reported (pixels in [−1, 1]).

    python benchmarks/image_drift.py [--baseline b5df72b] [--seeds 100] [--json PATH]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# (built-in model, sampling keywords): DDPM and DDIM at the README's budgets, FPDM with and without reuse
CASES = {
    "digits-fpdm ddpm B120 k2": ("digits-fpdm", {"budget": 120, "iters": 2}),
    "digits-fpdm ddim B120 k2 reuse": ("digits-fpdm", {"budget": 120, "iters": 2, "sampler": "ddim",
                                                       "reuse": True}),
    "digits-dit ddpm B120": ("digits-dit", {"budget": 120}),
    "fashion-fpdm ddpm B140 k3": ("fashion-fpdm", {"budget": 140, "iters": 3}),
}

SNIPPET = """
import json, sys, numpy as np, torch
import fpdm
torch.set_num_threads(1)
name, kw, seeds, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model, diffusion, _ = fpdm.load_model(name)
settings = {k: kw.pop(k) for k in ("sampler", "reuse") if k in kw}
run = fpdm.sample_seeds(model, diffusion, range(seeds), batch_size=seeds,
                        settings=fpdm.SamplerSettings(**settings), **kw)
np.save(out, run.samples.numpy())
"""


def _sample(tree: Path, name: str, kw: dict, seeds: int, out: Path) -> np.ndarray:
    import json

    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", SNIPPET, name, json.dumps(kw), str(seeds), str(out)], env=env,
                   check=True)
    return np.load(out)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import parser, table, write_json
    from throughput import BASELINE, ROOT, baseline_tree

    p = parser("image_drift", repeats=1)
    p.add_argument("--baseline", default=BASELINE, help="the commit to compare against")
    p.add_argument("--seeds", type=int, default=100, help="seeds 0..N-1, one batch")
    a = p.parse_args()
    base = baseline_tree(a.baseline)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, kw) in CASES.items():
            ours = _sample(ROOT, name, dict(kw), a.seeds, Path(tmp) / "ours.npy")
            theirs = _sample(base, name, dict(kw), a.seeds, Path(tmp) / "base.npy")
            diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
            rows.append({"case": case, "max |Δ| pixel": float(diff.max()),
                         "mean |Δ| pixel": float(diff.mean())})
    print(f"{a.seeds} seeds each, this tree against {a.baseline}")
    shown = [{k: f"{v:.2e}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    print(table(shown, ["case", "max |Δ| pixel", "mean |Δ| pixel"]))
    payload = {"baseline": a.baseline, "seeds": a.seeds, "rows": rows}
    print(f"wrote {write_json('image_drift', payload, a.json)}")


if __name__ == "__main__":
    main()
