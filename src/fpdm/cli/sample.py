"""`fpdm sample`: draw samples from any weights, write the grid, the arrays and the record."""

from __future__ import annotations

import argparse
import sys

from fpdm.cli.common import _Formatter
from fpdm.cli.sampling_options import (
    _add_sampling_options,
)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", formatter_class=_Formatter, help="draw samples from a checkpoint",
                       description="Sample from a training checkpoint (architecture read from it). Writes a "
                                   "PNG grid, the samples as .npz and a JSON record of what ran.")
    _add_sampling_options(p, out_help="output prefix (default: <ckpt dir>/samples/<settings>)",
                          overwrite_help="replace results that --out holds from other settings (refused by "
                                         "default)")
    p.add_argument("--nrow", type=int, default=10, help="grid columns")
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour enlargement of the grid")
    p.add_argument("--eval", action="store_true", help="add digits- or fashion-FID, KID, precision/recall "
                   "and class consistency to the record (models of those datasets' shape)")
    p.add_argument("--adm-npz", action="store_true", help="also write <prefix>.adm.npz (arr_0, uint8 "
                   "N×H×W×3) for the ADM evaluation suite")
    p.add_argument("--vae", default=None, help="decode latent samples through this AutoencoderKL folder "
                   "(default: the VAE named by the training data's latent manifest, if any)")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(a: argparse.Namespace) -> int:
    from fpdm.sampling.many import summary_lines
    from fpdm.sampling.request import Interrupted, SampleRequest, sample_to_files
    from fpdm.weights.loading import load_model

    r = SampleRequest.from_options(a)
    model, diffusion, ckpt = load_model(r.ckpt, **r.load_kwargs())
    try:
        done = sample_to_files(r, model, diffusion, ckpt)
    except Interrupted as e:
        print(f"fpdm sample: interrupted; {e}", file=sys.stderr)
        return 130
    if done is not None:  # None: another torchrun process writes the outputs
        print("\n".join(summary_lines(*done)))
    return 0
