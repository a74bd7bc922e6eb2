"""`fpdm` command line: train, sample, sweep, budget-table, plot-residuals. --help shows every default."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

import torch

from fpdm.common.distributed import World, init_world, local_device
from fpdm.common.lock import FolderInUse
from fpdm.config import LR_SCHEDULES, PRECISIONS, DiffusionConfig, TrainConfig
from fpdm.diffusion.schedules import BETA_SCHEDULES
from fpdm.fixed_point.solvers import GRADIENT_MODES, SOLVERS
from fpdm.models.registry import MODEL_NAMES, model_config
from fpdm.sampling.budget import DEFAULT_RATIO, PROFILES
from fpdm.sampling.calibrate import DEFAULT_SEEDS
from fpdm.sampling.loop import SAMPLERS

_T = {f.name: f.default for f in fields(TrainConfig)}
_D = {f.name: f.default for f in fields(DiffusionConfig)}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the flag, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required:
            return text
        return super()._get_help_string(action)


def _add_threads(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch's default; on "
                   "small machines 1 thread per process is often faster and steadier)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", formatter_class=_Formatter, help="train a DiT or FPDM",
                       description="Train a DiT or FPDM on the built-in digits or an image folder. "
                                   "Ctrl-C finishes the step, writes a checkpoint and stops; "
                                   "--resume continues.")
    p.add_argument("--config", default=None, help="JSON preset of these options (e.g. configs/imagenet256-"
                   "fpdm-xl2.json); options given on the command line win")
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=_T["data"], help="'digits' or 'fashion-mnist' (built in) or an image "
                   "folder (class = sub-folder, or unconditional when images lie directly in it)")
    g.add_argument("--data-dir", default=None, help="fashion-mnist: the folder of its four IDX files "
                   "(default: $FPDM_DATA, else /usr/share/datasets/fashion-mnist)")
    g.add_argument("--image-size", type=int, default=None, help="resize folder images to this size "
                   "(default: the smallest short side)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 = greyscale, 3 = RGB "
                   "(default: from the data)")
    g.add_argument("--model", default="FPDM-T/2", help="DiT-{T,S,B,L,XL}/{2,4,8} or FPDM-…")
    g.add_argument("--hidden-size", type=int, default=None, help="override the width (default: from --model)")
    g.add_argument("--depth", type=int, default=None, help="override the DiT depth (default: from --model)")
    g.add_argument("--num-heads", type=int, default=None, help="override the heads (default: from --model)")
    g.add_argument("--pre-depth", type=int, default=1, help="FPDM: explicit blocks before the fixed point")
    g.add_argument("--post-depth", type=int, default=1, help="FPDM: explicit blocks after the fixed point")
    g.add_argument("--pre-post-timestep-conditioning", action="store_true",
                   help="FPDM: condition pre/post/final layers on t+y (released default: y only)")
    g.add_argument("--class-dropout-prob", type=float, default=0.1, help="label dropout for guidance")
    g.add_argument("--no-learn-sigma", action="store_true", help="fixed variance instead of learned sigma")
    g = p.add_argument_group("diffusion")
    g.add_argument("--schedule", choices=BETA_SCHEDULES, default=_D["schedule"], help="beta schedule")
    g.add_argument("--num-timesteps", type=int, default=_D["num_timesteps"], help="training timesteps T")
    g.add_argument("--prediction", choices=("eps", "v"), default=_D["prediction"], help="model target")
    g.add_argument("--zero-terminal-snr", action="store_true", help="rescale betas to zero terminal SNR "
                   "(use with --prediction v)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--out", default=None, help="run directory (default: runs/<data>-<model>)")
    g.add_argument("--steps", type=int, default=None, help=f"total training steps (default: {_T['steps']}; "
                   "with --resume, the run's own)")
    g.add_argument("--batch-size", type=int, default=_T["batch_size"], help="images per step")
    g.add_argument("--lr", type=float, default=_T["lr"], help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=_T["weight_decay"], help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, default=_T["warmup_steps"], help="linear LR warm-up")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=_T["lr_schedule"],
                   help="after warm-up: constant (DiT), or cosine decay to 0 at --steps (fixed when the run "
                        "starts)")
    g.add_argument("--grad-clip", type=float, default=_T["grad_clip"], help="max grad norm (0 = off)")
    g.add_argument("--ema-decay", type=float, default=_T["ema_decay"], help="EMA decay per step")
    g.add_argument("--fp-mode", choices=GRADIENT_MODES, default=_T["fp_mode"],
                   help="FPDM fixed-point gradient: S-JFB, 1-step JFB, multi-step JFB, full backprop")
    g.add_argument("--fp-max-no-grad", type=int, default=_T["fp_max_no_grad"],
                   help="N: n ~ U{0..N} iterations without gradient")
    g.add_argument("--fp-max-with-grad", type=int, default=_T["fp_max_with_grad"],
                   help="M: m ~ U{1..M} iterations with gradient (multistep: exactly M)")
    g.add_argument("--seed", type=int, default=_T["seed"], help="seeds init, data order, noise, plans")
    g.add_argument("--log-every", type=int, default=_T["log_every"], help="steps per JSONL log record")
    g.add_argument("--ckpt-every", type=int, default=_T["ckpt_every"], help="steps between checkpoints")
    g.add_argument("--keep-every", type=int, default=_T["keep_every"],
                   help="also keep ckpt-<step>.pt every this many steps, for quality-vs-step curves (0: only "
                        "the latest ckpt.pt)")
    g.add_argument("--keep-last", type=int, default=None,
                   help=f"earlier checkpoints kept as ckpt.prev1.pt, … so a damaged latest one does not lose "
                        f"the run (default: {_T['keep_last']}; with --resume, the run's own)")
    g.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, … (default: {_T['device']}; with "
                   "--resume, the run's own)")
    g.add_argument("--grad-checkpoint", action="store_true", help="recompute activations of every block "
                   "and with-gradient fixed-point iteration in backward (less memory, ~1 more forward)")
    g.add_argument("--precision", choices=PRECISIONS, default=_T["precision"],
                   help="bf16: forward under bfloat16 autocast (weights, optimizer and EMA stay fp32)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile each transformer block (GPU; the first steps are slow)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(its configs are used; --steps may extend it)")
    g.add_argument("--fallback", action="store_true", help="with --resume: if ckpt.pt is damaged, continue "
                   "from the newest intact ckpt.prevN.pt (without it, the damage is an error that names it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(g)
    p.set_defaults(func=_cmd_train)


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


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", formatter_class=_Formatter, help="draw samples from a checkpoint",
                       description="Sample from a training checkpoint (architecture read from it). Writes a "
                                   "PNG grid, the samples as .npz and a JSON record of what ran.")
    _add_sampling_options(p)
    p.add_argument("--out", default=None, help="output prefix (default: <ckpt dir>/samples/<settings>)")
    p.add_argument("--nrow", type=int, default=10, help="grid columns")
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour enlargement of the grid")
    p.add_argument("--eval", action="store_true", help="add digits-FID, KID, precision/recall and class "
                   "consistency to the record (digits-shaped models)")
    p.add_argument("--adm-npz", action="store_true", help="also write <prefix>.adm.npz (arr_0, uint8 "
                   "N×H×W×3) for the ADM evaluation suite")
    p.add_argument("--vae", default=None, help="decode latent samples through this AutoencoderKL folder "
                   "(default: the VAE named by the training data's latent manifest, if any)")
    p.add_argument("--overwrite", action="store_true", help="replace results that --out holds from other "
                   "settings (refused by default)")
    p.set_defaults(func=_cmd_sample)


def _add_extract_latents(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-latents", formatter_class=_Formatter, help="encode images with a VAE",
                       description="Encode an image folder (ADM centre crop, RGB) with a local diffusers "
                                   "AutoencoderKL into latent shards + manifest.json; train on them with "
                                   "`fpdm train --data <out>`.")
    p.add_argument("--data", required=True, help="image folder (class = sub-folder) (required)")
    p.add_argument("--vae", required=True, help="local AutoencoderKL folder, e.g. the SD VAE (required)")
    p.add_argument("--out", required=True, help="output folder for shards and manifest (required)")
    p.add_argument("--image-size", type=int, default=256, help="centre-crop size in pixels")
    p.add_argument("--flip", action="store_true", help="also encode each image's mirror image")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder call")
    p.add_argument("--shard-size", type=int, default=4096, help="latents per shard file")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    p.add_argument("--device", default="cpu", help="cpu, cuda, …")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract_latents)


def _cmd_extract_latents(a: argparse.Namespace) -> int:
    from fpdm.data.latents import extract_latents

    m = extract_latents(a.data, a.vae, a.out, a.image_size, flip=a.flip, batch_size=a.batch_size,
                        shard_size=a.shard_size, seed=a.seed, device=a.device, progress=not a.no_progress)
    print(f"wrote {m['num_samples']} latents of shape {m['latent_shape']} in {len(m['shards'])} shard(s) "
          f"and {Path(a.out) / 'manifest.json'}")
    return 0


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
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="ancestral or DDIM steps")
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
    from fpdm.evaluation.evaluate import digits_eval
    from fpdm.sampling.calibrate import calibrate, write_schedule
    from fpdm.sampling.loop import SamplerSettings, parse_seeds
    from fpdm.sampling.many import check_settings
    from fpdm.weights.loading import load_model

    for flag, value in (("--max-iters", a.max_iters), ("--measure-samples", a.measure_samples)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    model, diffusion, _ = load_model(a.ckpt, use_ema=not a.no_ema, **_official_kw(a))
    model.to(a.device)
    settings = SamplerSettings(sampler=a.sampler, eta=a.eta, cfg_scale=a.cfg_scale, cfg_legacy=a.cfg_legacy,
                               reuse=a.reuse)
    check_settings(model, settings, budget=a.budget, steps=a.steps, profile="constant", label=None,
                   n_steps=a.steps or 1, per_step=None)
    cfg = model.config
    digits = (cfg.input_size, cfg.in_channels) == (8, 1)

    def score(x, labels) -> float:
        return digits_eval(x, labels, cfg)["digits_fid"]

    schedule = calibrate(model, diffusion, a.budget, seeds=parse_seeds(a.seeds), settings=settings,
                         steps=a.steps, max_iters=a.max_iters, ref_iters=a.ref_iters,
                         measure_samples=a.measure_samples, score=score if digits else None,
                         device=a.device, checkpoint=str(a.ckpt), progress=not a.no_progress)
    default = Path(a.ckpt).parent / "schedules" / "-".join(
        v for v in (f"B{a.budget}", a.sampler, a.reuse and "reuse", a.cfg_scale != 1 and f"cfg{a.cfg_scale}")
        if v)
    out = Path(a.out) if a.out else default.with_suffix(".json")
    _writable_folder(out.parent, f"--out {out}")
    files = write_schedule(out, schedule)
    cost = schedule["cost"]
    print(f"schedule  {schedule['steps']} steps, iterations {schedule['iters']}" if schedule["iters"] else
          f"schedule  {schedule['steps']} steps (a DiT: nothing to allocate)")
    print(f"    cost  {cost['seconds']:.1f} s, {cost['blocks']:,} block evaluations (as many as sampling "
          f"{cost['as_many_blocks_as_sampling_images']:,} images with it, at {a.budget} per sample)")
    print(f"   files  {', '.join(str(f) for f in files)}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", formatter_class=_Formatter, help="the compute dial in a browser",
                       description="A local web page: sample the built-in digits FPDM and DiT (and --ckpt) "
                                   "at a block budget, spent as steps or iterations, and watch the samples, "
                                   "the iterations per step and the residuals change; DiT at the same budget "
                                   "beside.")
    p.add_argument("--ckpt", default=None, help="also serve this checkpoint or export (default: the built-in "
                   "digits models only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (other than localhost: anyone "
                   "who can reach it can run jobs here)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--schedules", action="append", default=[], help="a folder of calibrated schedules to "
                   "offer (repeatable; default: <ckpt dir>/schedules)")
    _add_threads(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    from fpdm.serve.server import serve

    if not 0 <= a.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {a.port}")
    try:
        serve(a.host, a.port, a.ckpt, [Path(s) for s in a.schedules])
    except KeyboardInterrupt:
        return 0
    return 0


def _add_budget_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budget-table", formatter_class=_Formatter, help="feasible (iterations, steps) pairs",
                       description="List the constant-k settings that spend --budget exactly, with FLOPs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="read the architecture from a checkpoint (this or --model is required)")
    src.add_argument("--model", help="a model name, e.g. FPDM-XL/2, with --input-size/--in-channels (this or "
                     "--ckpt is required)")
    p.add_argument("--input-size", type=int, default=32, help="with --model: input size")
    p.add_argument("--in-channels", type=int, default=4, help="with --model: input channels")
    p.add_argument("--budget", type=int, required=True, help="blocks per sample (required)")
    p.add_argument("--max-iters", type=int, default=None, help="list k up to this (default: all)")
    _add_threads(p)
    p.set_defaults(func=_cmd_budget_table)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", formatter_class=_Formatter, help="score samples against a reference",
                       description="Score samples (.npz from fpdm sample, an ADM .npz, or an image folder) "
                                   "against a reference. Digits: the project's feature net (digits-FID, KID, "
                                   "precision/recall, class consistency). Other data: Inception via "
                                   "torch-fidelity (the `eval` extra) with a local weights file.")
    p.add_argument("samples", help="samples: .npz or a folder of images")
    p.add_argument("--ref", default="digits", help="'digits' (held-out split), 'digits-train', or (with "
                   "--inception-weights) a folder / .npz of reference images")
    p.add_argument("--inception-weights", default=None, help="local Inception weights file for FID/KID/IS/"
                   "precision/recall on real datasets (nothing is downloaded) (default: digits metrics)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (clipped to set sizes)")
    p.add_argument("--device", default="cpu", help="for Inception features: cpu, cuda, …")
    p.add_argument("--out", default=None, help="JSON path (default: <samples>.eval.json)")
    _add_threads(p)
    p.set_defaults(func=_cmd_eval)


def _add_train_features(sub: argparse._SubParsersAction) -> None:
    from fpdm.evaluation.digits_features import WEIGHTS, FeatureTrainConfig

    d = FeatureTrainConfig()
    p = sub.add_parser("train-features", formatter_class=_Formatter, help="(re)train the digits feature net",
                       description="Train the CNN behind digits-FID on the digits train split (seeded, one "
                                   "thread) and write its weights and the held-out reference features. With "
                                   "the defaults this regenerates the shipped file bit for bit.")
    p.add_argument("--out", default=str(WEIGHTS), help="safetensors path")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init and data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_features)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", formatter_class=_Formatter,
                       help="reproduce the seed's findings on digits",
                       description="Train, sample and evaluate the seed's Fig. 4-5, Tables 3-5, reuse and "
                                   "the adaptive solvers on the built-in digits; writes <out>/README.md with "
                                   "tables and plots. Cached by config: run it again to resume.")
    p.add_argument("--quick", action="store_true", help="reduced sizes (both studies ≈13 min on 2 cores)")
    p.add_argument("--scale", choices=("full", "quick", "tiny"), default=None,
                   help="explicit scale (default: full, or quick with --quick)")
    p.add_argument("--out", default="results", help="output and cache directory")
    p.add_argument("--workers", type=int, default=2, help="single-threaded worker processes")
    p.add_argument("--study", choices=("all", "digits", "ratio", "longer"), default="all",
                   help="digits: the first study (DiT of depth 6, <out>/README.md); ratio: FPDM against DiTs "
                        "of depth 28 and 12 (<out>/ratio/README.md); all: both; longer: the ratio study's "
                        "DiT-28 and FPDMs trained on to twice its steps, its headline cells again "
                        "(<out>/ratio/longer/README.md; needs the ratio study's trainings)")
    p.add_argument("--device", default="cpu",
                   help="where trainings and sampling run (e.g. cuda); the cache is keyed by settings only")
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from fpdm.studies import digits as reproduce
    from fpdm.studies import longer as reproduce_longer
    from fpdm.studies import ratio as reproduce_ratio

    scale = a.scale or ("quick" if a.quick else "full")
    try:
        if a.study in ("all", "digits"):
            reproduce.run(scale, a.out, workers=a.workers, device=a.device)
        if a.study in ("all", "ratio"):
            reproduce_ratio.run(scale, Path(a.out) / "ratio", workers=a.workers, device=a.device)
        if a.study == "longer":
            reproduce_longer.run(scale, Path(a.out) / "ratio", workers=a.workers, device=a.device)
    except KeyboardInterrupt:
        print(f"fpdm reproduce: interrupted; finished trainings and cells are cached in {a.out} (trainings "
              "keep their last checkpoint): run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", formatter_class=_Formatter, help="checkpoint → safetensors + JSON config",
                       description="Write a training checkpoint's weights as <out>/model.safetensors and its "
                                   "configs as <out>/config.json: the form to publish (loading it cannot run "
                                   "code). `fpdm sample --ckpt <out>` reads it.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `fpdm train` (…/ckpt.pt)")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.set_defaults(func=_cmd_export)


def _add_official_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--num-heads", type=int, default=None, help="official checkpoints: attention heads, when "
                   "neither the width (S/B/L/XL) nor args.json tells (default: from the file)")
    p.add_argument("--pre-post-timestep-conditioning", action="store_const", const=True, default=None,
                   help="official FPDM checkpoints: pre/post/final layers see t + y (default: args.json, or "
                        "the released y only)")


def _official_kw(a: argparse.Namespace) -> dict:
    return {"num_heads": a.num_heads, "pre_post_timestep_conditioning": a.pre_post_timestep_conditioning}


def _add_build_weights(sub: argparse._SubParsersAction) -> None:
    from fpdm.weights.builtin import BUILTINS

    p = sub.add_parser("build-weights", formatter_class=_Formatter,
                       help="(re)build the built-in digits weights",
                       description="Train the built-in digits models by their recipe (3,000 steps, batch 64, "
                                   "AdamW 1e-3, one thread) and write their EMA weights into the package (or "
                                   "--out), with the recipe and the digits-FID measured at the stated "
                                   "budget. On the same torch build this regenerates the shipped files bit "
                                   "for bit.")
    p.add_argument("names", nargs="*", default=list(BUILTINS), help="which built-ins")
    p.add_argument("--out", default=None,
                   help="parent folder of the built-ins (default: the package's assets)")
    p.add_argument("--bf16", action="store_true", help="store the weights as bfloat16 (half the size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_weights)


def _cmd_build_weights(a: argparse.Namespace) -> int:
    import torch

    from fpdm.weights.build import build

    for name in a.names:
        cfg = build(name, None if a.out is None else Path(a.out) / name,
                    dtype=torch.bfloat16 if a.bf16 else None, progress=not a.no_progress)
        ev = cfg["digits_eval"]
        print(f"{name}: digits-FID {ev['digits_fid']:.2f} ± {ev['digits_fid_se']:.2f} at budget "
              f"{ev['budget']} (seeds 0-99), trained in {cfg['train_wall_s']:.0f} s")
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", formatter_class=_Formatter, help="official DiT/FPDM checkpoint → our format",
                       description="Read an official DiT/FPDM checkpoint (a bare state dict such as "
                                   "DiT-XL-2-256x256.pt, or the official trainer's checkpoint with args.json "
                                   "in its run folder), infer its architecture, and write "
                                   "<out>/model.safetensors + config.json with the provenance. `fpdm sample "
                                   "--ckpt` also reads official files directly.")
    p.add_argument("src", help="official .pt/.pth/.safetensors file")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--no-ema", action="store_true", help="trainer checkpoints: the raw weights, not the EMA")
    _add_official_options(p)
    p.set_defaults(func=_cmd_import)


def _cmd_import(a: argparse.Namespace) -> int:
    from fpdm.weights.export import import_official

    cfg = import_official(a.src, a.out, use_ema=not a.no_ema, num_heads=a.num_heads,
                          pre_post_timestep_conditioning=a.pre_post_timestep_conditioning)
    m = cfg["model_config"]
    print(f"wrote {Path(a.out) / 'model.safetensors'} and config.json: {m['arch']} width {m['hidden_size']}, "
          f"depth {m['depth']}, heads {m['num_heads']}, patch {m['patch_size']}, input {m['input_size']}, "
          f"{m['num_classes']} classes ({cfg['weights']})")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from fpdm.weights.export import export_weights

    cfg = export_weights(a.ckpt, a.out, use_ema=not a.no_ema)
    print(f"wrote {Path(a.out) / 'model.safetensors'} ({cfg['weights']} weights, step {cfg['step']}) and "
          f"{Path(a.out) / 'config.json'}")
    return 0


def _add_plot_residuals(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-residuals", formatter_class=_Formatter, help="plot a sample record's residuals",
                       description="Draw the relative fixed-point residual per iteration, one line per step.")
    p.add_argument("record", help="the .json written by `fpdm sample`")
    p.add_argument("--out", default=None, help="PNG path (default: the record's path with .residuals.png)")
    _add_threads(p)
    p.set_defaults(func=_cmd_plot_residuals)


def _cmd_train(a: argparse.Namespace) -> int:
    from fpdm.data.datasets import load_dataset
    from fpdm.training.loop import resume, train
    from fpdm.training.run_folder import train_summary_lines, write_summary

    if a.config:
        _apply_preset(a, a.config)
    out = a.out or str(Path("runs") / f"{Path(a.data).name}-{a.model.replace('/', '').lower()}")
    if a.fallback and not a.resume:
        raise ValueError("--fallback chooses the checkpoint that --resume continues from; it needs --resume")
    if a.resume:  # everything but --steps/--device/--keep-last comes from the checkpoint
        _check_resume_flags(a, out)
        summary = resume(out, steps=a.steps, device=a.device, keep_last=a.keep_last, fallback=a.fallback,
                         progress=not a.no_progress)
    else:
        data_dir = None if a.data_dir is None else str(Path(a.data_dir).resolve())  # resumable from anywhere
        dataset = load_dataset(a.data, split="train", image_size=a.image_size, channels=a.channels,
                               data_dir=data_dir)
        overrides = {k: v for k, v in (("hidden_size", a.hidden_size), ("depth", a.depth),
                                       ("num_heads", a.num_heads)) if v is not None}
        model_cfg = model_config(
            a.model, input_size=dataset.image_size, in_channels=dataset.channels,
            num_classes=dataset.num_classes, learn_sigma=not a.no_learn_sigma,
            class_dropout_prob=a.class_dropout_prob, pre_depth=a.pre_depth, post_depth=a.post_depth,
            pre_post_timestep_conditioning=a.pre_post_timestep_conditioning, **overrides)
        train_cfg = TrainConfig(
            data=a.data, out_dir=out, steps=a.steps or _T["steps"], batch_size=a.batch_size, lr=a.lr,
            weight_decay=a.weight_decay, warmup_steps=a.warmup_steps, lr_schedule=a.lr_schedule,
            data_dir=data_dir, grad_clip=a.grad_clip, ema_decay=a.ema_decay, fp_mode=a.fp_mode,
            fp_max_no_grad=a.fp_max_no_grad, fp_max_with_grad=a.fp_max_with_grad, seed=a.seed,
            log_every=a.log_every,
            ckpt_every=a.ckpt_every, keep_every=a.keep_every, device=a.device or _T["device"],
            keep_last=_T["keep_last"] if a.keep_last is None else a.keep_last,
            grad_checkpoint=a.grad_checkpoint,
            precision=a.precision, compile=a.compile)
        diffusion_cfg = DiffusionConfig(schedule=a.schedule, num_timesteps=a.num_timesteps,
                                        prediction=a.prediction, zero_terminal_snr=a.zero_terminal_snr)
        summary = train(train_cfg, model_cfg, diffusion_cfg, dataset=dataset, progress=not a.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the first process reports
        if summary["steps_this_run"] == 0 and (Path(out) / "summary.json").exists():
            return 0  # nothing ran ("nothing to do" was said): keep the summary of the run that did
        write_summary(out, summary)
        print("\n".join(train_summary_lines(summary, out)))
    return 130 if summary["interrupted"] else 0


def _train_defaults() -> dict:
    """`fpdm train`'s option defaults, to tell options given on the command line from the rest."""
    return vars(build_parser().parse_args(["train"]))


