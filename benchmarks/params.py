"""Exact parameter counts, DiT vs FPDM, for every size, patch and pre/post depth (models built on the meta
device: nothing is allocated, so XL costs nothing).

    python benchmarks/params.py [--json PATH]
"""

from __future__ import annotations

import argparse

import torch
from common import table, write_json

from fpdm.models.registry import PATCHES, SIZES, create_model


def count(name: str, **kw: int) -> int:
    with torch.device("meta"):
        return create_model(name, input_size=32, in_channels=4, num_classes=1000, **kw).num_parameters


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prepost", default="1,2,3", help="pre = post depths to list")
    p.add_argument("--json", default=None, help="output JSON (default: benchmarks/results/params.json)")
    a = p.parse_args()
    rows = []
    for size in SIZES:
        for patch in PATCHES:
            dit = count(f"DiT-{size}/{patch}")
            for pp in (int(v) for v in a.prepost.split(",")):
                fp = count(f"FPDM-{size}/{patch}", pre_depth=pp, post_depth=pp)
                rows.append({"size": f"{size}/{patch}", "pre=post": pp, "DiT": dit, "FPDM": fp,
                             "FPDM/DiT": fp / dit, "fewer %": 100 * (1 - fp / dit)})
    print("latent 32×32×4, 1000 classes, learned sigma\n")
    print(table(rows, ["size", "pre=post", "DiT", "FPDM", "FPDM/DiT", "fewer %"]))
    print(f"\nwrote {write_json('params', {'rows': rows}, a.json)}")


if __name__ == "__main__":
    main()
