"""What `fpdm train` is asked for (`TrainRequest`: every option, with the command's default) and the work it
does with it: a JSON preset filled in under the options given, the resume checks, the configs built from the
options, the run, and the summary written. The command only parses, calls `train_from_request` and prints."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from fpdm.config import DiffusionConfig, TrainConfig, read_preset
from fpdm.data.datasets import DATASETS, load_dataset
from fpdm.data.latents import is_latent_folder
from fpdm.models.registry import model_config
from fpdm.training.loop import resume, train
from fpdm.training.run_folder import resume_point, write_summary

_T = {f.name: f.default for f in fields(TrainConfig)}
_D = {f.name: f.default for f in fields(DiffusionConfig)}


@dataclass
class TrainRequest:
    """The options of `fpdm train` (same names as the flags), with their defaults. None for `steps`,
    `keep_last`, `device` and the `sample_*` options means "the run's own" with `resume`, else the
    TrainConfig default."""

    data: str = _T["data"]
    data_dir: str | None = None
    hflip: bool = False
    init_from: str | None = None
    image_size: int | None = None
    channels: int | None = None
    model: str = "FPDM-T/2"
    hidden_size: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    pre_depth: int = 1
    post_depth: int = 1
    pre_post_timestep_conditioning: bool = False
    class_dropout_prob: float = 0.1
    no_learn_sigma: bool = False
    schedule: str = _D["schedule"]
    num_timesteps: int = _D["num_timesteps"]
    prediction: str = _D["prediction"]
    zero_terminal_snr: bool = False
    out: str | None = None
    steps: int | None = None
    batch_size: int = _T["batch_size"]
    grad_accum: int | None = None
    lr: float = _T["lr"]
    weight_decay: float = _T["weight_decay"]
    warmup_steps: int = _T["warmup_steps"]
    lr_schedule: str = _T["lr_schedule"]
    grad_clip: float = _T["grad_clip"]
    ema_decay: float = _T["ema_decay"]
    fp_mode: str = _T["fp_mode"]
    fp_max_no_grad: int = _T["fp_max_no_grad"]
    fp_max_with_grad: int = _T["fp_max_with_grad"]
    seed: int = _T["seed"]
    log_every: int = _T["log_every"]
    ckpt_every: int = _T["ckpt_every"]
    keep_every: int = _T["keep_every"]
    keep_last: int | None = None
    ckpt_seconds: float | None = None
    sample_every: int | None = None
    sample_count: int | None = None
    sample_steps: int | None = None
    device: str | None = None
    grad_checkpoint: bool = False
    precision: str = _T["precision"]
    compile: bool = False
    no_memory_check: bool = False
    tensorboard: bool = False
    resume: bool = False
    fallback: bool = False
    overwrite: bool = False
    no_progress: bool = False

    @classmethod
    def from_options(cls, options: Any) -> TrainRequest:
        """From parsed command-line options (an argparse Namespace): the fields it has."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults (what the user asked for)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def out_dir(self) -> str:
        return self.out or str(Path("runs") / f"{Path(self.data).name}-{self.model.replace('/', '').lower()}")


# Options a preset may not set: they choose what to do with a run, not how to train it.
_NOT_IN_PRESETS = ("resume", "fallback", "overwrite")


def with_preset(r: TrainRequest, path: str | Path) -> TrainRequest:
    """`--config`: the options left at their defaults filled from a JSON preset; options given win."""
    defaults = {f.name: f.default for f in fields(TrainRequest) if f.name not in _NOT_IN_PRESETS}
    given = r.given()
    return replace(r, **{k: v for k, v in read_preset(path, defaults).items() if k not in given})


def data_path(data: str) -> str:
    """`--data` as a run stores it: a built-in name as is, a folder as its absolute path (so the run
    resumes from any working directory, and `--data imgs` and `--data /abs/imgs` are the same data)."""
    return data if data in DATASETS else str(Path(data).resolve())


