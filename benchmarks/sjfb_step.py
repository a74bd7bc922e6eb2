"""An S-JFB training step of ours against the released code's, on the same weights: FPDM-S/2 at 64 tokens
(16×16×4 latents), batch 8, n = 10 iterations without gradient then m = 4 with, forward + loss + backward +
AdamW, 1 thread, medians of interleaved repeats in one process.

The released computation is rebuilt here from the facts in ../shared/reference and docs/architecture.md
(not copied): every iteration concatenates [z ; u] and applies fc1 to it, recomputes the fixed-point block's
adaLN modulation from c, and the no-gradient iterations are recorded by autograd and then detached; blocks
use ATen's tanh-GELU and `x·(1 + scale) + shift`, `x + gate·branch`, one call on the whole batch. Both
compute the same function (the script prints the largest difference of the outputs).

    python benchmarks/sjfb_step.py [--repeats 7] [--threads 1] [--json PATH]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from common import interleaved, median_ms, parser, table, write_json

from fpdm import IterationPlan
from fpdm.models.registry import create_model


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def released_block(b: Any, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = b.adaLN_modulation(c).chunk(6, dim=1)
    n, t, d = x.shape
    h = _modulate(b.norm1(x), shift_msa, scale_msa)
    qkv = b.attn.qkv(h).reshape(n, t, 3, b.attn.num_heads, d // b.attn.num_heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(n, t, d)
    x = x + gate_msa.unsqueeze(1) * b.attn.proj(a)
    h = _modulate(b.norm2(x), shift_mlp, scale_mlp)
    return x + gate_mlp.unsqueeze(1) * b.mlp.fc2(F.gelu(b.mlp.fc1(h), approximate="tanh"))


def released_forward(m: Any, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, n: int, k: int
                     ) -> torch.Tensor:
    h, t_emb, y_emb = m.embed(x, t, y)
    c, c_pp = t_emb + y_emb, y_emb  # the released default: pre/post blocks see the label only
    for b in m.blocks_pre:
        h = released_block(b, h, c_pp)
    u = m.block_pre_projection(h)

    def f(z: torch.Tensor) -> torch.Tensor:
        a = m.block_fixed_point_projection_fc1(torch.cat([z, u], dim=-1))
        return released_block(m.block_fixed_point, m.block_fixed_point_projection_fc2(
            F.gelu(a, approximate="tanh")), c)

    z = h.detach()
    for _ in range(n):  # recorded by autograd, then thrown away
        z = f(z)
    z = z.detach()
    for _ in range(k):
        z = f(z)
    for b in m.blocks_post:
        z = released_block(b, z, c_pp)
    fl = m.final_layer
    shift, scale = fl.adaLN_modulation(c_pp).chunk(2, dim=1)
    return m.unpatchify(fl.linear(_modulate(fl.norm_final(z), shift, scale)))


def main() -> None:
    p = parser("sjfb_step", repeats=7)
    p.add_argument("--size", default="S/2", help="model size/patch")
    p.add_argument("--input-size", type=int, default=16, help="latent side (16 → 64 tokens at patch 2)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--n", type=int, default=10, help="iterations without gradient")
    p.add_argument("--m", type=int, default=4, help="iterations with gradient")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_model(f"FPDM-{a.size}", input_size=a.input_size, in_channels=4, num_classes=1000).train()
    with torch.no_grad():
        for q in model.parameters():
            q.normal_(0, 0.02)  # non-zero adaLN gates, so every block does real work
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.batch, 4, a.input_size, a.input_size, generator=g)
    t = torch.randint(0, 1000, (a.batch,), generator=g)
    y = torch.randint(0, 1000, (a.batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: every repeat times the same weights
    plan = IterationPlan(a.n, a.m)
    forwards = {"released": lambda: released_forward(model, x, t, y, a.n, a.m),
                "ours": lambda: model(x, t, y, iters=plan)}
    with torch.no_grad():
        diff = (forwards["released"]() - forwards["ours"]()).abs().max().item()

    def step(forward):
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            forward().square().mean().backward()
            opt.step()
        return run

    times = interleaved({k: step(fn) for k, fn in forwards.items()}, a.repeats)
    ratio = median_ms(times["ours"]) / median_ms(times["released"])
    rows = [{"code": k, "ms per step": median_ms(ts)} for k, ts in times.items()]
    print(f"FPDM-{a.size}, {model.x_embedder.num_patches} tokens, batch {a.batch}, S-JFB n = {a.n}, "
          f"m = {a.m}, "
          f"{a.repeats} repeats, {a.threads} thread(s); max |released − ours| output {diff:.2e}\n")
    print(table(rows, ["code", "ms per step"]))
    print(f"\nours / released = {ratio:.3f}")
    payload = {"size": a.size, "tokens": model.x_embedder.num_patches, "batch": a.batch, "n": a.n, "m": a.m,
               "repeats": a.repeats, "rows": rows, "times_s": times, "ours_over_released": ratio,
               "max_abs_diff": diff}
    print(f"wrote {write_json('sjfb_step', payload, a.json)}")


if __name__ == "__main__":
    main()
