"""One training step's work: the batch drawn from the run's generators, its gradients (in one pass or
accumulated over micro-batches, `--grad-accum`), and the check, before a run starts, that a step fits in
the memory there is.

A step draws the whole global batch first (data order, labels, timesteps, flips, noise), then splits it:
so a run with `--grad-accum N` sees exactly the data, noise and fixed-point plans of the same run without
it, and its gradients equal the whole batch's up to float rounding (micro-batch losses are weighted by
their share of the batch, so their sum is the batch mean).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fpdm.config import ModelConfig, TrainConfig
from fpdm.data.datasets import ImageDataset
from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.fixed_point.solvers import IterationPlan
from fpdm.models.embeddings import drop_labels
from fpdm.training.batches import BatchStream
from fpdm.training.memory import MemoryMeter, training_state_bytes


def draw_batch(batches: BatchStream, dataset: ImageDataset, model_cfg: ModelConfig, num_timesteps: int,
               gen: torch.Generator, hflip: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The next global batch (x0 (B, C, H, W) in [-1, 1], labels after dropout (B,), timesteps (B,),
    noise like x0), drawn in a fixed order from the run's generators (label dropout: the global RNG)."""
    idx = batches.next()
    y = drop_labels(dataset.labels[idx], model_cfg.class_dropout_prob, model_cfg.num_classes)  # guidance
    t = torch.randint(0, num_timesteps, (len(idx),), generator=gen)
    x0 = dataset.batch(idx)  # (B, C, H, W) in [-1, 1]
    if hflip:  # drawn from the run's generator: resumes exactly
        mirror = torch.rand(len(idx), generator=gen) < 0.5  # (B,)
        x0 = torch.where(mirror[:, None, None, None], x0.flip(-1), x0)
    noise = torch.randn(x0.shape, generator=gen)
    return x0, y, t, noise


