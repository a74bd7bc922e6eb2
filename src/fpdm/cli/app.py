"""`fpdm` command line: the parser of every command (one module each in this package) and the dispatch.
--help shows every default."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from fpdm.cli.budget_table import _add_budget_table
from fpdm.cli.calibrate import _add_calibrate
from fpdm.cli.common import _Formatter, _Parser
from fpdm.cli.evaluate import _add_eval
from fpdm.cli.extract_latents import _add_extract_latents
from fpdm.cli.plot_residuals import _add_plot_residuals
from fpdm.cli.reproduce import _add_reproduce
from fpdm.cli.sample import _add_sample
from fpdm.cli.serve import _add_serve
from fpdm.cli.sweep import _add_sweep
from fpdm.cli.train import _add_train
from fpdm.cli.train_features import _add_train_features
from fpdm.cli.weights import _add_build_weights, _add_export, _add_import
from fpdm.common.lock import FolderInUse
from fpdm.models.registry import MODEL_NAMES
from fpdm.version import __version__


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fpdm", formatter_class=_Formatter,
                                description="Fixed Point Diffusion Models. Models: " + ", ".join(MODEL_NAMES))
    p.add_argument("--version", action="version", version=f"fpdm {__version__} (torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_sweep(sub)
    _add_calibrate(sub)
    _add_serve(sub)
    _add_budget_table(sub)
    _add_plot_residuals(sub)
    _add_eval(sub)
    _add_train_features(sub)
    _add_reproduce(sub)
    _add_export(sub)
    _add_import(sub)
    _add_build_weights(sub)
    _add_extract_latents(sub)
    return p


def _check_device(spec: str) -> None:
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r} is not a device; expected cpu, cuda, cuda:1, mps, …") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0) < 0:
        print(f"fpdm {args.command}: error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    limit = 4 * (os.cpu_count() or 1)
    if getattr(args, "threads", 0) > limit:  # torch can crash outright on absurd thread counts
        print(f"fpdm {args.command}: error: --threads {args.threads} is more than {limit} (4 × this "
              f"machine's {os.cpu_count()} cores)", file=sys.stderr)
        return 2
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    finished = False
    try:
        if getattr(args, "device", None):
            _check_device(args.device)
        code = args.func(args)
        finished = True
        return code
    except (ValueError, OSError, FloatingPointError, ImportError, FolderInUse, MemoryError) as e:
        # OSError: unwritable folders, missing files; MemoryError: a step refused before it runs
        print(f"fpdm {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():  # under torchrun
            # no rank tears gloo's connections down while another still uses them (a peer left behind
            # aborted now and then: "terminate called without an active exception")
            if finished:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def entry() -> None:
    """The `fpdm` command (console script and `python -m fpdm.cli`): main(), then exit with its code.

    A torchrun worker leaves through os._exit once its process group is destroyed and its streams are
    flushed: C++ destructors run at interpreter exit made a finished gloo worker abort now and then
    ("terminate called without an active exception", 1 run in 10–74 on 2 loaded cores), and torchrun
    then reports the whole run as failed."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
