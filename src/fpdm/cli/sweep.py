"""`fpdm sweep`: sample at one budget over several k, with digits metrics per row."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpdm.cli.common import _Formatter
from fpdm.cli.sampling_options import (
    _add_sampling_options,
)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", formatter_class=_Formatter, help="sample at one budget over several k",
                       description="At a fixed --budget, sample with each of --iters-list (constant k; the "
                                   "steps follow) and tabulate quality. Writes <out>.md/.json and grids.")
    _add_sampling_options(p, out_help="output prefix (default: <ckpt dir>/sweeps/budget<B>-<every setting "
                                      "that changes the samples>)",
                          overwrite_help="replace a sweep that --out holds from other settings, with its "
                                         "grids (refused by default)")
    p.add_argument("--iters-list", default="1,2,3,4,6,8,12", help="comma-separated k values")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(a: argparse.Namespace) -> int:
    from fpdm.sampling.request import Interrupted, SampleRequest
    from fpdm.sampling.sweep import sweep_iters, sweep_to_files
    from fpdm.weights.loading import load_model

    r = SampleRequest.from_options(a)
    ks = sweep_iters(r)  # before loading anything
    model, diffusion, ckpt = load_model(r.ckpt, **r.load_kwargs())

    def row(row: dict) -> None:
        print(f"k={row['iters']}: " + ", ".join(
            f"{key} {val:.4g}" if isinstance(val, float) else f"{key} {val}"
            for key, val in row.items() if key != "iters"))

    try:
        prefix = sweep_to_files(r, model, diffusion, ks, on_row=row, ckpt=ckpt,
                                on_skip=lambda k, e: print(f"k={k}: skipped: {e}", file=sys.stderr))
    except Interrupted as e:
        print(f"fpdm sweep: interrupted; {e}", file=sys.stderr)
        return 130
    print(Path(f"{prefix}.md").read_text())
    return 0
