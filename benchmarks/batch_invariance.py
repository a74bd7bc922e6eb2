"""How far a seed's image moves with the batch it is sampled in: the built-in digits models at 120 blocks,
each seed sampled at batch sizes 1, 7 and 64, on this machine's kernels and under kernels made
batch-dependent on purpose (tests/batch_dependent.py). Prints the worst per-seed max |difference| (against
batch 64) per sampler setting and writes benchmarks/results/batch_invariance.json.

    python benchmarks/batch_invariance.py --seeds 64
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from common import parser, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from batch_dependent import perturbed_kernels  # noqa: E402

import fpdm  # noqa: E402
from fpdm.sampling.loop import SamplerSettings  # noqa: E402
from fpdm.weights.loading import load_model

CASES = {  # (model, settings, iters): 120 blocks = 30 FPDM steps of 1 + 2 + 1, or 20 DiT steps of 6
    "fpdm ddpm k=2": ("digits-fpdm", SamplerSettings(), 2),
    "fpdm ddim k=2": ("digits-fpdm", SamplerSettings(sampler="ddim"), 2),
    "fpdm ddpm --steps 20 --tol 0.05 anderson": ("digits-fpdm", SamplerSettings(tol=0.05, solver="anderson"),
                                                 None),
    "dit ddpm": ("digits-dit", SamplerSettings(), None),
    "dit ddim": ("digits-dit", SamplerSettings(sampler="ddim"), None),
}


def worst(model, diffusion, settings, iters, seeds: int) -> dict[str, float]:
    kw = dict(budget=120, settings=settings)
    if iters:
        kw["iters"] = iters
    elif settings.tol:
        kw["steps"] = 20
    runs = {b: fpdm.sample_seeds(model, diffusion, range(seeds), batch_size=b, **kw).samples
            for b in (1, 7, 64)}
    return {f"{b} vs 64": float((runs[b] - runs[64]).flatten(1).abs().max(1).values.max()) for b in (1, 7)}


def main() -> None:
    p = parser("batch_invariance")
    p.add_argument("--seeds", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = {"seeds": a.seeds, "budget": 120, "cases": {}}
    for kernels in ("native", "batch-dependent"):
        for name, (ckpt, settings, iters) in CASES.items():
            model, diffusion, _ = load_model(ckpt)
            with perturbed_kernels() if kernels != "native" else contextlib.nullcontext():
                res = worst(model, diffusion, settings, iters, a.seeds)
            out["cases"][f"{kernels}: {name}"] = res
            print(f"{kernels:>15}  {name:<42} " + "  ".join(f"{k}: {v:.3g}" for k, v in res.items()),
                  flush=True)
    print(write_json("batch_invariance", out, a.json))


if __name__ == "__main__":
    main()