def configs(r: TrainRequest):
    """A new run's (TrainConfig, ModelConfig, DiffusionConfig, dataset), built from the options; the
    training and diffusion options are checked before the data is read."""
    data_dir = None if r.data_dir is None else str(Path(r.data_dir).resolve())  # resumable from anywhere
    same = ("batch_size", "lr", "weight_decay", "warmup_steps", "lr_schedule", "grad_clip", "ema_decay",
            "fp_mode", "fp_max_no_grad", "fp_max_with_grad", "seed", "log_every", "ckpt_every", "keep_every",
            "grad_checkpoint", "precision", "compile", "hflip", "init_from")
    unless_none = {k: _T[k] if getattr(r, k) is None else getattr(r, k)
                   for k in ("keep_last", "ckpt_seconds", "sample_every", "sample_count", "sample_steps",
                             "grad_accum")}
    train_cfg = TrainConfig(
        data=data_path(r.data), out_dir=r.out_dir(), steps=r.steps or _T["steps"], data_dir=data_dir,
        device=r.device or _T["device"], memory_check=not r.no_memory_check, tensorboard=r.tensorboard,
        **unless_none,
        **{k: getattr(r, k) for k in same})
    diffusion_cfg = DiffusionConfig(schedule=r.schedule, num_timesteps=r.num_timesteps,
                                    prediction=r.prediction, zero_terminal_snr=r.zero_terminal_snr)
    dataset = load_dataset(r.data, split="train", image_size=r.image_size, channels=r.channels,
                           data_dir=data_dir)
    if r.hflip and r.data not in ("digits", "fashion-mnist") and is_latent_folder(r.data):
        raise ValueError(f"--hflip mirrors images, not latents: {r.data} holds VAE latents (encode the "
                         "mirrors with `fpdm extract-latents --flip` instead)")
    overrides = {k: v for k, v in (("hidden_size", r.hidden_size), ("depth", r.depth),
                                   ("num_heads", r.num_heads)) if v is not None}
    model_cfg = model_config(
        r.model, input_size=dataset.image_size, in_channels=dataset.channels, num_classes=dataset.num_classes,
        learn_sigma=not r.no_learn_sigma, class_dropout_prob=r.class_dropout_prob, pre_depth=r.pre_depth,
        post_depth=r.post_depth, pre_post_timestep_conditioning=r.pre_post_timestep_conditioning, **overrides)
    if model_cfg.arch == "dit":
        defaults = TrainRequest()
        for name in ("fp_mode", "fp_max_no_grad", "fp_max_with_grad", "pre_depth", "post_depth"):
            if getattr(r, name) != getattr(defaults, name):
                raise ValueError(f"--{name.replace('_', '-')} {getattr(r, name)} applies to FPDM models "
                                 f"only: a DiT ({r.model}) has no fixed-point layer")
    return train_cfg, model_cfg, diffusion_cfg, dataset


# settings that describe a run: on resume, each one given must agree with the run's own (--data and
# --data-dir may name another place: the data found there must have the run's digest)
RESUME_TRAIN_SETTINGS = ("batch_size", "lr", "lr_schedule", "weight_decay", "warmup_steps",
                         "grad_clip", "ema_decay", "hflip", "init_from",
                         "fp_mode", "fp_max_no_grad", "fp_max_with_grad", "seed", "log_every", "ckpt_every",
                         "keep_every", "grad_checkpoint", "precision", "compile")
RESUME_MODEL_SETTINGS = ("hidden_size", "depth", "num_heads", "pre_depth", "post_depth",
                         "pre_post_timestep_conditioning", "class_dropout_prob")


_MAY_CHANGE = ("only --steps, --device, --keep-last, --ckpt-seconds, --sample-*, --grad-accum, "
               "--no-memory-check, --tensorboard and where the data lies may change")


