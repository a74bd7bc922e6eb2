"""Training loop: DiT or FPDM (S-JFB and its ablations) with AdamW, warm-up, clipping, EMA, exact resume.

A checkpoint holds the three configs, model, EMA, optimizer, step, the batch stream's position and every
random state, so `--resume` continues bit-exactly and `fpdm sample --ckpt` needs no architecture flags.
SIGINT/SIGTERM finish the current step, write a checkpoint and stop: an interruption loses nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fpdm.common.checkpoint import (
    atomic_write,
    capture_rng_state,
    generator_state,
    restore_rng_state,
    save_checkpoint,
    set_generator_state,
)
from fpdm.common.distributed import init_world, local_device
from fpdm.common.lock import hold
from fpdm.config import DiffusionConfig, ModelConfig, TrainConfig
from fpdm.data.datasets import ImageDataset, load_dataset
from fpdm.diffusion.gaussian import make_diffusion
from fpdm.fixed_point.solvers import GRADIENT_MODES, draw_plan
from fpdm.models.blocks import compile_blocks
from fpdm.models.registry import build_model
from fpdm.training.batches import BatchStream
from fpdm.training.ema import ema_decay_at, make_ema, update_ema
from fpdm.training.monitor import CURVE_NAME, plot_training_curve, sample_record
from fpdm.training.run_folder import (
    CHECKPOINT_NAME,
    LOG_NAME,
    _hold_latest,
    _keep_previous,
    _truncate_log,
    _write_bytes,
    peak_rss_mib,
    resume_point,
    snapshot_path,
)
from fpdm.training.step import backward, check_memory, draw_batch
from fpdm.training.tensorboard import TensorBoardLog, require_tensorboard
from fpdm.version import __version__, command_line


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup_steps, then constant (as DiT) or a half cosine that
    reaches 0 at cfg.lr_decay_steps (cfg.steps when that is 0)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        horizon = cfg.lr_decay_steps or cfg.steps
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr


@contextmanager
def _stop_on_signal() -> Iterator[dict[str, bool]]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a step is never left half-done."""
    flag = {"stop": False}

    def handler(signum, frame):  # noqa: ARG001
        if flag["stop"]:  # a second signal: the user really wants out now
            raise KeyboardInterrupt
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(train_cfg: TrainConfig, model_cfg: ModelConfig, diffusion_cfg: DiffusionConfig | None = None, *,
          dataset: ImageDataset | None = None, progress: bool = True, overwrite: bool = False,
          init_weights: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Start a new run in `train_cfg.out_dir` and return its summary. A folder with a checkpoint is refused
    (resume it, or choose another); one that holds only the log of a run killed before its first checkpoint
    is refused too, unless `overwrite` (that log is then started afresh: two runs never share one)."""
    ckpt_path = Path(train_cfg.out_dir) / CHECKPOINT_NAME
    if ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                              f"--out directory")
    log = Path(train_cfg.out_dir) / LOG_NAME
    if log.exists() and log.stat().st_size:
        if not overwrite:
            raise FileExistsError(f"{log} holds the log of a run that left no checkpoint (stopped before "
                                  "its first): pass --overwrite to start a new run there, or choose another "
                                  "--out")
        log.unlink()
    if train_cfg.lr_schedule == "cosine" and not train_cfg.lr_decay_steps:  # the horizon is fixed at start
        train_cfg = replace(train_cfg, lr_decay_steps=train_cfg.steps)
    return _run(train_cfg, model_cfg, diffusion_cfg or DiffusionConfig(), None, dataset, progress,
                init_weights)


def resume(out_dir: str | Path, *, steps: int | None = None, device: str | None = None,
           keep_last: int | None = None, fallback: bool = False, dataset: ImageDataset | None = None,
           data: str | None = None, data_dir: str | None = None, progress: bool = True,
           **sampling: int | None) -> dict[str, Any]:
    """Continue the run in `out_dir` from its checkpoint, with its own configs. `steps` extends (or
    shortens) the run's total; `device` moves it (e.g. a GPU run finished on CPU); `keep_last` changes how
    many earlier checkpoints are kept; `sample_every`, `sample_count`, `sample_steps`, `ckpt_seconds`,
    `grad_accum`, `memory_check` and `tensorboard` (keywords; None: the run's own) change what is written
    along the way and how a step is computed, which the weights do not depend on (`grad_accum`: up to
    rounding); `data` / `data_dir` give the run's data where it lies now (a moved folder: absolute paths,
    accepted when its digest is the run's); `fallback`
    resumes from the newest intact earlier checkpoint when `ckpt.pt` is damaged (see :func:`resume_point`)."""
    unknown = set(sampling) - set(RESUME_FREE)
    if unknown:
        raise TypeError(f"resume() got unexpected keyword arguments {sorted(unknown)}")
    start, state = resume_point(out_dir, fallback)
    damage = state.pop("_fallback_from", None)
    if damage is not None:
        print(f"resuming from {start} (step {state.get('step')}): {damage}", file=sys.stderr)
        ckpt_path = Path(out_dir) / CHECKPOINT_NAME
        if ckpt_path.exists():  # set aside, so the next checkpoint does not shift it into ckpt.prev1.pt
            os.replace(ckpt_path, Path(out_dir) / f"{CHECKPOINT_NAME}.damaged")
    saved = TrainConfig.from_dict(state["train_config"])
    if steps is not None and saved.lr_schedule == "cosine" and steps > saved.lr_decay_steps:
        raise ValueError(f"--steps {steps}: the run's cosine learning rate reaches 0 at step "
                         f"{saved.lr_decay_steps}; steps beyond it would train at lr 0 (start a run with "
                         "--init-from, or a longer --steps, instead)")
    moved = {k: v for k, v in (("data", data), ("data_dir", data_dir))
             if v is not None and v != getattr(saved, k)}
    if moved and "data_digest" not in state:
        raise ValueError(f"the run in {out_dir} was started before runs kept a digest of their data, so its "
                         "data cannot be recognised elsewhere: put it back at "
                         f"{saved.data_dir or saved.data}")
    train_cfg = replace(saved, **moved, out_dir=str(out_dir), steps=saved.steps if steps is None else steps,
                        device=saved.device if device is None else device,
                        keep_last=saved.keep_last if keep_last is None else keep_last,
                        **{k: v for k, v in sampling.items() if v is not None})
    return _run(train_cfg, ModelConfig.from_dict(state["model_config"]),
                DiffusionConfig.from_dict(state["diffusion_config"]), state, dataset, progress)


# what --resume may change beside --steps, --device and --keep-last: the weights do not depend on them
# (--grad-accum: up to float rounding; it lets a run move to a device with less memory)
RESUME_FREE = ("sample_every", "sample_count", "sample_steps", "ckpt_seconds", "grad_accum", "memory_check",
               "tensorboard")
def _load_init(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str | None) -> None:
    mine = model.state_dict()
    missing = [k for k in mine if k not in weights]
    bad = [k for k in mine if k in weights and weights[k].shape != mine[k].shape]
    if missing or bad:
        what = (f"{bad[0]} is {tuple(weights[bad[0]].shape)}, this model's {tuple(mine[bad[0]].shape)}"
                if bad else f"{len(missing)} tensors are missing, e.g. {missing[0]}")
        raise ValueError(f"--init-from {source}: its weights do not fit this model ({what}); give the "
                         "--model and size options of the run they come from")
    model.load_state_dict({k: weights[k].float() for k in mine}, strict=True)


def _short(names: list[str] | tuple[str, ...], n: int = 4) -> str:
    names = list(names)
    return "[" + ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "") + "]"


def _run(train_cfg: TrainConfig, model_cfg: ModelConfig, diffusion_cfg: DiffusionConfig,
         state: dict[str, Any] | None, dataset: ImageDataset | None, progress: bool,
         init_weights: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    out = Path(train_cfg.out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if train_cfg.fp_mode not in GRADIENT_MODES:
        raise ValueError(f"--fp-mode must be one of {GRADIENT_MODES}, got {train_cfg.fp_mode!r}")
    if dataset is None:
        dataset = load_dataset(train_cfg.data, split="train", image_size=model_cfg.input_size,
                               channels=model_cfg.in_channels, data_dir=train_cfg.data_dir)
    if (dataset.image_size, dataset.channels) != (model_cfg.input_size, model_cfg.in_channels):
        raise ValueError(f"data {train_cfg.data!r} has {dataset.channels}×{dataset.image_size}² images but "
                         f"the model expects {model_cfg.in_channels}×{model_cfg.input_size}²")
    if dataset.num_classes > model_cfg.num_classes:
        raise ValueError(f"data has {dataset.num_classes} classes, the model only {model_cfg.num_classes}")

    world = init_world(train_cfg.device)
    local = world.shard(train_cfg.batch_size)  # this process's rows of every global batch
    device = torch.device(local_device(train_cfg.device, world))
    torch.manual_seed(train_cfg.seed)  # label dropout draws from the global RNG
    model = build_model(model_cfg).to(device)
    if init_weights is not None:  # --init-from: these weights (and EMA), a fresh optimizer
        _load_init(model, init_weights, train_cfg.init_from)
    ema = make_ema(model)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    diffusion = make_diffusion(diffusion_cfg, model_cfg.learn_sigma)
    gen = torch.Generator().manual_seed(train_cfg.seed + 1)  # timesteps, noise, fixed-point plans
    batches = BatchStream(len(dataset), train_cfg.batch_size, train_cfg.seed + 2)
    is_fpdm = model_cfg.arch == "fpdm"
    if train_cfg.grad_accum > local.stop - local.start:
        raise ValueError(f"--grad-accum {train_cfg.grad_accum} exceeds the {local.stop - local.start} images "
                         "each process has per step (--batch-size / processes): at most one micro-batch each")
    if train_cfg.tensorboard and world.is_main:
        require_tensorboard()
    model.train()
    if train_cfg.memory_check:  # before any file is written: a step that cannot fit is refused
        check_memory(model, diffusion, model_cfg, train_cfg, device, local.stop - local.start)
    if train_cfg.compile:
        compile_blocks(model)
    # DDP averages gradients over processes; weights, EMA and checkpoints stay the plain model's
    net = model if world.size == 1 else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)

    data_digest = dataset.digest()  # kept in checkpoints: a moved folder is recognised by it
    step = 0
    if state is not None:
        if state.get("num_images", len(dataset)) != len(dataset):
            raise ValueError(f"data {train_cfg.data!r} now has {len(dataset)} training images, the run was "
                             f"started with {state['num_images']}: its data order cannot be resumed")
        saved_classes = state.get("class_names", list(dataset.class_names))
        if saved_classes != list(dataset.class_names):
            raise ValueError(f"data {train_cfg.data!r} now has classes {_short(dataset.class_names)}, the "
                             f"run was started with {_short(saved_classes)}: its labels would change meaning")
        if state.get("data_digest", data_digest) != data_digest:
            raise ValueError(f"data {train_cfg.data!r} is not the data the run was started with (same count "
                             "and classes, other images or labels: its digest differs)")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        set_generator_state(gen, state["generator"])
        batches.load_state_dict(state["batches"])
        restore_rng_state(state["rng"])
        if world.is_main:
            _truncate_log(out / LOG_NAME, step)

    last_ckpt = [time.perf_counter()]  # when the last checkpoint was written (`--ckpt-seconds`)

    def checkpoint() -> None:
        last_ckpt[0] = time.perf_counter()
        if not world.is_main:
            return
        held = _hold_latest(out, train_cfg.keep_last)
        try:
            _save()
        except BaseException:
            if held is not None:
                held.unlink(missing_ok=True)
            raise
        _keep_previous(out, held, train_cfg.keep_last)

    def _save() -> None:
        save_checkpoint(ckpt_path, {
            "fpdm_version": __version__,
            "torch_version": str(torch.__version__),
            "command": command_line(),
            "model_config": model_cfg.to_dict(),
            "train_config": train_cfg.to_dict(),
            "diffusion_config": diffusion_cfg.to_dict(),
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "generator": generator_state(gen),
            "batches": batches.state_dict(),
            "num_images": len(dataset),
            "data_digest": data_digest,
            "class_names": list(dataset.class_names),
            "rng": capture_rng_state(),
        })

    out.mkdir(parents=True, exist_ok=True)
    with hold(out, "fpdm train", enabled=world.is_main):  # one process per run folder
        for stale in [*out.glob(f".{CHECKPOINT_NAME}.*.tmp"), *out.glob(f"{CHECKPOINT_NAME}.held")] \
                if world.is_main else ():
            stale.unlink()  # a checkpoint write that a crash cut short
        world.barrier()
        if step >= train_cfg.steps and world.is_main:
            print(f"nothing to do: the run in {out} is at step {step} and --steps is {train_cfg.steps}",
                  file=sys.stderr)
        model.train()
        acc: dict[str, torch.Tensor | float] = {}
        n_acc = 0
        t_start = time.perf_counter()
        t_interval = t_start
        steps_run = 0
        interrupted = False
        bar = tqdm(total=train_cfg.steps, initial=step, desc=f"train {model_cfg.arch}",
                   disable=not (progress and world.is_main), dynamic_ncols=True)
        log_path = out / LOG_NAME if world.is_main else Path(os.devnull)
        tb = TensorBoardLog(out, train_cfg.tensorboard and world.is_main, step)
        with _stop_on_signal() as flag, open(log_path, "a") as log, tb:
            while step < train_cfg.steps:
                # every process draws the whole global batch (same generators), then keeps its rows
                batch = draw_batch(batches, dataset, model_cfg, diffusion.num_timesteps, gen, train_cfg.hflip)
                x0, y, t, noise = (v[local].to(device) for v in batch)  # (B/N, ...)
                kw: dict[str, Any] = {"grad_checkpoint": train_cfg.grad_checkpoint}
                if is_fpdm:
                    plan = draw_plan(train_cfg.fp_mode, train_cfg.fp_max_no_grad, train_cfg.fp_max_with_grad,
                                     gen)
                    kw["iters"] = plan
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, train_cfg)
                opt.zero_grad(set_to_none=True)
                loss, terms = backward(net, diffusion, x0, y, t, noise, kw, train_cfg.grad_accum,
                                       bf16=train_cfg.precision == "bf16")
                if world.any(not torch.isfinite(loss)):  # every process stops at the same step
                    checkpoint()
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; last good state saved "
                                             f"to {ckpt_path} — try a lower --lr or --grad-clip")
                max_norm = train_cfg.grad_clip if train_cfg.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not torch.isfinite(grad_norm):  # before the update: weights and optimizer are still good
                    checkpoint()
                    raise FloatingPointError(f"gradient norm is {grad_norm.item()} at step {step} (loss "
                                             f"{loss.item():.4g}); last good state saved to {ckpt_path} — "
                                             "try a lower --lr or --grad-clip")
                opt.step()
                update_ema(ema, model, ema_decay_at(step, train_cfg))
                step += 1
                steps_run += 1

                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v  # stays on device: no sync per step
                acc["grad_norm"] = acc.get("grad_norm", 0.0) + grad_norm
                if is_fpdm:
                    acc["iters"] = acc.get("iters", 0.0) + plan.total
                n_acc += 1
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    if world.size > 1:
                        acc = {k: world.all_mean(torch.as_tensor(v)) if k not in ("iters", "grad_norm") else v
                               for k, v in acc.items()}
                        if is_fpdm and len(set(world.all_gather_int(round(float(acc["iters"]))))) > 1:
                            raise RuntimeError(f"processes drew different fixed-point plans by step {step}")
                    now = time.perf_counter()
                    rec = {"step": step, **{k: float(v) / n_acc for k, v in acc.items()},
                           "lr": lr_at(step - 1, train_cfg), "ms_per_step": 1000 * (now - t_interval) / n_acc}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    tb.record(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", ms=f"{rec['ms_per_step']:.0f}")
                    acc, n_acc, t_interval = {}, 0, now
                bar.update(1)
                if train_cfg.sample_every and step % train_cfg.sample_every == 0 and world.is_main:
                    # before the checkpoint: a kill during sampling resumes from before this step, and
                    # samples it again
                    rec = sample_record(ema, diffusion, train_cfg, step, out, device)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    tb.record(rec)
                    plot_training_curve(out / LOG_NAME, out / CURVE_NAME)
                stop = world.any(flag["stop"])  # a signal to any process stops all at the same step
                keep = train_cfg.keep_every and step % train_cfg.keep_every == 0
                due = train_cfg.ckpt_seconds and time.perf_counter() - last_ckpt[0] >= train_cfg.ckpt_seconds
                due = world.any(due) if world.size > 1 else due  # every process checkpoints at one step
                if stop or keep or due or step % train_cfg.ckpt_every == 0 or step == train_cfg.steps:
                    checkpoint()
                if keep and world.is_main:  # numbered copies for quality-vs-step curves
                    atomic_write(snapshot_path(out, step), partial(_write_bytes, ckpt_path.read_bytes()))
                if stop:
                    interrupted = True
                    break
        bar.close()
        wall = time.perf_counter() - t_start
        summary = {
            "arch": model_cfg.arch, "parameters": model.num_parameters, "step": step,
            "steps_this_run": steps_run, "wall_s": round(wall, 3),
            "ms_per_step": round(1000 * wall / steps_run, 3) if steps_run else None,
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "checkpoint": str(ckpt_path), "interrupted": interrupted,
        }
        if interrupted:
            print(f"interrupted at step {step}; resume with --resume --out {out}", file=sys.stderr)
        return summary
