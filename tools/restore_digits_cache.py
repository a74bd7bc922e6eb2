"""Rebuild the cache of the first (digits) study from its published results, so that `fpdm reproduce
--study digits` only computes what is new.

The published `docs/results/results.json` holds every cell's measured result and every training's summary;
the cache they came from is gone. This writes them back under the keys the study looks up (eval entries
and training summaries, with digests), except:

- trainings named with --retrain are trained again here (their checkpoints are needed: new cells sample
  from them) by the same recipe and seed; their published summaries are kept (the equal-wall-clock DiT's
  step count is derived from the published wall times). Their cells are not restored but sampled again:
  the retrained weights need not equal the published ones (code changed in between; measured 2026-11-30:
  none of 300 recomputed cells was equal, median 0.49, at most 18.28 digits-FID apart), and a study must
  not pair cells of two different models. `--check` lists how far each recomputed cell moved from its
  published number;
- cells named by --recompute (e.g. the grid cells, to redraw the grids), which are sampled again;
- cells with a tolerance (their key now says the per-sample rule; the published ones used the batch-wide).

    .venv/bin/python tools/restore_digits_cache.py --out /root/fpdm-cache/digits \\
        --retrain fpdm dit dit-depth3 dit-eqwall --recompute grids --workers 2
    .venv/bin/fpdm reproduce --study digits --out /root/fpdm-cache/digits --workers 2
    .venv/bin/python tools/restore_digits_cache.py --out /root/fpdm-cache/digits --check
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fpdm.studies.digits import FULL  # noqa: E402
from fpdm.studies.engine import EvalSpec, TrainSpec, cache_key, run_parallel, store_result, train_task  # noqa: E402

PUBLISHED = ROOT / "docs" / "results" / "results.json"


def _train_spec(d: dict) -> TrainSpec:
    return TrainSpec(d["name"], d["model"], tuple(tuple(x) for x in d["overrides"]),
                     tuple(tuple(x) for x in d["train"]))


def _is_grid(settings: dict) -> bool:
    return settings["seed_block"] == 0 and settings["experiment"] == "smoothing" and \
        settings["budget"] == FULL.grid_budget and settings["sampler"] == "ddpm" and not settings["reuse"]


def _trained_to(folder: Path) -> int | None:
    """The step of the checkpoint in `folder` (None without one); only its values are checked here, the
    training that resumes from it checks the tensors."""
    from fpdm.common.checkpoint import load_checkpoint

    return load_checkpoint(folder / "ckpt.pt", only=())["step"] if (folder / "ckpt.pt").exists() else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="the study folder (its cache: <out>/train, <out>/eval)")
    p.add_argument("--published", default=str(PUBLISHED), help="results.json of the published study")
    p.add_argument("--retrain", nargs="*", default=[], help="trainings to train again for their checkpoints")
    p.add_argument("--workers", type=int, default=1, help="processes for --retrain")
    p.add_argument("--recompute", nargs="*", default=[], choices=["grids"], help="cells to sample again")
    p.add_argument("--check", action="store_true", help="compare the cells computed again with the published "
                   "numbers instead of restoring")
    a = p.parse_args()
    published = json.loads(Path(a.published).read_text())
    root = Path(a.out)
    by_name = {s["name"]: s for s in published["trainings"]}
    specs = {name: _train_spec(s["spec"]) for name, s in by_name.items()}
    scale = FULL
    if a.check:
        same = differ = 0
        for cell in published["cells"]:
            st = cell["settings"]
            path = root / "eval" / f"{cache_key(st | {'scale': asdict(scale)})}.json"
            if not path.exists() or st.get("tol") is not None:
                continue
            now = json.loads(path.read_text())
            if now.get("restored"):
                continue  # restored, not recomputed
            if now["digits_fid"] == cell["digits_fid"]:
                same += 1
            else:
                differ += 1
                print(f"differs: {st} published {cell['digits_fid']} now {now['digits_fid']}")
        print(f"recomputed cells equal to the published ones: {same}; different: {differ}")
        return 1 if differ else 0
    unknown = [n for n in a.retrain if n not in by_name]
    if unknown:
        p.error(f"--retrain {' '.join(unknown)}: no such training in {a.published}")
    jobs = []
    for n in a.retrain:
        folder = root / "train" / specs[n].key(scale, by_name[n]["step"])
        if _trained_to(folder) != by_name[n]["step"]:  # none yet, or one interrupted: it resumes
            (folder / "summary.json").unlink(missing_ok=True)  # a restored summary would stop the training
            jobs.append((specs[n], scale, by_name[n]["step"], str(root)))
    run_parallel(train_task, jobs, a.workers, lambda msg: print(f"retrain {msg}", flush=True))
    restored = skipped = 0
    for name, summary in by_name.items():  # the published summaries, retrained ones included
        store_result(root / "train" / specs[name].key(scale, summary["step"]) / "summary.json", summary)
        restored += 1
    for cell in published["cells"]:
        st = cell["settings"]
        if st.get("tol") is not None or ("grids" in a.recompute and _is_grid(st)) or st["train"] in a.retrain:
            skipped += 1
            continue
        spec_settings = EvalSpec(st["experiment"], specs[st["train"]], 0, st["budget"]).settings()
        assert set(spec_settings) <= set(st) | {"train_steps"}, st  # the published keys are still the keys
        cell = {k: v for k, v in cell.items() if k != "grid"} | {"restored": True}  # as --check tells them
        store_result(root / "eval" / f"{cache_key(st | {'scale': asdict(scale)})}.json", cell)
        restored += 1
    print(f"restored {restored} entries under {root}; left to compute: {skipped} cells and the trainings "
          f"{', '.join(a.retrain) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
