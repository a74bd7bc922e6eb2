"""The sampling options `sample` and `sweep` share, and their translation into one
`fpdm.sampling.many.sample_seeds` call (with a calibrated schedule or without)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fpdm.cli.common import _add_official_options, _add_threads
from fpdm.common.distributed import World
from fpdm.fixed_point.solvers import SOLVERS
from fpdm.sampling.budget import DEFAULT_RATIO, PROFILES
from fpdm.sampling.loop import SAMPLERS


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint written by `fpdm train` (…/ckpt.pt), an "
                   "`fpdm export` folder, or an official DiT/FPDM checkpoint")
    _add_official_options(p)
    g = p.add_argument_group("compute budget (blocks per sample; guidance's doubled batch is not counted)")
    g.add_argument("--budget", type=int, default=None,
                   help="transformer-block evaluations per sample, spent exactly; give --iters (steps "
                        "follow) or --steps (iterations follow) (default: no budget)")
    g.add_argument("--steps", default=None, help="sampling steps: an int, or without --budget an ADM spec "
                   "such as 'ddim50' or '10,20' (default: 50 without --budget)")
    g.add_argument("--iters", type=int, default=None,
                   help="FPDM iterations per step (default: depth - pre - post)")
    g.add_argument("--profile", choices=PROFILES, default="constant",
                   help="how --budget --steps spreads iterations over steps (sampling order)")
    g.add_argument("--ratio", type=float, default=DEFAULT_RATIO,
                   help="ramp profiles: largest over smallest weight of the iterations beyond the first")
    g.add_argument("--schedule", default=None, help="a calibrated schedule JSON (`fpdm calibrate`): its "
                   "steps and per-step iterations, for the weights, budget and sampler settings it was made "
                   "for (default: none)")
    g.add_argument("--reuse", action="store_true", help="warm-start each step from the previous step's z*")
    g.add_argument("--tol", type=float, default=None, help="stop a step's iterations below this relative "
                   "residual and pass the unspent ones on (default: off)")
    g.add_argument("--solver", choices=SOLVERS, default="picard", help="fixed-point solver")
    g.add_argument("--anderson-window", type=int, default=5, help="Anderson history size")
    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="ancestral or DDIM steps")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    g.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--cfg-legacy", action="store_true", help="guide only the first 3 channels, as DiT's code")
    g.add_argument("--seeds", default="0-99", help="one sample per seed, e.g. '0-999' or '0-3,10'")
    g.add_argument("--label", type=int, default=None,
                   help="class of every sample (default: cycle through the classes)")
    g.add_argument("--batch-size", type=int, default=256, help="samples per forward batch")
    g.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    g.add_argument("--device", default="cpu", help="cpu, cuda, …")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-limits", action="store_true", help="allow more than 100,000 steps or 10,000 "
                   "iterations per step (refused by default as a likely typo)")
    _add_threads(g)


def _sampler_settings(a: argparse.Namespace):
    from fpdm.sampling.loop import SamplerSettings

    return SamplerSettings(sampler=a.sampler, eta=a.eta, cfg_scale=a.cfg_scale, cfg_legacy=a.cfg_legacy,
                           reuse=a.reuse, tol=a.tol, solver=a.solver, anderson_window=a.anderson_window)


def _sample_seeds(a: argparse.Namespace, model, diffusion, iters: int | None, parts: Path | None = None,
                  world: World | None = None):
    """`sample_seeds` with the command line's sampling options."""
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import check_settings, class_labels, resolve_steps, sample_seeds

    if a.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.schedule is not None and (a.iters is not None or iters in (None, CALIBRATED)):
        return _sample_scheduled(a, model, diffusion, a.iters, parts, world)  # (a sweep's k: not this)
    n_steps, per_step = resolve_steps(model, a.budget, a.steps, iters, a.profile, a.ratio)  # errors first
    settings = _sampler_settings(a)
    check_settings(model, settings, budget=a.budget, steps=a.steps, profile=a.profile, label=a.label,
                   n_steps=n_steps, per_step=per_step, limits=not a.no_limits)
    seeds = parse_seeds(a.seeds)
    labels = class_labels(model.config.num_classes, len(seeds), a.label)
    return sample_seeds(model, diffusion, seeds, labels=labels, budget=a.budget, steps=a.steps, iters=iters,
                        profile=a.profile, ratio=a.ratio, settings=settings, batch_size=a.batch_size,
                        device=a.device, parts=parts, world=world, progress=not a.no_progress,
                        identity={"ckpt": str(a.ckpt), "ema": not getattr(a, "no_ema", False)})


