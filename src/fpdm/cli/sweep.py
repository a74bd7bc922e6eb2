"""`fpdm sweep`: sample at one budget over several k, with digits metrics per row."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpdm.cli.common import _Formatter, _official_kw, _writable_folder
from fpdm.cli.sampling_options import (
    CALIBRATED,
    _add_sampling_options,
    _sample_identity,
    _sample_seeds,
    _sample_tag,
)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", formatter_class=_Formatter, help="sample at one budget over several k",
                       description="At a fixed --budget, sample with each of --iters-list (constant k; the "
                                   "steps follow) and tabulate quality. Writes <out>.md/.json and grids.")
    _add_sampling_options(p)
    p.add_argument("--iters-list", default="1,2,3,4,6,8,12", help="comma-separated k values")
    p.add_argument("--out", default=None, help="output prefix (default: <ckpt dir>/sweeps/budget<B>-<every "
                   "setting that changes the samples>)")
    p.add_argument("--overwrite", action="store_true", help="replace a sweep that --out holds from other "
                   "settings, with its grids (refused by default)")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(a: argparse.Namespace) -> int:
    from fpdm.evaluation.evaluate import small_sample_warning
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import parts_folder, remove_parts
    from fpdm.sampling.sweep import previous_rows, remove_outputs, run_sweep
    from fpdm.weights.loading import load_model

    if a.budget is None:
        raise ValueError("fpdm sweep needs --budget")
    if a.steps is not None or a.iters is not None:
        raise ValueError("fpdm sweep derives the steps from --budget and each k of --iters-list; drop "
                         "--steps/--iters")
    try:
        ks: list = [int(v) for v in a.iters_list.split(",")]
    except ValueError:
        raise ValueError(f"--iters-list {a.iters_list!r}: expected comma-separated integers") from None
    model, diffusion, _ = load_model(a.ckpt, use_ema=not a.no_ema, **_official_kw(a))
    model.to(a.device)
    tag = f"budget{a.budget}-" + _sample_tag(a).replace(f"-B{a.budget}", "")
    prefix = Path(a.out) if a.out else Path(a.ckpt).parent / "sweeps" / tag
    _writable_folder(prefix.parent, f"--out {prefix}")
    if model.config.arch != "fpdm":
        ks = [None]
    if a.schedule:
        ks.append(CALIBRATED)  # one more row: the calibrated schedule at the same budget
    settings = {**_sample_identity(a), "iters_list": a.iters_list}
    if previous_rows(prefix, settings) is None:
        if not a.overwrite:
            raise FileExistsError(f"{prefix}.json holds a sweep with other settings; pass --overwrite to "
                                  "replace it (and its grids), or choose another --out")
        remove_outputs(prefix)
    if (warning := small_sample_warning(len(parse_seeds(a.seeds)))) is not None:
        print(f"fpdm sweep: warning: {warning}", file=sys.stderr)

    def skipped(k: int | None, e: ValueError) -> None:
        print(f"k={k}: skipped: {e}", file=sys.stderr)

    def sample_k(k):
        parts = parts_folder(f"{prefix}-k{k}")
        run = _sample_seeds(a, model, diffusion, k, parts=parts)
        remove_parts(parts)
        return run

    try:
        rows = run_sweep(sample_k, ks, prefix, model.config, settings, on_skip=skipped,
                         on_row=lambda row: print(f"k={row['iters']}: " + ", ".join(
                             f"{key} {val:.4g}" if isinstance(val, float) else f"{key} {val}"
                             for key, val in row.items() if key != "iters")))
    except KeyboardInterrupt:
        kept = previous_rows(prefix, settings) or {}
        print(f"fpdm sweep: interrupted; {len(kept)} finished row(s) kept in {prefix}.json: run the same "
              "command again to resume", file=sys.stderr)
        return 130
    if not rows:
        raise ValueError(f"no k in --iters-list {a.iters_list} spends budget {a.budget} exactly; see "
                         f"`fpdm budget-table --ckpt {a.ckpt} --budget {a.budget}`")
    print(Path(f"{prefix}.md").read_text())
    return 0
