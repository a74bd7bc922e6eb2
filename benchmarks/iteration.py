"""Cost of one fixed-point iteration vs one plain DiT block, before and after FPDM's optimisations.

- naive map: what the released code does on every iteration — fc1 on the concatenation [z ; u] and the
  fixed-point block's adaLN modulation from c;
- hoisted map (ours): the injection half of fc1 (W_u·u + b) and the modulation computed once per forward,
  so an iteration is W_z·z + const, gelu, fc2, block;
- training's no-gradient phase recorded by autograd (graph built, then discarded: the released code) vs
  under torch.no_grad() (ours).
FLOPs from torch.utils.flop_counter (matmuls and attention); times are medians of interleaved repeats in one
process, 1 thread, so ratios are comparable even on a noisy machine.

    python benchmarks/iteration.py [--size S/2] [--batch 8] [--iters 8] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from common import interleaved, median_ms, parser, table, write_json
from torch.utils.flop_counter import FlopCounterMode

from fpdm import solve
from fpdm.models.registry import create_model


def naive_map(m: Any, h_pre: torch.Tensor, c: torch.Tensor):
    """The per-iteration computation as released: nothing hoisted."""
    u = m.block_pre_projection(h_pre)

    def f(z: torch.Tensor) -> torch.Tensor:
        a = m.block_fixed_point_projection_fc1(torch.cat([z, u], dim=-1))
        return m.block_fixed_point(m.block_fixed_point_projection_fc2(F.gelu(a, approximate="tanh")), c)

    return f


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    p = parser("iteration", repeats=7)
    p.add_argument("--size", default="S/2", help="model size/patch")
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 → 256 tokens at patch 2)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--iters", type=int, default=8, help="iterations per timed call")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = create_model(f"FPDM-{a.size}", input_size=a.input_size, in_channels=4, num_classes=1000).eval()
    with torch.no_grad():
        for q in m.parameters():
            q.normal_(0, 0.02)  # non-zero adaLN gates, so the block does real work
    d = m.config.hidden_size
    g = torch.Generator().manual_seed(1)
    h = torch.randn(a.batch, m.x_embedder.num_patches, d, generator=g)
    c = torch.randn(a.batch, d, generator=g)
    block = m.block_fixed_point
    k = a.iters

    with torch.no_grad():
        hoisted, naive = m.fixed_point_map(h, c), naive_map(m, h, c)
        diff = (solve(hoisted, h, k) - solve(naive, h, k)).abs().max().item()
        fns = {"DiT block": lambda: [block(h, c) for _ in range(k)],
               "naive iteration": lambda: solve(naive_map(m, h, c), h, k),
               "hoisted iteration": lambda: solve(m.fixed_point_map(h, c), h, k)}
        times = interleaved(fns, a.repeats)
        fl = {"DiT block": flops(lambda: block(h, c)),
              "naive iteration": flops(lambda: naive(h)),
              "hoisted iteration": flops(lambda: hoisted(h))}
        once = flops(lambda: m.fixed_point_map(h, c))  # the hoisted per-forward work
    # training's no-gradient phase, h requiring grad as it does after the pre blocks
    hg = h.clone().requires_grad_()
    phase = {"no-grad phase, graph recorded (released)": lambda: solve(naive_map(m, hg, c), hg.detach(), k),
             "no-grad phase, torch.no_grad (ours)": lambda: torch.no_grad()(solve)(m.fixed_point_map(hg, c),
                                                                                   hg.detach(), k)}
    times.update(interleaved(phase, a.repeats))
    rows = [{"variant": name, "ms per iteration": median_ms(ts) / k,
             "MFLOP per iteration": fl[name] / 1e6 if name in fl else "",
             "vs DiT block": median_ms(ts) / median_ms(times["DiT block"])} for name, ts in times.items()]
    ratio = median_ms(times["naive iteration"]) / median_ms(times["hoisted iteration"])
    ratio_phase = (median_ms(times["no-grad phase, graph recorded (released)"])
                   / median_ms(times["no-grad phase, torch.no_grad (ours)"]))
    print(f"FPDM-{a.size}, {m.x_embedder.num_patches} tokens, batch {a.batch}, {k} iterations per call, "
          f"{a.repeats} repeats, {a.threads} thread(s)\n")
    print(table(rows, ["variant", "ms per iteration", "MFLOP per iteration", "vs DiT block"]))
    print(f"\nnaive/hoisted time = {ratio:.3f}; released/ours no-grad phase = {ratio_phase:.3f}; "
          f"hoisted once-per-forward work {once / 1e6:.1f} MFLOP; max |hoisted - naive| after {k} "
          f"iterations = {diff:.2e}")
    payload = {"size": a.size, "tokens": m.x_embedder.num_patches, "batch": a.batch, "iters": k,
               "repeats": a.repeats, "rows": rows, "times_s": times, "naive_over_hoisted": ratio,
               "released_over_ours_no_grad_phase": ratio_phase, "hoisted_once_flops": once,
               "max_abs_diff": diff}
    print(f"wrote {write_json('iteration', payload, a.json)}")


if __name__ == "__main__":
    main()
