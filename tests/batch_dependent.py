"""A machine whose maths libraries choose kernels by batch size, made on purpose.

Some CPUs' oneDNN and MKL builds (and cuBLAS) pick another algorithm for another number of rows, so a
sample's arithmetic can depend on the batch it is in by a few units in the last place. `perturbed_kernels`
makes that happen everywhere: every call of F.linear, F.conv2d, F.scaled_dot_product_attention and
torch.addmm has its output scaled by (1 + k·2⁻²³), k ∈ {1, 2, 3, 4} chosen by the call's leading size (the
batch, or rows for addmm). Equal shapes give equal k, so re-runs of the same batch stay bit-identical, as
on a real machine. Tests that claim portability run under it (tests/test_portability.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

ULP = 2.0**-23
# A seed's image at another batch size agrees to this, after a whole chain, on any machine: measured worst
# 1.34e-5 over test_sample.SETTINGS under `perturbed_kernels` (DDIM + Anderson: a 4-step chain's first
# x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) multiplies eps's last-place differences by ~150), 0 on the
# kernels of the machine the suite was written on.
BATCH_TOL = 5e-5


def _factor(size: int) -> float:
    return 1.0 + (1 + (size % 5) % 4) * ULP  # batch 1 → 2 ulps, 7 → 3, 14 → 5, 64 → 1 (never 0)


@contextlib.contextmanager
def perturbed_kernels() -> Iterator[None]:
    originals = {(F, "linear"): F.linear, (F, "conv2d"): F.conv2d,
                 (F, "scaled_dot_product_attention"): F.scaled_dot_product_attention,
                 (torch, "addmm"): torch.addmm}

    def wrap(fn):
        def run(inp, *args, **kwargs):
            return fn(inp, *args, **kwargs) * _factor(inp.shape[0])
        return run

    for (mod, name), fn in originals.items():
        setattr(mod, name, wrap(fn))
    try:
        yield
    finally:
        for (mod, name), fn in originals.items():
            setattr(mod, name, fn)
