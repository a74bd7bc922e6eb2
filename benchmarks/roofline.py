"""How close a transformer block's forward comes to this machine's matmul peak.

Peak: the best GFLOP/s of large square fp32 matmuls (torch.mm), measured here with the same thread count.
Achieved: a DiT block forward (no grad) at S/2 width (384), 256 tokens, batch 8 — FLOPs from
torch.utils.flop_counter divided by the median time. Below 50% the script profiles the block
(torch.profiler, self CPU time per op) to show where the time goes.

    python benchmarks/roofline.py [--width 384] [--tokens 256] [--batch 8] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import torch
from common import interleaved, median_ms, parser, table, write_json
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from fpdm.models.blocks import DiTBlock


def matmul_peak(sizes: tuple[int, ...], repeats: int) -> dict[str, float]:
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        ts = interleaved({"mm": lambda a=a, b=b: torch.mm(a, b)}, repeats)["mm"]
        out[str(n)] = 2 * n**3 / (median_ms(ts) / 1000) / 1e9
    return out


def main() -> None:
    p = parser("roofline", repeats=7)
    p.add_argument("--width", type=int, default=384, help="hidden size (S: 384)")
    p.add_argument("--heads", type=int, default=6, help="attention heads (S: 6)")
    p.add_argument("--tokens", type=int, default=256, help="tokens per sample")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--profile", action="store_true", help="profile the block even above 50%% of peak")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    peak = matmul_peak((512, 1024, 2048), a.repeats)
    best = max(peak.values())
    block = DiTBlock(a.width, a.heads).eval()
    x, c = torch.randn(a.batch, a.tokens, a.width), torch.randn(a.batch, a.width)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            block(x, c)
        flops = counter.get_total_flops()
        ms = median_ms(interleaved({"block": lambda: block(x, c)}, a.repeats)["block"])
        achieved = flops / (ms / 1000) / 1e9
        ratio = achieved / best
        print(f"matmul peak (GFLOP/s, {a.threads} thread(s)) by size: "
              + ", ".join(f"{n}: {v:.1f}" for n, v in peak.items()))
        print(f"DiT block, width {a.width}, {a.tokens} tokens, batch {a.batch}: {flops / 1e9:.3f} GFLOP in "
              f"{ms:.2f} ms = {achieved:.1f} GFLOP/s = {100 * ratio:.1f}% of peak")
        ops = []
        if ratio < 0.5 or a.profile:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    block(x, c)
            total = sum(e.self_cpu_time_total for e in prof.key_averages())
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]:
                ops.append({"op": e.key, "calls/forward": e.count // 3,
                            "self ms/forward": e.self_cpu_time_total / 3000,
                            "share %": 100 * e.self_cpu_time_total / total})
            print("\nwhere the time goes (self CPU time):\n")
            print(table(ops, ["op", "calls/forward", "self ms/forward", "share %"]))
    payload = {"width": a.width, "tokens": a.tokens, "batch": a.batch, "threads": a.threads,
               "matmul_gflops": peak, "block_gflop": flops / 1e9, "block_ms": ms,
               "achieved_gflops": achieved, "fraction_of_peak": ratio, "profile": ops}
    print(f"wrote {write_json('roofline', payload, a.json)}")


if __name__ == "__main__":
    main()
