"""`fpdm` command line: `fpdm train`, `fpdm sample`. Every option's default is shown by --help."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .config import DiffusionConfig, TrainConfig
from .fixed_point import GRADIENT_MODES
from .registry import MODEL_NAMES, model_config
from .schedules import BETA_SCHEDULES

_T = {f.name: f.default for f in fields(TrainConfig)}
_D = {f.name: f.default for f in fields(DiffusionConfig)}


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
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=_T["data"], help="'digits' (built in) or an image folder "
                   "(class = sub-folder, or unconditional when images lie directly in it)")
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
    g.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, … (default: {_T['device']}; with "
                   "--resume, the run's own)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(its configs are used; --steps may extend it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(g)
    p.set_defaults(func=_cmd_train)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", formatter_class=_Formatter, help="draw samples from a checkpoint",
                       description="Sample from a training checkpoint (architecture read from it). Writes a "
                                   "PNG grid, the samples as .npz and the settings as .json.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `fpdm train` (…/ckpt.pt)")
    p.add_argument("--steps", default="50",
                   help="sampling timesteps: an int, ADM sections '10,20', or 'ddimN'")
    p.add_argument("--iters", type=int, default=None,
                   help="FPDM fixed-point iterations per step (default: depth - pre - post)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm", help="ancestral or DDIM steps")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--num", type=int, default=100, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED+i (batch-independent)")
    p.add_argument("--label", type=int, default=None,
                   help="class of every sample (default: cycle through the classes)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per forward batch")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--out", default=None, help="output prefix (default: <ckpt dir>/samples/<settings>)")
    p.add_argument("--nrow", type=int, default=10, help="grid columns")
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour enlargement of the grid")
    p.add_argument("--device", default="cpu", help="cpu, cuda, …")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(p)
    p.set_defaults(func=_cmd_sample)


def _cmd_train(a: argparse.Namespace) -> int:
    from .data import load_dataset
    from .train import resume, train

    out = a.out or str(Path("runs") / f"{Path(a.data).name}-{a.model.replace('/', '').lower()}")
    if a.resume:  # everything but --steps/--device comes from the checkpoint
        summary = resume(out, steps=a.steps, device=a.device, progress=not a.no_progress)
    else:
        dataset = load_dataset(a.data, split="train", image_size=a.image_size, channels=a.channels)
        overrides = {k: v for k, v in (("hidden_size", a.hidden_size), ("depth", a.depth),
                                       ("num_heads", a.num_heads)) if v is not None}
        model_cfg = model_config(
            a.model, input_size=dataset.image_size, in_channels=dataset.channels,
            num_classes=dataset.num_classes, learn_sigma=not a.no_learn_sigma,
            class_dropout_prob=a.class_dropout_prob, pre_depth=a.pre_depth, post_depth=a.post_depth,
            pre_post_timestep_conditioning=a.pre_post_timestep_conditioning, **overrides)
        train_cfg = TrainConfig(
            data=a.data, out_dir=out, steps=a.steps or _T["steps"], batch_size=a.batch_size, lr=a.lr,
            weight_decay=a.weight_decay, warmup_steps=a.warmup_steps, grad_clip=a.grad_clip,
            ema_decay=a.ema_decay, fp_mode=a.fp_mode, fp_max_no_grad=a.fp_max_no_grad,
            fp_max_with_grad=a.fp_max_with_grad, seed=a.seed, log_every=a.log_every,
            ckpt_every=a.ckpt_every, device=a.device or _T["device"])
        diffusion_cfg = DiffusionConfig(schedule=a.schedule, num_timesteps=a.num_timesteps,
                                        prediction=a.prediction, zero_terminal_snr=a.zero_terminal_snr)
        summary = train(train_cfg, model_cfg, diffusion_cfg, dataset=dataset, progress=not a.no_progress)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


def _cmd_sample(a: argparse.Namespace) -> int:
    from .images import save_image_grid
    from .sample import load_model, sample

    if a.num < 1 or a.batch_size < 1:
        raise ValueError(f"--num and --batch-size must be >= 1, got {a.num} and {a.batch_size}")
    model, diffusion, ckpt = load_model(a.ckpt, use_ema=not a.no_ema)
    model.to(a.device)
    n_cls = model.config.num_classes
    if a.label is not None and not 0 <= a.label < max(n_cls, 1):
        raise ValueError(f"--label {a.label} is out of range: the model has {n_cls} classes")
    seeds = list(range(a.seed, a.seed + a.num))
    if n_cls == 0:
        labels = torch.zeros(a.num, dtype=torch.long)
    elif a.label is not None:
        labels = torch.full((a.num,), a.label, dtype=torch.long)
    else:
        labels = torch.arange(a.num) % n_cls
    steps = int(a.steps) if a.steps.isdigit() else a.steps
    chunks = []
    for lo in range(0, a.num, a.batch_size):
        chunks.append(sample(model, diffusion, labels[lo:lo + a.batch_size], seeds[lo:lo + a.batch_size],
                             steps=steps, iters=a.iters, sampler=a.sampler, eta=a.eta, device=a.device,
                             progress=not a.no_progress))
    x = torch.cat(chunks)
    iters_tag = f"-k{a.iters}" if a.iters is not None else ""
    prefix = Path(a.out) if a.out else (Path(a.ckpt).parent / "samples" /
                                        f"{a.sampler}-s{a.steps}{iters_tag}-seed{a.seed}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(x, prefix.with_suffix(".png"), nrow=a.nrow, upscale=a.upscale)
    np.savez_compressed(prefix.with_suffix(".npz"), samples=x.numpy(), labels=labels.numpy(),
                        seeds=np.array(seeds))
    info = {"ckpt": a.ckpt, "step": ckpt.get("step"), "steps": a.steps, "iters": a.iters,
            "block_evals_per_step": model.block_evals(a.iters), "sampler": a.sampler, "eta": a.eta,
            "seeds": [seeds[0], seeds[-1]], "ema": not a.no_ema, "png": str(prefix.with_suffix(".png")),
            "npz": str(prefix.with_suffix(".npz"))}
    prefix.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpdm", formatter_class=_Formatter,
                                description="Fixed Point Diffusion Models. Models: " + ", ".join(MODEL_NAMES))
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FloatingPointError) as e:
        print(f"fpdm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
