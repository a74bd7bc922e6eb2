"""Pieces every command's parser shares: the formatter, --threads, the official-file options, the training
defaults, the early check that an output folder is writable."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import NoReturn

from fpdm.config import DiffusionConfig, TrainConfig

_T = {f.name: f.default for f in fields(TrainConfig)}


_D = {f.name: f.default for f in fields(DiffusionConfig)}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the flag, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required:
            return text
        return super()._get_help_string(action)


def _add_threads(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch's default; on "
                   "small machines 1 thread per process is often faster and steadier)")


def _add_official_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--num-heads", type=int, default=None, help="official checkpoints: attention heads, when "
                   "neither the width (S/B/L/XL) nor args.json tells (default: from the file)")
    p.add_argument("--pre-post-timestep-conditioning", action="store_const", const=True, default=None,
                   help="official FPDM checkpoints: pre/post/final layers see t + y (default: args.json, or "
                        "the released y only)")


def _official_kw(a: argparse.Namespace) -> dict:
    return {"num_heads": a.num_heads, "pre_post_timestep_conditioning": a.pre_post_timestep_conditioning}
