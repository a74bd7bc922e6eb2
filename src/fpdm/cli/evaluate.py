"""`fpdm eval`: score samples against a reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpdm.cli.common import _add_threads, _Formatter


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", formatter_class=_Formatter, help="score samples against a reference",
                       description="Score samples (.npz from fpdm sample, an ADM .npz, or an image folder) "
                                   "against a reference. Digits: the project's feature net (digits-FID, KID, "
                                   "precision/recall, class consistency). Other data: Inception via "
                                   "torch-fidelity (the `eval` extra) with a local weights file.")
    p.add_argument("samples", help="samples: .npz or a folder of images")
    p.add_argument("--ref", default="digits", help="'digits' (held-out split), 'digits-train', "
                   "'fashion-mnist' (its 10k test images), or (with --inception-weights) a folder / .npz of "
                   "reference images")
    p.add_argument("--inception-weights", default=None, help="local Inception weights file for FID/KID/IS/"
                   "precision/recall on real datasets (nothing is downloaded) (default: digits metrics)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (clipped to set sizes)")
    p.add_argument("--device", default="cpu", help="for Inception features: cpu, cuda, …")
    p.add_argument("--out", default=None, help="JSON path (default: <samples>.eval.json)")
    _add_threads(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(a: argparse.Namespace) -> int:
    from fpdm.evaluation.evaluate import evaluate_file, write_result

    out = Path(a.out) if a.out else Path(f"{Path(a.samples)}.eval.json")
    result = evaluate_file(a.samples, a.ref, inception_weights=a.inception_weights,
                           kid_subset_size=a.kid_subset_size, device=a.device,
                           warn=lambda m: print(f"fpdm eval: warning: {m}", file=sys.stderr))
    write_result(out, result)
    for k, v in result.items():
        if isinstance(v, float):
            print(f"{k:>20}  {v:.6g}")
    print(f"{'written':>20}  {out}")
    return 0
