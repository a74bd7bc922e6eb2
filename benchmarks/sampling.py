"""Sampling throughput at a fixed budget of transformer-block evaluations, DiT vs FPDM, with the FLOPs each
run actually spends (counted by torch.utils.flop_counter over the whole run, next to `forward_flops`'s
formula) and the block evaluations counted by `fpdm.models.instrument`. Weights are random: cost does not
depend
on them. DDIM, no guidance, 1 thread, medians of interleaved repeats.

    python benchmarks/sampling.py [--budget 120] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

from typing import Any

import torch
from common import interleaved, median_ms, parser, table, write_json
from torch.utils.flop_counter import FlopCounterMode

from fpdm import DiffusionConfig
from fpdm.diffusion.gaussian import make_diffusion
from fpdm.models.registry import create_model
from fpdm.sampling.budget import plan_budget
from fpdm.sampling.loop import SamplerSettings, sample

SETTINGS = {"tiny": dict(size="T/2", input_size=8, channels=1, classes=10, num=100, iters=(1, 2, 4)),
            "S/2-256": dict(size="S/2", input_size=32, channels=4, classes=1000, num=8,
                                    iters=(1, 4, 10))}


def runner(arch: str, s: dict[str, Any], budget: int, iters: int | None):
    torch.manual_seed(0)
    model = create_model(f"{arch}-{s['size']}", input_size=s["input_size"], in_channels=s["channels"],
                         num_classes=s["classes"]).eval()
    with torch.no_grad():
        for q in model.parameters():
            q.normal_(0, 0.02)
    plan = plan_budget(model.config, budget, iters=iters)
    diffusion = make_diffusion(DiffusionConfig(), learn_sigma=True)
    labels = torch.arange(s["num"]) % s["classes"]
    seeds = list(range(s["num"]))
    settings = SamplerSettings(sampler="ddim")

    def run() -> dict[str, Any]:
        with torch.no_grad():
            return sample(model, diffusion, labels, seeds, steps=plan.steps, iters=list(plan.iters) or None,
                          settings=settings)[1]

    return run, plan


def main() -> None:
    p = parser("sampling", SETTINGS, repeats=3)
    p.add_argument("--budget", type=int, default=120, help="blocks per sample (DiT-T: 20 steps, DiT-S: 10)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.settings.split(","):
        s = SETTINGS[name]
        fns, plans, records = {}, {}, {}
        for arch, k in [("DiT", None)] + [("FPDM", k) for k in s["iters"]]:
            label = arch if k is None else f"FPDM k={k}"
            fns[label], plans[label] = runner(arch, s, a.budget, k)
            with FlopCounterMode(display=False) as counter:
                records[label] = fns[label]()
            records[label]["counted_flops"] = counter.get_total_flops()
        times = interleaved(fns, a.repeats, warmup=0)
        for label, ts in times.items():
            r = records[label]
            rows.append({"setting": name, "run": label, "steps": plans[label].steps,
                         "blocks/sample": r["blocks_counted"], "samples/s": s["num"] / (median_ms(ts) / 1000),
                         "GFLOP/sample counted": r["counted_flops"] / s["num"] / 1e9,
                         "GFLOP/sample formula": r["flops_per_sample"] / 1e9,
                         "vs DiT time": median_ms(ts) / median_ms(times["DiT"])})
        print(table(rows[-len(times):], list(rows[-1])), flush=True)
    print(f"\nbudget {a.budget} blocks per sample, DDIM, {a.repeats} repeats, {a.threads} thread(s)\n")
    print(table(rows, list(rows[-1])))
    print(f"wrote {write_json('sampling', {'budget': a.budget, 'repeats': a.repeats, 'rows': rows}, a.json)}")


if __name__ == "__main__":
    main()
