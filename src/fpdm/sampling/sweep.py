"""Budget sweeps (`fpdm sweep`): one budget, several k, and their table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fpdm.config import ModelConfig
from fpdm.sampling.request import (
    CALIBRATED,
    Interrupted,
    SampleRequest,
    model_label,
    print_to_stderr,
    sample_identity,
    sample_request,
    sample_tag,
    writable_folder,
)


def write_table(rows: list[dict[str, Any]], prefix: str | Path, settings: dict[str, Any]) -> None:
    """`<prefix>.json` (rows + settings) and `<prefix>.md` (a Markdown table)."""
    prefix = Path(prefix)
    Path(f"{prefix}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    head = ", ".join(f"{k}={v}" for k, v in settings.items())
    Path(f"{prefix}.md").write_text(f"{head}\n\n" + "\n".join(lines) + "\n")


def previous_rows(prefix: str | Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The rows `<prefix>.json` holds, by k, if it was written with these very settings; {} if there is
    none; None if it holds a sweep with other settings."""
    path = Path(f"{prefix}.json")
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(old, dict) or old.get("settings") != json.loads(json.dumps(settings)):
        return None
    return {str(r["iters"]): r for r in old.get("rows", [])}


def remove_outputs(prefix: str | Path) -> None:
    """Delete a sweep's table and every k's grid and samples (before a sweep with other settings)."""
    prefix = Path(prefix)
    for f in [Path(f"{prefix}.json"), Path(f"{prefix}.md"), *prefix.parent.glob(f"{prefix.name}-k*.png"),
              *prefix.parent.glob(f"{prefix.name}-k*.npz")]:
        f.unlink(missing_ok=True)


def run_sweep(sample_k: Callable[[Any], Any], ks: list[Any], prefix: str | Path,
              model_cfg: ModelConfig, settings: dict[str, Any],
              on_row: Callable[[dict[str, Any]], None] = lambda row: None,
              on_skip: Callable[[Any, ValueError], None] = lambda k, e: None) -> list[dict[str, Any]]:
    """Sample with each k (`sample_k(k)` returns a `SampleRun`; a k it refuses with ValueError is skipped),
    write `<prefix>-k<k>.png/.npz`, and rewrite the table after every k, so an interrupted sweep keeps its
    finished rows and a rerun with the same settings samples only the missing ones. Returns the rows
    (digits metrics where they apply)."""
    from fpdm.common.images import save_image_grid
    from fpdm.evaluation.evaluate import digits_eval
    from fpdm.sampling.many import grid_caption

    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    kept = previous_rows(prefix, settings) or {}
    rows = []
    for k in ks:
        npz = Path(f"{prefix}-k{k}.npz")
        if str(k) in kept and npz.exists():
            rows.append(kept[str(k)])
            on_row(rows[-1])
            continue
        try:
            run = sample_k(k)
        except ValueError as e:
            on_skip(k, e)
            continue
        save_image_grid(run.samples, f"{prefix}-k{k}.png", nrow=10, upscale=4, padding=2, labels=run.labels,
                        caption=grid_caption(run.record, f"k={k}"))
        np.savez_compressed(npz, samples=run.samples.numpy(), labels=run.labels.numpy())
        rec = run.record
        rows.append({"iters": k, "steps": rec["steps"], "blocks_counted": rec["blocks_counted"],
                     "gflops_per_sample": round(rec["flops_per_sample"] / 1e9, 4), "wall_s": rec["wall_s"],
                     **digits_eval(run.samples, run.labels, model_cfg)})
        write_table(rows, prefix, settings)
        on_row(rows[-1])
    if rows:
        write_table(rows, prefix, settings)
    return rows


def sweep_iters(r: SampleRequest) -> list[int | str | None]:
    """The k of each row `fpdm sweep` is asked for; the request's checks that need no weights."""
    if r.budget is None:
        raise ValueError("fpdm sweep needs --budget")
    if r.steps is not None or r.iters is not None:
        raise ValueError("fpdm sweep derives the steps from --budget and each k of --iters-list; drop "
                         "--steps/--iters")
    try:
        return [int(v) for v in r.iters_list.split(",")]
    except ValueError:
        raise ValueError(f"--iters-list {r.iters_list!r}: expected comma-separated integers") from None


def sweep_to_files(r: SampleRequest, model: Any, diffusion: Any, ks: list[int | str | None],
                   on_row: Callable[[dict[str, Any]], None], on_skip: Callable[[Any, ValueError], None],
                   warn: Callable[[str], None] = print_to_stderr, ckpt: dict[str, Any] | None = None) -> Path:
    """`fpdm sweep`'s work after loading the weights: one row per k (a DiT has one row; --schedule adds
    the calibrated one), each sampled in resumable parts and kept in `<prefix>.json` as it finishes, so a
    rerun resumes. Returns the prefix of `<prefix>.md/.json`. Ctrl-C raises `Interrupted`."""
    from fpdm.evaluation.evaluate import small_sample_warning
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import label_index, parts_folder, remove_parts

    r.label = label_index(r.label, (ckpt or {}).get("class_names"), model.config.num_classes)
    model.to(r.device)
    name = model_label(r.ckpt)
    tag = f"{name}-budget{r.budget}-" + sample_tag(r).replace(f"-B{r.budget}", "").removeprefix(f"{name}-")
    prefix = Path(r.out) if r.out else Path(r.ckpt).parent / "sweeps" / tag
    writable_folder(prefix.parent, f"--out {prefix}")
    if model.config.arch != "fpdm":
        ks = [None]
    if r.schedule:
        ks = [*ks, CALIBRATED]  # one more row: the calibrated schedule at the same budget
    settings = {**sample_identity(r), "iters_list": r.iters_list}
    if previous_rows(prefix, settings) is None:
        if not r.overwrite:
            raise FileExistsError(f"{prefix}.json holds a sweep with other settings; pass --overwrite to "
                                  "replace it (and its grids), or choose another --out")
        remove_outputs(prefix)
    if (warning := small_sample_warning(len(parse_seeds(r.seeds)))) is not None:
        warn(f"fpdm sweep: warning: {warning}")

    def sample_k(k: int | str | None) -> Any:
        parts = parts_folder(f"{prefix}-k{k}")
        run = sample_request(r, model, diffusion, k, parts=parts)
        remove_parts(parts)
        return run

    try:
        rows = run_sweep(sample_k, ks, prefix, model.config, settings, on_skip=on_skip, on_row=on_row)
    except KeyboardInterrupt:
        kept = previous_rows(prefix, settings) or {}
        raise Interrupted(f"{len(kept)} finished row(s) kept in {prefix}.json: run the same command again "
                          "to resume") from None
    if not rows:
        raise ValueError(f"no k in --iters-list {r.iters_list} spends budget {r.budget} exactly; see "
                         f"`fpdm budget-table --ckpt {r.ckpt} --budget {r.budget}"
                         f"{'' if r.sampler == 'ddpm' else ' --sampler ' + r.sampler}`")
    return prefix
