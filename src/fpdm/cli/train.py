"""`fpdm train`: a new run or `--resume`, with presets (`--config`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fpdm.cli.common import _D, _T, _add_threads, _Formatter, _Parser
from fpdm.config import LR_SCHEDULES, PRECISIONS, DiffusionConfig, TrainConfig
from fpdm.diffusion.schedules import BETA_SCHEDULES
from fpdm.fixed_point.solvers import GRADIENT_MODES
from fpdm.models.registry import model_config


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
    p = _Parser(prog="fpdm")
    _add_train(p.add_subparsers(dest="command"))
    return vars(p.parse_args(["train"]))


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
