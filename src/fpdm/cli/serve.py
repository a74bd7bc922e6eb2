"""`fpdm serve`: the compute dial in a browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpdm.cli.common import _add_threads, _Formatter


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", formatter_class=_Formatter, help="the compute dial in a browser",
                       description="A local web page: sample the built-in digits FPDM and DiT (and --ckpt) "
                                   "at a block budget, spent as steps or iterations, and watch the samples, "
                                   "the iterations per step and the residuals change; DiT at the same budget "
                                   "beside.")
    p.add_argument("--ckpt", default=None, help="also serve this checkpoint or export (default: the built-in "
                   "digits models only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (other than localhost: anyone "
                   "who can reach it can run jobs here)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--schedules", action="append", default=[], help="a folder of calibrated schedules to "
                   "offer (repeatable; default: <ckpt dir>/schedules)")
    _add_threads(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    from fpdm.serve.server import serve

    if not 0 <= a.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {a.port}")
    try:
        serve(a.host, a.port, a.ckpt, [Path(s) for s in a.schedules])
    except KeyboardInterrupt:
        return 0
    return 0
