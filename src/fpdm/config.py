"""Typed configuration. Every checkpoint stores these as plain dicts, so loading rebuilds the exact setup."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

ARCHS = ("dit", "fpdm")
C = TypeVar("C", bound="_DictConfig")


class _DictConfig:
    """Round trip through plain dicts (what checkpoints store); unknown keys are an error, not ignored."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**d)


PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ModelConfig(_DictConfig):
    """Architecture of a DiT or an FPDM. For FPDM, `depth` is the DiT depth it replaces: the default number
    of fixed-point iterations is `depth - pre_depth - post_depth`, the same block count per step as DiT."""

    arch: str = "fpdm"
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    # FPDM only
    pre_depth: int = 1
    post_depth: int = 1
    pre_post_timestep_conditioning: bool = False  # released FPDM: pre/post/final see only the class

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size={self.input_size} is not divisible by patch_size={self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.pre_depth < 0 or self.post_depth < 0:
            raise ValueError(f"pre_depth/post_depth must be >= 0, got {self.pre_depth}/{self.post_depth}")



@dataclass(frozen=True)
class DiffusionConfig(_DictConfig):
    schedule: str = "linear"
    num_timesteps: int = 1000
    prediction: str = "eps"
    zero_terminal_snr: bool = False



@dataclass(frozen=True)
class TrainConfig(_DictConfig):
    """Everything about a training run except the architecture (ModelConfig) and the noise process."""

    data: str = "digits"
    out_dir: str = "runs/digits-fpdm"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # after warm-up: "constant" (DiT) or "cosine" (to 0 at lr_decay_steps)
    lr_decay_steps: int = 0  # cosine's horizon; 0 = the run's steps when it starts (then frozen)
    data_dir: str | None = None  # where a named dataset's files are read (fashion-mnist); absolute
    hflip: bool = False  # mirror each training image left-right with probability 1/2
    init_from: str | None = None  # the weights a fine-tuning run started from (`--init-from`), for the record
    grad_accum: int = 1  # micro-batches per step (the batch's gradient, accumulated; same data and noise)
    memory_check: bool = True  # refuse, before the run starts, a step that cannot fit in the memory there is
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999
    # fixed-point gradient (FPDM only): n ~ U{0..fp_max_no_grad}, m ~ U{1..fp_max_with_grad}
    fp_mode: str = "sjfb"
    fp_max_no_grad: int = 3
    fp_max_with_grad: int = 3
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    ckpt_seconds: float = 60.0  # also a checkpoint once this long has passed since the last (0: steps only)
    keep_every: int = 0  # also keep ckpt-<step>.pt every this many steps (0: only the latest ckpt.pt)
    keep_last: int = 1  # earlier checkpoints kept as ckpt.prev<i>.pt, for when the latest is damaged
    sample_every: int = 0  # sample the EMA weights every this many steps: a grid, FID where known (0: off)
    sample_count: int = 100  # samples drawn each time (seeds 0..count-1, the same every time)
    sample_steps: int = 20  # DDPM steps of those samples (FPDM: its default iterations per step)
    tensorboard: bool = False  # also log.jsonl's figures and the grids as TensorBoard events in <out>/tb/
    device: str = "cpu"
    grad_checkpoint: bool = False  # recompute block / with-grad iteration activations in backward
    precision: str = "fp32"  # "bf16": forward under bfloat16 autocast (weights, optimizer, EMA stay fp32)
    compile: bool = False  # torch.compile each transformer block (fpdm.models.blocks.compile_blocks)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "grad_clip", "ema_decay", "ckpt_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.keep_every < 0:
            raise ValueError(f"--keep-every must be >= 0 (0 keeps only the latest checkpoint), got "
                             f"{self.keep_every}")
        if self.sample_every < 0:
            raise ValueError(f"--sample-every must be >= 0 (0: no samples during training), got "
                             f"{self.sample_every}")
        if self.sample_count < 1 or self.sample_steps < 1:
            raise ValueError(f"--sample-count and --sample-steps must be >= 1, got {self.sample_count} and "
                             f"{self.sample_steps}")
        if self.keep_last < 0:
            raise ValueError(f"--keep-last must be >= 0 (earlier checkpoints kept), got {self.keep_last}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_decay_steps < 0:
            raise ValueError(f"lr_decay_steps must be >= 0, got {self.lr_decay_steps}")
        if self.ckpt_seconds < 0:
            raise ValueError(f"--ckpt-seconds must be >= 0 (0: checkpoints by steps only), got "
                             f"{self.ckpt_seconds}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("--warmup-steps, --grad-clip and --weight-decay must be >= 0")


def read_preset(path: str | Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """A JSON preset of options (`fpdm train --config`): option names with underscores as keys, keys
    starting with '_' are comments. Each value is checked against the type of `defaults[key]` (ints are
    accepted for floats and converted); an unknown key or a wrong type is a ValueError naming the file."""
    try:
        preset = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {path} is not valid JSON ({e})") from None
    if not isinstance(preset, dict):
        raise ValueError(f"--config {path}: expected a JSON object of option names and values")
    out = {}
    for key, value in preset.items():
        if key.startswith("_"):
            continue
        if key not in defaults:
            raise ValueError(f"--config {path}: unknown option {key!r}; expected train options such as "
                             "'model', 'batch_size', 'lr' (see fpdm train --help)")
        default = defaults[key]
        if default is not None and not isinstance(value, type(default)) and not (
                isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"--config {path}: {key} should be a {type(default).__name__}, got {value!r}")
        out[key] = float(value) if isinstance(default, float) else value
    return out
