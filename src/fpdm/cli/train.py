"""`fpdm train`: a new run or `--resume`, with presets (`--config`)."""

from __future__ import annotations

import argparse
import sys

from fpdm.cli.common import _D, _T, _add_threads, _Formatter
from fpdm.config import LR_SCHEDULES, PRECISIONS
from fpdm.diffusion.schedules import BETA_SCHEDULES
from fpdm.fixed_point.solvers import GRADIENT_MODES

# (option, type or choices, help) of the training options whose default is TrainConfig's
_OPTIMISATION = (
    ("batch_size", int, "images per step"),
    ("lr", float, "AdamW learning rate"),
    ("weight_decay", float, "AdamW weight decay"),
    ("warmup_steps", int, "linear LR warm-up"),
    ("lr_schedule", LR_SCHEDULES, "after warm-up: constant (DiT), or cosine decay to 0 at --steps (fixed "
                                  "when the run starts)"),
    ("grad_clip", float, "max grad norm (0 = off)"),
    ("ema_decay", float, "EMA decay per step"),
    ("fp_mode", GRADIENT_MODES, "FPDM fixed-point gradient: S-JFB, 1-step JFB, multi-step JFB, full "
                                "backprop"),
    ("fp_max_no_grad", int, "N: n ~ U{0..N} iterations without gradient"),
    ("fp_max_with_grad", int, "M: m ~ U{1..M} iterations with gradient (multistep: exactly M)"),
    ("seed", int, "seeds init, data order, noise, plans"),
    ("log_every", int, "steps per JSONL log record"),
    ("ckpt_every", int, "steps between checkpoints"),
    ("keep_every", int, "also keep ckpt-<step>.pt every this many steps, for quality-vs-step curves (0: only "
                        "the latest ckpt.pt)"),
)


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
    g.add_argument("--init-from", default=None, help="fine-tune: start from these weights (a checkpoint's "
                   "EMA, an export, an official file or a built-in name) with a fresh optimizer; the model "
                   "options must describe their architecture (default: random initialisation)")
    g.add_argument("--hflip", action="store_true", help="mirror each training image left-right with "
                   "probability 1/2 (image folders; not latents, nor digits' or fashion's asymmetric shapes "
                   "unless you mean it)")
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
    for name, kind, text in _OPTIMISATION:  # each defaults to TrainConfig's value
        kw = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        g.add_argument("--" + name.replace("_", "-"), default=_T[name], help=text, **kw)
    g.add_argument("--grad-accum", type=int, default=None, help="split each step's batch into this many "
                   "micro-batches and add their gradients: the same step (data, noise, plans) in less memory,"
                   f" equal up to float rounding (default: {_T['grad_accum']}; with --resume, the run's own)")
    g.add_argument("--ckpt-seconds", type=float, default=None, help="also a checkpoint once this many "
                   "seconds have passed since the last, so `kill -9` loses at most about that much work "
                   f"(0: by --ckpt-every only) (default: {_T['ckpt_seconds']:g}; with --resume, the run's "
                   "own)")
    g.add_argument("--keep-last", type=int, default=None,
                   help=f"earlier checkpoints kept as ckpt.prev1.pt, … so a damaged latest one does not lose "
                        f"the run (default: {_T['keep_last']}; with --resume, the run's own)")
    g = p.add_argument_group("samples during training (the weights do not depend on them; --resume may "
                             "change them)")
    g.add_argument("--sample-every", type=int, default=None, help="every this many steps, sample the EMA "
                   "weights on fixed seeds: a grid in <out>/samples/, and FID + class consistency where the "
                   "data has a feature network (digits, fashion-mnist), in log.jsonl and <out>/training_curve"
                   f".png (default: {_T['sample_every']}, off; with --resume, the run's own)")
    g.add_argument("--sample-count", type=int, default=None, help="samples each time, seeds 0..count-1 "
                   f"(default: {_T['sample_count']}; with --resume, the run's own)")
    g.add_argument("--sample-steps", type=int, default=None, help="DDPM steps of those samples, FPDM at its "
                   f"default iterations (default: {_T['sample_steps']}; with --resume, the run's own)")
    g.add_argument("--tensorboard", action="store_true", help="also write the log's figures and the sample "
                   "grids as TensorBoard events in <out>/tb/ (needs the [tb] extra: pip install 'fpdm[tb]'; "
                   "with --resume, on if the run had it)")
    g = p.add_argument_group("run")
    g.add_argument("--device", default=None, help=f"cpu, cuda, cuda:1, … (default: {_T['device']}; with "
                   "--resume, the run's own)")
    g.add_argument("--grad-checkpoint", action="store_true", help="recompute activations of every block "
                   "and with-gradient fixed-point iteration in backward (less memory, ~1 more forward)")
    g.add_argument("--precision", choices=PRECISIONS, default=_T["precision"],
                   help="bf16: forward under bfloat16 autocast (weights, optimizer and EMA stay fp32)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile each transformer block: for GPUs (the first steps are slow); on CPU "
                        "a training step at 64 tokens measured 0.98x the eager time, no real gain")
    g.add_argument("--no-memory-check", action="store_true", help="skip the check, before the run starts, "
                   "that a step fits in the memory available (measured on a micro-batch of 1 and 2; it "
                   "refuses only what cannot fit)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(its configs are used; --steps may extend it)")
    g.add_argument("--overwrite", action="store_true", help="start a new run in a folder whose log.jsonl is "
                   "left from a run killed before its first checkpoint (refused by default)")
    g.add_argument("--fallback", action="store_true", help="with --resume: if ckpt.pt is damaged, continue "
                   "from the newest intact ckpt.prevN.pt (without it, the damage is an error that names it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(g)
    p.set_defaults(func=_cmd_train)


def _cmd_train(a: argparse.Namespace) -> int:
    from fpdm.training.request import TrainRequest, train_from_request, with_preset
    from fpdm.training.run_folder import train_summary_lines
    from fpdm.weights.loading import init_weights

    r = TrainRequest.from_options(a)
    if a.config:
        r = with_preset(r, a.config)
    init = init_weights(r.init_from) if r.init_from and not r.resume else None
    summary, report = train_from_request(r, say=lambda m: print(m, file=sys.stderr), init_weights=init)
    if report:
        print("\n".join(train_summary_lines(summary, r.out_dir())))
    return 130 if summary["interrupted"] else 0
