"""Counting what a sampler actually ran, independent of any formula: transformer-block applications."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from fpdm.models.blocks import DiTBlock


@contextmanager
def count_block_calls(model: nn.Module) -> Iterator[dict[str, int]]:
    """Within the context, count every application of a transformer block of `model` (explicit blocks and
    fixed-point iterations alike): `blocks`, the calls (blocks per sample when every call processes the
    whole batch), and `rows`, the samples they processed (a per-sample solve calls on fewer).

    Wraps each block instance's `apply_modulated` for the duration only; the model is unchanged after."""
    counter = {"blocks": 0, "rows": 0}
    blocks = [m for m in model.modules() if isinstance(m, DiTBlock)]
    shadowed = {id(b): b.__dict__["apply_modulated"] for b in blocks if "apply_modulated" in b.__dict__}
    for block in blocks:
        inner = block.apply_modulated  # the method, or an instance override (e.g. `compile_blocks`)

        def counted(x, mod, _inner=inner):
            counter["blocks"] += 1
            counter["rows"] += x.shape[0]
            return _inner(x, mod)

        block.apply_modulated = counted  # instance attribute shadows the method
    try:
        yield counter
    finally:
        for block in blocks:
            if id(block) in shadowed:
                block.apply_modulated = shadowed[id(block)]
            else:
                del block.apply_modulated
