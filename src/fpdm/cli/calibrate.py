"""`fpdm calibrate`: measure where iterations pay and write a schedule."""

from __future__ import annotations

import argparse

from fpdm.cli.common import _add_official_options, _add_threads, _Formatter, _official_kw
from fpdm.diffusion.schedules import SPACINGS
from fpdm.sampling.calibrate import DEFAULT_SEEDS
from fpdm.sampling.loop import SAMPLERS


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", formatter_class=_Formatter, help="measure where iterations pay; write a "
                       "schedule", description="Measure, on calibration seeds, how much each step's "
                       "prediction changes with its number of fixed-point iterations; choose the steps and "
                       "the iterations per step that spend --budget exactly with the least measured error "
                       "(the step count by digits-FID of samples on the calibration seeds, or --steps). "
                       "Writes the schedule JSON and a plot; use it with `fpdm sample --schedule`.")
    p.add_argument("--ckpt", required=True, help="checkpoint, export folder or built-in name (required)")
    _add_official_options(p)
    p.add_argument("--budget", type=int, required=True, help="blocks per sample to spend (required)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the candidate with the "
                   "best digits-FID on the calibration seeds; needed for non-digits models)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="the sampler the schedule is for (as "
                   "`fpdm sample --sampler`): one iteration count per model evaluation")
    p.add_argument("--spacing", choices=SPACINGS, default="uniform", help="the timesteps' spacing (as `fpdm "
                   "sample --spacing`)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cfg-legacy", action="store_true", help="guide only the first 3 channels, as DiT's code")
    p.add_argument("--reuse", action="store_true", help="calibrate (and later sample) with warm starts")
    p.add_argument("--seeds", default=f"{DEFAULT_SEEDS[0]}-{DEFAULT_SEEDS[-1]}",
                   help="calibration seeds: keep them disjoint from the seeds you evaluate on")
    p.add_argument("--max-iters", type=int, default=26, help="most iterations one step may get")
    p.add_argument("--ref-iters", type=int, default=None, help="iterations of the converged reference "
                   "solve (default: twice the most one step can get, at most 2 × --max-iters)")
    p.add_argument("--measure-samples", type=int, default=64, help="calibration seeds used for the error "
                   "tables (all seeds score the step counts)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu", help="cpu, cuda, …")
    p.add_argument("--out", default=None, help="schedule JSON (default: <ckpt dir>/schedules/B<budget>-"
                   "<sampler>[-reuse].json)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    _add_threads(p)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from fpdm.sampling.calibrate import calibrate_to_file
    from fpdm.sampling.loop import SamplerSettings, parse_seeds
    from fpdm.weights.loading import load_model

    model, diffusion, _ = load_model(a.ckpt, use_ema=not a.no_ema, **_official_kw(a))
    settings = SamplerSettings(sampler=a.sampler, spacing=a.spacing, eta=a.eta, cfg_scale=a.cfg_scale,
                               cfg_legacy=a.cfg_legacy, reuse=a.reuse)
    schedule, files = calibrate_to_file(
        model, diffusion, a.budget, ckpt=a.ckpt, out=a.out, settings=settings, seeds=parse_seeds(a.seeds),
        steps=a.steps, max_iters=a.max_iters, ref_iters=a.ref_iters, measure_samples=a.measure_samples,
        device=a.device, progress=not a.no_progress)
    cost = schedule["cost"]
    print(f"schedule  {schedule['steps']} steps, iterations {schedule['iters']}" if schedule["iters"] else
          f"schedule  {schedule['steps']} steps (a DiT: nothing to allocate)")
    print(f"    cost  {cost['seconds']:.1f} s, {cost['blocks']:,} block evaluations (as many as sampling "
          f"{cost['as_many_blocks_as_sampling_images']:,} images with it, at {a.budget} per sample)")
    print(f"   files  {', '.join(str(f) for f in files)}")
    return 0