def backward(net: nn.Module, diffusion: GaussianDiffusion, x0: Tensor, y: Tensor, t: Tensor, noise: Tensor,
             kw: dict[str, Any], accum: int = 1, bf16: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward and backward of this process's rows, in `accum` micro-batches; gradients are added to the
    parameters' `.grad`. Returns the batch's mean loss and the mean of each loss term (0-d, detached).
    Under DistributedDataParallel, gradients are exchanged once, after the last micro-batch."""
    x_t = diffusion.q_sample(x0, t, noise)
    n = x0.shape[0]
    loss_sum: Tensor | float = 0.0
    terms_sum: dict[str, Tensor] = {}
    chunks = torch.arange(n).tensor_split(accum)  # sizes differ by at most one
    for i, rows in enumerate(chunks):
        share = 1.0 if accum == 1 else len(rows) / n  # the micro-batch mean's weight in the batch mean
        last = i == accum - 1
        sync = nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with torch.autocast(x0.device.type, torch.bfloat16, enabled=bf16):
                output = net(x_t[rows], t[rows], y[rows], **kw)
            terms = diffusion.training_losses(output.float(), x0[rows], x_t[rows], t[rows], noise[rows])
            loss = terms["loss"].mean() * share
            loss.backward()
        loss_sum = loss_sum + loss.detach()
        for k, v in terms.items():
            terms_sum[k] = terms_sum.get(k, 0.0) + v.detach().mean() * share
    return loss_sum, terms_sum  # type: ignore[return-value]


def worst_plan(train_cfg: TrainConfig) -> IterationPlan:
    """The plan of a training step that keeps the most activations: the most iterations with gradient
    (iterations without gradient keep nothing)."""
    n, m = train_cfg.fp_max_no_grad, train_cfg.fp_max_with_grad
    if train_cfg.fp_mode == "backprop":
        return IterationPlan(0, n + m, detach_init=False)
    return IterationPlan(0, 1 if train_cfg.fp_mode == "jfb" else m)


def step_bytes(model: nn.Module, diffusion: GaussianDiffusion, model_cfg: ModelConfig,
               train_cfg: TrainConfig, device: torch.device) -> tuple[int, int, int]:
    """What a step's activations take, measured on micro-batches of 1 and 2 with the plan that keeps the
    most: (peak of a whole step at 1 sample, gradients included; bytes held at the end of the forward at 1
    sample; bytes held per further sample). The model's weights and gradients are left as they were."""
    shape = (model_cfg.in_channels, model_cfg.input_size, model_cfg.input_size)
    gen = torch.Generator().manual_seed(0)  # not the run's generators: they stay where they are
    kw: dict[str, Any] = {"grad_checkpoint": train_cfg.grad_checkpoint}
    if model_cfg.arch == "fpdm":
        kw["iters"] = worst_plan(train_cfg)
    peaks, held = [], []
    grads = [p.grad for p in model.parameters()]
    for b in (1, 2):
        x0 = torch.randn((b, *shape), generator=gen).clamp(-1, 1).to(device)
        noise = torch.randn((b, *shape), generator=gen).to(device)
        y = torch.zeros(b, dtype=torch.long, device=device)
        t = torch.full((b,), diffusion.num_timesteps - 1, dtype=torch.long, device=device)
        for p in model.parameters():
            p.grad = None
        with MemoryMeter() as meter:
            x_t = diffusion.q_sample(x0, t, noise)
            with torch.autocast(device.type, torch.bfloat16, enabled=train_cfg.precision == "bf16"):
                output = model(x_t, t, y, **kw)
            loss = diffusion.training_losses(output.float(), x0, x_t, t, noise)["loss"].mean()
            held.append(meter.current)
            loss.backward()
            del x_t, output, loss
        peaks.append(meter.peak)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g
    return peaks[0], held[0], max(0, held[1] - held[0])


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation may take now: free CUDA memory, or the kernel's MemAvailable; None where
    neither can be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(model: nn.Module, diffusion: GaussianDiffusion, model_cfg: ModelConfig,
                 train_cfg: TrainConfig, device: torch.device, local_batch: int,
                 available: int | None = None) -> dict[str, int]:
    """Refuse, before anything is written, a batch whose step cannot fit: its activations (measured, see
    `step_bytes`, at the micro-batch size `--grad-accum` gives) plus the optimizer's state, against the
    memory available (`available_bytes`). The estimate leaves out allocator overheads, so it is a lower
    bound: what it refuses would certainly be killed. Returns the figures."""
    available = available_bytes(device) if available is None else available
    peak_one, held_one, per_sample = step_bytes(model, diffusion, model_cfg, train_cfg, device)
    kept = training_state_bytes(model)
    state = kept["total"] - kept["gradients"]  # weights, optimizer moments, EMA
    micro = math.ceil(local_batch / train_cfg.grad_accum)
    # the end of a forward (gradients already there from earlier micro-batches), or a step of one sample
    fixed = state + (kept["gradients"] if train_cfg.grad_accum > 1 else 0) + held_one
    need = max(fixed + per_sample * (micro - 1), state + peak_one)
    out = {"need": need, "available": available if available is not None else -1, "per_sample": per_sample}
    if available is None or need <= available:
        return out
    # micro-batches that would fit in 80 % of it (the estimate is a lower bound): with accumulation, the
    # gradients are held through every forward
    spare = int(0.8 * available) - state - kept["gradients"] - held_one
    room = spare // per_sample + 1 if per_sample else micro
    fix = (f"use --grad-accum {math.ceil(local_batch / room)} (micro-batches of at most {room}) or a "
           "smaller --batch-size" if room >= 1 else "the model alone does not fit: a smaller --model, "
           "--grad-checkpoint or another --device")
    raise MemoryError(f"--batch-size {train_cfg.batch_size}: a training step needs at least {_gib(need)} "
                      f"({_mib(per_sample)} per sample × {micro} per micro-batch, and {_mib(fixed)} of "
                      f"weights, optimizer state and fixed costs), but {_gib(available)} is available on "
                      f"{device}; {fix}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


__all__ = ["available_bytes", "backward", "check_memory", "draw_batch", "step_bytes", "worst_plan"]
