"""The sampling options `sample` and `sweep` share (their meaning and defaults: `fpdm.sampling.request`)."""

from __future__ import annotations

import argparse

from fpdm.cli.common import _add_official_options, _add_threads
from fpdm.diffusion.schedules import SPACINGS
from fpdm.fixed_point.solvers import SOLVERS
from fpdm.sampling.budget import DEFAULT_RATIO, PROFILES
from fpdm.sampling.loop import SAMPLERS, TOL_MODES


def _add_sampling_options(p: argparse.ArgumentParser, out_help: str, overwrite_help: str) -> None:
    """The options `sample` and `sweep` share; --out and --overwrite with each command's own help."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    p.add_argument("--ckpt", required=True, help="checkpoint written by `fpdm train` (…/ckpt.pt), an "
                   "`fpdm export` folder, or an official DiT/FPDM checkpoint")
    _add_official_options(p)
    g = p.add_argument_group("compute budget (blocks per sample; guidance's doubled batch is not counted)")
    g.add_argument("--budget", type=int, default=None,
                   help="transformer-block evaluations per sample, spent exactly; give --iters (steps "
                        "follow) or --steps (iterations follow), or neither: FPDM then takes the constant k "
                        "nearest its default that spends it (default: no budget)")
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
    g.add_argument("--tol-mode", choices=TOL_MODES, default="reallocate", help="what --tol does with the "
                   "iterations a step saves: reallocate (later steps may use them; the budget is spent "
                   "exactly) or save (the budget is a cap; the record gives the blocks spent and saved)")
    g.add_argument("--solver", choices=SOLVERS, default="picard", help="fixed-point solver")
    g.add_argument("--anderson-window", type=int, default=5, help="Anderson history size")
    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="ddpm (ancestral), ddim, dpm++2m "
                   "(DPM-Solver++(2M): multistep 2nd-order ODE solver), unipc / unipc3 (UniPC bh2, order 2 / "
                   "3: predictor plus a corrector on the next evaluation), euler, heun (EDM's 2nd-order ODE "
                   "step: 2 model evaluations per step, 1 on the last; budgets count evaluations)")
    g.add_argument("--spacing", choices=SPACINGS, default="uniform", help="which timesteps the steps "
                   "visit: uniform (DiT's respacing, 0 to T-1), trailing (diffusers': T/n apart ending at "
                   "T-1), logsnr (evenly in log-SNR), karras (EDM's rho = 7); snapped to integer timesteps, "
                   "none repeated")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    g.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--cfg-legacy", action="store_true", help="guide only the first 3 channels, as DiT's code")
    g.add_argument("--seeds", default="0-99", help="one sample per seed, e.g. '0-999' or '0-3,10'")
    g.add_argument("--label", default=None, help="class of every sample: an index, or a class name of the "
                   "weights such as 'Ankle boot' or a folder's 'dogs' (default: cycle through the classes)")
    g.add_argument("--batch-size", type=int, default=256, help="samples per forward batch")
    g.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    g.add_argument("--device", default="cpu", help="cpu, cuda, …")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-limits", action="store_true", help="allow more than 100,000 steps or 10,000 "
                   "iterations per step (refused by default as a likely typo)")
    _add_threads(g)
