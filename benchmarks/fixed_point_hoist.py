"""Hoisting in the fixed-point layer, measured: our map (injection half of fc1 and the adaLN modulation
computed once per forward) against the naive per-iteration `fc1(cat[z, u])` + modulation. Same weights,
same run, interleaved repeats; prints the ratio.

    python benchmarks/fixed_point_hoist.py [--model FPDM-S/2] [--batch 8] [--iters 8]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fpdm


def naive_map(m, h_pre, c):
    u = m.block_pre_projection(h_pre)

    def f(z):
        a = m.block_fixed_point_projection_fc1(torch.cat([z, u], dim=-1))
        return m.block_fixed_point(m.block_fixed_point_projection_fc2(F.gelu(a, approximate="tanh")), c)

    return f


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="FPDM-S/2", help="model name")
    p.add_argument("--input-size", type=int, default=32, help="latent size")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--iters", type=int, default=8, help="fixed-point iterations")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = fpdm.create_model(a.model, input_size=a.input_size, in_channels=4, num_classes=1000).eval()
    with torch.no_grad():
        for q in m.parameters():
            q.normal_(0, 0.02)
    d = m.config.hidden_size
    h = torch.randn(a.batch, m.x_embedder.num_patches, d)
    c = torch.randn(a.batch, d)
    maps = {"hoisted": m.fixed_point_map(h, c), "naive": naive_map(m, h, c)}
    with torch.no_grad():
        diff = (fpdm.solve(maps["hoisted"], h, a.iters) - fpdm.solve(maps["naive"], h, a.iters)).abs().max()
        times = {k: [] for k in maps}
        for _ in range(a.repeats):
            for k, f in maps.items():
                t0 = time.perf_counter()
                fpdm.solve(f, h, a.iters)
                times[k].append(time.perf_counter() - t0)
    best = {k: 1000 * min(v) for k, v in times.items()}
    print(f"{a.model} batch {a.batch}, {a.iters} iterations, 1 thread: hoisted {best['hoisted']:.1f} ms, "
          f"naive {best['naive']:.1f} ms, naive/hoisted = {best['naive'] / best['hoisted']:.3f}; "
          f"max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
