"""`fpdm reproduce`: the studies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpdm.cli.common import _Formatter


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", formatter_class=_Formatter,
                       help="reproduce the seed's findings on digits or Fashion-MNIST",
                       description="Train, sample and evaluate the seed's Fig. 4-5, Tables 3-5, reuse and "
                                   "the adaptive solvers on the built-in digits (or, with --study fashion, "
                                   "on Fashion-MNIST); writes a README.md with tables and plots under <out>. "
                                   "Cached by config: run it again to resume.")
    p.add_argument("--quick", action="store_true", help="reduced sizes (both studies ≈13 min on 2 cores)")
    p.add_argument("--scale", choices=("full", "quick", "tiny", "smoke"), default=None,
                   help="explicit scale (default: full, or quick with --quick); the digits studies have "
                        "full, quick and tiny, the Fashion-MNIST study full and smoke (tiny models)")
    p.add_argument("--out", default="results", help="output and cache directory")
    p.add_argument("--workers", type=int, default=2, help="single-threaded worker processes")
    p.add_argument("--study", choices=("all", "digits", "ratio", "longer", "solvers", "fashion"),
                   default="all",
                   help="digits: the first study (DiT of depth 6, <out>/README.md); ratio: FPDM against DiTs "
                        "of depth 28 and 12 (<out>/ratio/README.md); all: both; longer: the ratio study's "
                        "DiT-28 and FPDMs trained on to twice its steps, its headline cells again "
                        "(<out>/ratio/longer/README.md; needs the ratio study's trainings); solvers: the "
                        "ratio study's models with DPM-Solver++, UniPC, Heun, DDIM and DDPM on four "
                        "spacings, settings picked on selection seeds (<out>/ratio/solvers/README.md; trains "
                        "what the ratio study's cache lacks); fashion: the seed's findings and ours on "
                        "Fashion-MNIST 32×32 against DiT-28, each model at its best sampler "
                        "(<out>/fashion/README.md; prints its planned CPU-hours first; needs Debian's "
                        "dataset-fashion-mnist)")
    p.add_argument("--plan", action="store_true",
                   help="--study fashion: print what is cached, what is left and its estimated CPU-hours, "
                        "then exit without running anything")
    p.add_argument("--device", default="cpu",
                   help="where trainings and sampling run (e.g. cuda); the cache is keyed by settings only")
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from fpdm.studies import digits as reproduce
    from fpdm.studies import longer as reproduce_longer
    from fpdm.studies import ratio as reproduce_ratio

    scale = a.scale or ("quick" if a.quick else "full")
    fashion = a.study == "fashion"
    if fashion and scale not in ("full", "smoke") or not fashion and scale == "smoke":
        raise ValueError(f"--scale {scale} does not apply to --study {a.study}: the Fashion-MNIST study has "
                         "full and smoke, the digits studies full, quick and tiny")
    if a.workers < 1:
        raise ValueError(f"--workers {a.workers}: expected at least 1 (single-threaded worker processes; "
                         "2 on a 2-core machine)")
    if a.plan:
        if not fashion:
            raise ValueError(f"--plan is for --study fashion (got --study {a.study}): the digits studies "
                             "print no plan")
        from fpdm.studies import fashion as fashion_study
        from fpdm.studies.fashion_cells import FASHION_SCALES

        root = Path(a.out) / "fashion"
        fashion_study.check_inputs(FASHION_SCALES[scale])
        p = fashion_study.plan(FASHION_SCALES[scale], root)
        print(f"fashion study ({scale}) -> {root}: {fashion_study.plan_line(p, a.workers)}")
        if p["trainings"]:
            print(f"trainings left, in the order they run: {', '.join(p['trainings'])}")
        return 0
    try:
        if a.study in ("all", "digits"):
            reproduce.run(scale, a.out, workers=a.workers, device=a.device)
        if a.study in ("all", "ratio"):
            reproduce_ratio.run(scale, Path(a.out) / "ratio", workers=a.workers, device=a.device)
        if a.study == "longer":
            reproduce_longer.run(scale, Path(a.out) / "ratio", workers=a.workers, device=a.device)
        if a.study == "solvers":
            from fpdm.studies import solvers

            solvers.run(scale, Path(a.out) / "ratio", workers=a.workers, device=a.device)
        if fashion:
            from fpdm.studies import fashion as fashion_study

            fashion_study.run(scale, Path(a.out) / "fashion", workers=a.workers, device=a.device)
    except KeyboardInterrupt:
        print(f"fpdm reproduce: interrupted; finished trainings and cells are cached in {a.out} (trainings "
              "keep their last checkpoint): run the same command again to resume", file=sys.stderr)
        return 130
    return 0