CALIBRATED = "calibrated"  # the sweep's row for --schedule


def _sample_scheduled(a: argparse.Namespace, model, diffusion, iters: int | str | None, parts: Path | None,
                      world: World | None):
    """`_sample_seeds` with a calibrated schedule in place of --steps/--iters/--profile."""
    from fpdm.sampling.calibrate import check_schedule, read_schedule
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import check_settings, class_labels, sample_seeds

    if a.steps is not None or a.profile != "constant" or iters is not None:
        raise ValueError("--schedule fixes the steps and every step's iterations; drop --steps, --iters and "
                         "--profile")
    schedule = read_schedule(a.schedule)
    settings = _sampler_settings(a)
    check_schedule(schedule, model, settings, a.budget, source=f"--schedule {a.schedule}")
    check_settings(model, settings, budget=schedule["budget"], steps=None, profile="constant",
                   label=a.label, n_steps=schedule["steps"], per_step=schedule["iters"],
                   limits=not a.no_limits)
    seeds = parse_seeds(a.seeds)
    labels = class_labels(model.config.num_classes, len(seeds), a.label)
    return sample_seeds(model, diffusion, seeds, labels=labels, settings=settings, batch_size=a.batch_size,
                        device=a.device, parts=parts, world=world, progress=not a.no_progress,
                        schedule=schedule, identity={"ckpt": str(a.ckpt), "ema": not a.no_ema,
                                                     "schedule": schedule["weights_hash"]})


def _sample_tag(a: argparse.Namespace) -> str:
    """The default output name: every setting that changes the samples (defaults left out)."""
    parts = (a.sampler, a.schedule and f"schedule-{Path(a.schedule).stem}", a.budget and f"B{a.budget}",
             a.steps and f"s{a.steps}", a.iters is not None and f"k{a.iters}",
             a.budget and a.steps and a.profile != "constant" and a.profile,
             a.profile != "constant" and a.ratio != DEFAULT_RATIO and f"ratio{a.ratio}",
             a.reuse and "reuse", a.tol and f"tol{a.tol}", a.solver != "picard" and a.solver,
             a.solver == "anderson" and a.anderson_window != 5 and f"window{a.anderson_window}",
             a.eta and f"eta{a.eta}", a.cfg_scale != 1 and f"cfg{a.cfg_scale}", a.cfg_legacy and "cfglegacy",
             a.label is not None and f"label{a.label}", a.no_ema and "raw",
             f"seeds{a.seeds.replace(',', '_')}")
    return "-".join(str(v) for v in parts if v)


def _sample_identity(a: argparse.Namespace) -> dict:
    """What determines the samples of a `fpdm sample` run: a later run into the same files must match."""
    keys = ("ckpt", "no_ema", "seeds", "label", "budget", "steps", "iters", "profile", "ratio", "schedule",
            "sampler", "eta", "cfg_scale", "cfg_legacy", "reuse", "tol", "solver", "anderson_window", "vae",
            "num_heads", "pre_post_timestep_conditioning")
    return {k: getattr(a, k, None) for k in keys}


def _refuse_other_results(record_path: Path, identity: dict, overwrite: bool) -> None:
    """Refuse to replace results written with other settings (one line naming the file and --overwrite);
    the same settings again give the same files, so those are simply rewritten."""
    if overwrite or not record_path.exists():
        return
    try:
        old = json.loads(record_path.read_text()).get("identity")
    except (ValueError, UnicodeDecodeError, AttributeError):
        old = None
    if old != identity:
        differ = ", ".join(f"{k} {old.get(k)!r} → {v!r}" for k, v in identity.items()
                           if old.get(k) != v)[:300] if isinstance(old, dict) else "unknown settings"
        raise FileExistsError(f"{record_path} holds results of other settings ({differ}); pass --overwrite "
                              "to replace them, or choose another --out")
