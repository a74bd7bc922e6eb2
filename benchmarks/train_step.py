"""Training step time, DiT vs FPDM at equal width: forward, ADM hybrid loss, backward, clip, AdamW, EMA —
the loop of `fpdm.training.loop`, minus data loading. FPDM draws its S-JFB plan per step from a generator
reset at
every repeat, so each repeat times the same plans.

Settings: the tiny digits size (T/2 on 8×8×1, batch 64, N = M = 3 as `fpdm train`) and S/2 width with
256 tokens (32×32×4, batch 8, the released N = 10, M = 12). Medians of interleaved repeats, 1 thread.

    python benchmarks/train_step.py [--steps 5] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from common import interleaved, median_ms, parser, table, write_json

from fpdm import DiffusionConfig, draw_plan
from fpdm.diffusion.gaussian import make_diffusion
from fpdm.models.registry import create_model
from fpdm.training.ema import make_ema, update_ema

SETTINGS = {"tiny": dict(size="T/2", input_size=8, channels=1, classes=10, batch=64, N=3, M=3),
            "S/2-256": dict(size="S/2", input_size=32, channels=4, classes=1000, batch=8, N=10, M=12)}


def stepper(arch: str, s: dict[str, Any], steps: int, grad_checkpoint: bool = False):
    torch.manual_seed(0)
    model = create_model(f"{arch}-{s['size']}", input_size=s["input_size"], in_channels=s["channels"],
                         num_classes=s["classes"]).train()
    ema = make_ema(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diffusion = make_diffusion(DiffusionConfig(), learn_sigma=True)
    g = torch.Generator().manual_seed(1)
    b = s["batch"]
    x0 = torch.randn(b, s["channels"], s["input_size"], s["input_size"], generator=g).clamp(-1, 1)
    y = torch.randint(0, s["classes"], (b,), generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = diffusion.q_sample(x0, t, noise)

    def run() -> None:
        plans = torch.Generator().manual_seed(2)
        for _ in range(steps):
            kw: dict[str, Any] = {"grad_checkpoint": grad_checkpoint}
            if arch == "FPDM":
                kw["iters"] = draw_plan("sjfb", s["N"], s["M"], plans)
            loss = diffusion.training_losses(model(x_t, t, y, **kw), x0, x_t, t, noise)["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
            opt.step()
            update_ema(ema, model, 0.999)

    return run, model.num_parameters


def main() -> None:
    p = parser("train_step", SETTINGS, repeats=5)
    p.add_argument("--steps", type=int, default=5, help="training steps per timed call")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.settings.split(","):
        s = SETTINGS[name]
        fns, params = {}, {}
        for arch in ("DiT", "FPDM"):
            fns[arch], params[arch] = stepper(arch, s, a.steps)
        times = interleaved(fns, a.repeats)
        for arch in fns:
            ms = median_ms(times[arch]) / a.steps
            rows.append({"setting": name, "model": f"{arch}-{s['size']}", "params": params[arch],
                         "batch": s["batch"], "ms/step": ms, "ms/sample": ms / s["batch"],
                         "vs DiT": median_ms(times[arch]) / median_ms(times["DiT"]),
                         "plan": f"S-JFB N={s['N']} M={s['M']}" if arch == "FPDM" else "-"})
        print(table(rows[-2:], ["setting", "model", "params", "batch", "plan", "ms/step", "ms/sample",
                                "vs DiT"]), flush=True)
    print(f"\n{a.steps} steps per call, {a.repeats} repeats, {a.threads} thread(s)\n")
    print(table(rows, ["setting", "model", "params", "batch", "plan", "ms/step", "ms/sample", "vs DiT"]))
    print(f"wrote {write_json('train_step', {'steps': a.steps, 'repeats': a.repeats, 'rows': rows}, a.json)}")


if __name__ == "__main__":
    main()
