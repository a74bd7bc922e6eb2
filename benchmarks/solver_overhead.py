"""What a sampler's own arithmetic costs beside the model: one DiT-T/2 evaluation (the built-in digits DiT,
depth 6) at batch 100 against each sampler's update per step with the model's output given (no model call).

A step of every sampler is timed over a whole chain (`steps` steps, the per-step figure is the mean), in
one process, interleaved, 1 thread; the ratio is update / evaluation. The target: at most 2 %.

    python benchmarks/solver_overhead.py [--batch 100] [--steps 20] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import torch
from common import interleaved, median_ms, parser, table, write_json

from fpdm.diffusion.samplers import SAMPLERS
from fpdm.diffusion.schedules import space_timesteps
from fpdm.weights.loading import load_model


def main() -> None:
    p = parser("solver_overhead", repeats=7)
    p.add_argument("--batch", type=int, default=100, help="samples per batch")
    p.add_argument("--steps", type=int, default=20, help="steps per chain")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, diffusion, _ = load_model("digits-dit")
    cfg = model.config
    spaced = diffusion.respace(space_timesteps(diffusion.num_timesteps, a.steps))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=gen)
    y = torch.arange(a.batch) % cfg.num_classes
    t = torch.full((a.batch,), int(spaced.timesteps[-1]))
    with torch.no_grad():
        out = model(x, t, y)  # one evaluation's output, reused by every update below
    noise = torch.randn(x.shape, generator=gen)

    def evaluation() -> None:
        with torch.no_grad():
            model(x, t, y)

    def chain(name: str):
        rule = SAMPLERS[name]

        def run() -> None:
            state, history = x, ()
            for i in range(a.steps - 1, -1, -1):
                if rule.advance is not None:
                    state, history = rule.advance(spaced, lambda x_, i_: out, state, i, history,
                                                  clip_denoised=True)
                else:
                    state = rule.step(spaced, out, state, i, noise, clip_denoised=True)
        return run

    fns = {"evaluation": evaluation, **{name: chain(name) for name in SAMPLERS}}
    times = interleaved(fns, repeats=a.repeats)
    model_ms = median_ms(times["evaluation"])
    rows = []
    for name, rule in SAMPLERS.items():
        per_eval = median_ms(times[name]) / rule.evaluations(a.steps)  # arithmetic per model evaluation
        rows.append({"sampler": name, "update ms per evaluation": per_eval,
                     "share of a DiT-T/2 evaluation %": 100 * per_eval / model_ms})
    print(f"DiT-T/2 (digits-dit, depth {cfg.depth}) at batch {a.batch}: {model_ms:.3f} ms per evaluation, "
          f"{a.threads} thread(s)")
    print(table(rows, ["sampler", "update ms per evaluation", "share of a DiT-T/2 evaluation %"]))
    path = write_json("solver_overhead", {"batch": a.batch, "steps": a.steps, "model_ms": model_ms,
                                          "rows": rows}, a.json)
    print(f"written {path}")


if __name__ == "__main__":
    main()
