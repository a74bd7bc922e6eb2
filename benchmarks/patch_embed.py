"""The patch embedding as patches × weight (fpdm.models.embeddings.PatchEmbed) against the Conv2d it
replaced, and
a whole FPDM forward with each: ms per call, ratio of medians, interleaved in one process.

    python benchmarks/patch_embed.py
"""

from __future__ import annotations

import torch
from common import interleaved, median_ms, parser, table, write_json

from fpdm.config import ModelConfig
from fpdm.models.embeddings import PatchEmbed
from fpdm.models.registry import build_model

SHAPES = {"digits 8×8 /2, batch 100": (100, 1, 8, 2), "fashion 32×32 /4, batch 100": (100, 1, 32, 4),
          "latent 32×32×4 /2, batch 8": (8, 4, 32, 2)}


def conv(pe: PatchEmbed, x: torch.Tensor) -> torch.Tensor:
    return pe.proj(x).flatten(2).transpose(1, 2)  # (N, T, D): the old forward


def measure(name: str, n: int, c: int, size: int, p: int, repeats: int) -> dict:
    pe = PatchEmbed(size, p, c, 128)
    x = torch.randn(n, c, size, size)
    diff = float((pe(x) - conv(pe, x)).abs().max())
    t = interleaved({"conv": lambda: conv(pe, x), "matmul": lambda: pe(x)}, repeats=repeats)
    model = build_model(ModelConfig(arch="fpdm", input_size=size, patch_size=p, in_channels=c,
                                    hidden_size=128,
                                    depth=6, num_heads=4, num_classes=10)).eval()
    tt, yy = torch.full((n,), 500), torch.arange(n) % 10
    new = PatchEmbed.forward

    def forward(embed) -> None:
        PatchEmbed.forward = embed
        try:
            model(x, tt, yy, iters=4)
        finally:
            PatchEmbed.forward = new

    f = interleaved({"conv": lambda: forward(conv), "matmul": lambda: forward(new)}, repeats=repeats)
    return {"shape": name, "conv ms": median_ms(t["conv"]), "matmul ms": median_ms(t["matmul"]),
            "embed ratio": median_ms(t["matmul"]) / median_ms(t["conv"]),
            "forward ratio": median_ms(f["matmul"]) / median_ms(f["conv"]), "max |diff|": diff}


def main() -> None:
    a = parser("patch_embed", repeats=21).parse_args()
    torch.set_num_threads(a.threads)
    with torch.no_grad():
        rows = [measure(name, *shape, a.repeats) for name, shape in SHAPES.items()]
    print(table(rows, ["shape", "conv ms", "matmul ms", "embed ratio", "forward ratio", "max |diff|"]))
    print(write_json("patch_embed", {"rows": rows}, a.json))


if __name__ == "__main__":
    main()