def _apply_preset(a: argparse.Namespace, path: str) -> None:
    """Fill the options not given on the command line from a JSON preset."""
    from fpdm.config import read_preset

    defaults = _train_defaults()
    allowed = {k: v for k, v in defaults.items() if k not in ("config", "resume", "func", "command")}
    for key, value in read_preset(path, allowed).items():
        if getattr(a, key) == defaults[key]:  # not given on the command line
            setattr(a, key, value)


def _check_resume_flags(a: argparse.Namespace, out: str) -> None:
    """--resume continues a run with its own settings: a flag given with another value is an error."""
    from fpdm.training.loop import check_resume_settings

    defaults = _train_defaults()
    check_resume_settings(out, {k: v for k, v in vars(a).items() if k in defaults and v != defaults[k]},
                          fallback=a.fallback)


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


def _cmd_sample(a: argparse.Namespace) -> int:
    from fpdm.data.latents import training_vae
    from fpdm.evaluation.evaluate import digits_eval, small_sample_warning
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import (
        count_parts,
        discard_empty_parts,
        grid_caption,
        parts_folder,
        remove_parts,
        summary_lines,
        write_record,
        write_samples,
    )
    from fpdm.weights.loading import load_model

    model, diffusion, ckpt = load_model(a.ckpt, use_ema=not a.no_ema, **_official_kw(a))
    vae_path = a.vae or training_vae(ckpt)
    world = init_world(a.device)  # several processes under torchrun: batches are shared out
    a.device = local_device(a.device, world)
    model.to(a.device)
    prefix = Path(a.out) if a.out else Path(a.ckpt).parent / "samples" / _sample_tag(a)
    _writable_folder(prefix.parent, f"--out {prefix}")  # before sampling, not after it
    for flag, value in (("--nrow", a.nrow), ("--upscale", a.upscale)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    identity = _sample_identity(a)
    _refuse_other_results(Path(f"{prefix}.json"), identity, a.overwrite)
    if a.eval and (warning := small_sample_warning(len(parse_seeds(a.seeds)))) is not None:
        print(f"fpdm sample: warning: {warning}", file=sys.stderr)
    parts = parts_folder(prefix)
    try:
        run = _sample_seeds(a, model, diffusion, a.iters, parts=parts, world=world)
        if run is None:  # another process writes the outputs
            return 0
    except KeyboardInterrupt:
        discard_empty_parts(parts)  # an empty folder would only block a later run with other settings
        kept = f"{count_parts(parts)} finished batch(es) kept in {parts}: run the same command again to " \
            "resume" if parts.exists() else "no batch had finished"
        print(f"fpdm sample: interrupted; {kept}", file=sys.stderr)
        return 130
    except BaseException:
        discard_empty_parts(parts)
        raise
    x, record = run.samples, run.record
    latents = None
    if vae_path:
        from fpdm.data.latents import decode, load_vae

        latents, x = x, decode(load_vae(vae_path, a.device), x)  # (N, 3, H, W) in [-1, 1]
        record["vae"] = vae_path
    name = Path(a.ckpt).name if Path(a.ckpt).name != "ckpt.pt" else Path(a.ckpt).parent.name
    png, npz = write_samples(prefix, x, run.labels, run.seeds, latents=latents, nrow=a.nrow,
                             upscale=a.upscale, caption=grid_caption(record, name),
                             show_labels=model.config.num_classes > 0)
    record.update(ckpt=a.ckpt, train_step=ckpt.get("step"), ema=not a.no_ema, png=str(png), npz=str(npz),
                  identity=identity)
    if a.adm_npz:
        from fpdm.evaluation.inception import export_adm_npz

        record["adm_npz"] = str(export_adm_npz(x, Path(f"{prefix}.adm.npz")))
    if a.eval:
        metrics = digits_eval(x, run.labels, model.config)
        if not metrics:
            raise ValueError("--eval computes digits metrics, but this model does not make 8×8 greyscale "
                             "digits; use `fpdm eval --inception-weights` on the .npz")
        record["eval"] = metrics
    write_record(prefix, record)
    remove_parts(parts)  # everything is in the .npz now
    print("\n".join(summary_lines(record, prefix)))
    return 0


def _writable_folder(folder: Path, flag: str) -> None:
    """Fail early, naming the flag and the obstacle, when `folder` cannot be created or written; creates
    nothing."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"{flag}: cannot write in {parent}")
            return


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


def _cmd_budget_table(a: argparse.Namespace) -> int:
    from fpdm.sampling.budget import feasible_pairs, forward_flops

    if a.ckpt:
        from fpdm.weights.loading import load_model

        cfg = load_model(a.ckpt)[0].config
    else:
        cfg = model_config(a.model, input_size=a.input_size, in_channels=a.in_channels)
    pairs = feasible_pairs(cfg, a.budget, a.max_iters)
    if not pairs:
        raise ValueError(f"no constant setting spends budget {a.budget} exactly for this {cfg.arch}; use "
                         f"`fpdm sample --budget {a.budget} --steps S` to spread iterations unevenly")
    print(f"budget {a.budget} blocks per sample ({cfg.arch}, width {cfg.hidden_size}, "
          f"input {cfg.input_size})")
    print(f"{'iters/step':>10} {'steps':>6} {'blocks/step':>11} {'GFLOPs/sample':>14}")
    for k, n in pairs:
        per = forward_flops(cfg, k)
        print(f"{k if cfg.arch == 'fpdm' else '-':>10} {n:>6} {a.budget // n:>11} {n * per / 1e9:>14.3f}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from fpdm.evaluation.evaluate import (
        as_digits,
        check_digit_labels,
        digits_metrics,
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
        x = as_digits(x)
        check_digit_labels(labels, a.samples)
        if (warning := small_sample_warning(len(x))) is not None:
            print(f"fpdm eval: warning: {warning}", file=sys.stderr)
        result = digits_metrics(x, labels, reference=a.ref, kid_subset_size=a.kid_subset_size)
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


def _cmd_train_features(a: argparse.Namespace) -> int:
    from fpdm.evaluation.digits_features import FeatureTrainConfig, save_feature_net, train_digits_net

    cfg = FeatureTrainConfig(epochs=a.epochs, seed=a.seed)
    net, acc = train_digits_net(cfg, progress=not a.no_progress)
    if acc < 0.97:
        print(f"warning: held-out accuracy {acc:.4f} is below 0.97", file=sys.stderr)
    save_feature_net(net, acc, cfg, a.out)
    print(json.dumps({"out": a.out, "test_accuracy": acc}))
    return 0


def _cmd_plot_residuals(a: argparse.Namespace) -> int:
    from fpdm.common.plots import plot_residuals

    path = Path(a.record)
    if not path.exists():
        raise FileNotFoundError(f"no record at {path}")
    out = Path(a.out) if a.out else path.with_suffix(".residuals.png")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a sample record (the .json that fpdm sample writes)") from None
    plot_residuals(record, out)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fpdm", formatter_class=_Formatter,
                                description="Fixed Point Diffusion Models. Models: " + ", ".join(MODEL_NAMES))
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_sweep(sub)
    _add_calibrate(sub)
    _add_serve(sub)
    _add_budget_table(sub)
    _add_plot_residuals(sub)
    _add_eval(sub)
    _add_train_features(sub)
    _add_reproduce(sub)
    _add_export(sub)
    _add_import(sub)
    _add_build_weights(sub)
    _add_extract_latents(sub)
    return p


def _check_device(spec: str) -> None:
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r} is not a device; expected cpu, cuda, cuda:1, mps, …") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0) < 0:
        print(f"fpdm {args.command}: error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    limit = 4 * (os.cpu_count() or 1)
    if getattr(args, "threads", 0) > limit:  # torch can crash outright on absurd thread counts
        print(f"fpdm {args.command}: error: --threads {args.threads} is more than {limit} (4 × this "
              f"machine's {os.cpu_count()} cores)", file=sys.stderr)
        return 2
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    try:
        if getattr(args, "device", None):
            _check_device(args.device)
        return args.func(args)
    except (ValueError, OSError, FloatingPointError, ImportError, FolderInUse) as e:  # OSError: unwritable…
        print(f"fpdm {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():  # under torchrun
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
