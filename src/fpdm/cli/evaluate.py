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
    from fpdm.evaluation.evaluate import (
        as_digits,
        check_digit_labels,
        digits_metrics,
        fashion_metrics,
        load_samples,
        sampler_record,
        small_sample_warning,
        write_result,
    )

    out = Path(a.out) if a.out else Path(f"{Path(a.samples)}.eval.json")
    if a.inception_weights:
        from fpdm.evaluation.inception import inception_metrics

        result = inception_metrics(a.samples, a.ref, a.inception_weights, kid_subset_size=a.kid_subset_size,
                                   device=a.device)
        result.update(features="Inception-v3 pool3 (torch-fidelity)", weights=a.inception_weights,
                      samples=a.samples, reference=a.ref)
    else:
        x, labels = load_samples(a.samples)
        fashion = a.ref == "fashion-mnist"
        if fashion and tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"--ref fashion-mnist needs 32×32 greyscale samples, got {tuple(x.shape[1:])} "
                             f"in {a.samples}")
        x = x if fashion else as_digits(x)
        check_digit_labels(labels, a.samples)
        if (warning := small_sample_warning(len(x))) is not None:
            print(f"fpdm eval: warning: {warning}", file=sys.stderr)
        result = fashion_metrics(x, labels, kid_subset_size=a.kid_subset_size) if fashion else \
            digits_metrics(x, labels, reference=a.ref, kid_subset_size=a.kid_subset_size)
        result["samples"] = a.samples
        sampler = sampler_record(a.samples)
        if sampler is not None:
            result["sampler"] = sampler
    write_result(out, result)
    for k, v in result.items():
        if isinstance(v, float):
            print(f"{k:>20}  {v:.6g}")
    print(f"{'written':>20}  {out}")
    return 0