def check_resume_settings(out_dir: str | Path, given: dict[str, Any], fallback: bool = False) -> None:
    """Resuming continues a run with its own settings: a setting given (`fpdm train` option names, e.g.
    {"lr": 1e-4, "model": "DiT-S/2"}) that disagrees with the run in `out_dir` is a ValueError naming it
    (only the step count, the device and how many checkpoints are kept may change). Nothing to check
    without a checkpoint."""
    try:
        _, state = resume_point(out_dir, fallback)
    except FileNotFoundError:
        return  # resume() names the missing checkpoint
    saved_t, saved_m = state.get("train_config", {}), state.get("model_config", {})
    if "model" in given:
        want = model_config(given["model"], **{k: given[k] for k in ("hidden_size", "depth", "num_heads")
                                               if k in given})
        mine = (want.arch, want.hidden_size, want.depth, want.patch_size)
        theirs = tuple(saved_m.get(k) for k in ("arch", "hidden_size", "depth", "patch_size"))
        if mine != theirs:
            raise ValueError(f"--model {given['model']} disagrees with the run in {out_dir} "
                             f"({theirs[0]}, width {theirs[1]}, depth {theirs[2]}, patch {theirs[3]}); "
                             f"--resume continues a run with its own settings ({_MAY_CHANGE})")
    checks = [(f, saved_t) for f in RESUME_TRAIN_SETTINGS] + [(f, saved_m) for f in RESUME_MODEL_SETTINGS]
    for flag, saved in checks:
        if flag in given and flag in saved and given[flag] != saved[flag]:
            raise ValueError(f"--{flag.replace('_', '-')} {given[flag]} disagrees with the run in {out_dir} "
                             f"({flag}={saved[flag]}); --resume continues a run with its own settings "
                             f"({_MAY_CHANGE})")


def describe_data(dataset: Any) -> str:
    """One line on what a new run found in its data (count, shape, classes)."""
    kind = {1: "greyscale", 3: "RGB"}.get(dataset.channels, f"{dataset.channels}-channel")
    names = list(dataset.class_names)
    classes = f"{len(names)} classes ({', '.join(names[:5])}{', …' if len(names) > 5 else ''})" if names \
        else "unconditional (no class folders)"
    size = f"{dataset.image_size}×{dataset.image_size}"
    return f"data  {dataset.name}: {len(dataset):,} images, {size} {kind}, {classes}"


def train_from_request(r: TrainRequest, say: Callable[[str], None] = lambda m: None,
                       init_weights: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """Start the run in `r.out_dir()` or, with `resume`, continue it (its own settings; a setting given that
    disagrees is a ValueError naming it); a new run says what it found in its data through `say`, and with
    `init_from` starts from `init_weights` (`fpdm.weights.loading.init_weights(r.init_from)`). Returns
    the summary and whether to report it: written to summary.json unless this is another torchrun process
    than the first, or a finished run resumed with no step left to do (whose summary.json is kept)."""
    out = r.out_dir()
    if r.fallback and not r.resume:
        raise ValueError("--fallback chooses the checkpoint that --resume continues from; it needs --resume")
    if r.resume:  # everything but --steps/--device/--keep-last comes from the checkpoint
        check_resume_settings(out, {k: v for k, v in r.given().items() if k not in _NOT_IN_PRESETS},
                              fallback=r.fallback)
        moved = {"data": data_path(r.data) if r.data != _T["data"] else None,
                 "data_dir": None if r.data_dir is None else str(Path(r.data_dir).resolve())}
        summary = resume(out, steps=r.steps, device=r.device, keep_last=r.keep_last, fallback=r.fallback,
                         **moved,  # type: ignore[arg-type]
                         progress=not r.no_progress, sample_every=r.sample_every, sample_count=r.sample_count,
                         sample_steps=r.sample_steps, ckpt_seconds=r.ckpt_seconds, grad_accum=r.grad_accum,
                         memory_check=False if r.no_memory_check else None,
                         tensorboard=True if r.tensorboard else None)
    else:
        train_cfg, model_cfg, diffusion_cfg, dataset = configs(r)
        say(describe_data(dataset))
        if r.init_from and init_weights is None:
            raise ValueError("--init-from needs its weights: pass init_weights=init_weights(r.init_from)")
        summary = train(train_cfg, model_cfg, diffusion_cfg, dataset=dataset, progress=not r.no_progress,
                        overwrite=r.overwrite, init_weights=init_weights)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, the first process reports
        return summary, False
    if summary["steps_this_run"] == 0 and (Path(out) / "summary.json").exists():
        return summary, False  # nothing ran ("nothing to do" was said): keep the summary of the run that did
    write_summary(out, summary)
    return summary, True
