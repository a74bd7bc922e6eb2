"""`fpdm plot-residuals`: plot a sample record's residuals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fpdm.cli.common import _add_threads, _Formatter


def _add_plot_residuals(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-residuals", formatter_class=_Formatter, help="plot a sample record's residuals",
                       description="Draw the relative fixed-point residual per iteration, one line per step.")
    p.add_argument("record", help="the .json written by `fpdm sample`")
    p.add_argument("--out", default=None, help="PNG path (default: the record's path with .residuals.png)")
    _add_threads(p)
    p.set_defaults(func=_cmd_plot_residuals)


def _cmd_plot_residuals(a: argparse.Namespace) -> int:
    from fpdm.common.plots import plot_residuals

    path = Path(a.record)
    if not path.exists():
        raise FileNotFoundError(f"no record at {path}")
    out = Path(a.out) if a.out else path.with_suffix(".residuals.png")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a sample record (the .json that fpdm sample writes)") from None
    plot_residuals(record, out)
    print(out)
    return 0
