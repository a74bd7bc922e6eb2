"""What `fpdm sample` and `fpdm sweep` are asked for (`SampleRequest`: every option, with the command's
default) and the work they do with it: the checks before any sampling, the batches (with a calibrated
schedule or without), the output names, and the files written. The commands only parse, load the weights,
call these and print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fpdm.common.checkpoint import writable_folder
from fpdm.common.distributed import World, init_world, local_device
from fpdm.sampling.budget import DEFAULT_RATIO
from fpdm.sampling.loop import SamplerSettings
from fpdm.sampling.many import SampleRun
from fpdm.version import provenance


@dataclass
class SampleRequest:
    """The options of `fpdm sample` / `fpdm sweep` (same names as the flags), with their defaults."""

    ckpt: str
    seeds: str = "0-99"
    budget: int | None = None
    steps: str | None = None
    iters: int | None = None
    profile: str = "constant"
    ratio: float = DEFAULT_RATIO
    schedule: str | None = None
    reuse: bool = False
    tol: float | None = None
    tol_mode: str = "reallocate"
    solver: str = "picard"
    anderson_window: int = 5
    sampler: str = "ddpm"
    spacing: str = "uniform"
    eta: float = 0.0
    cfg_scale: float = 1.0
    cfg_legacy: bool = False
    label: int | str | None = None  # a class index or name (`label_index`)
    batch_size: int = 256
    no_ema: bool = False
    device: str = "cpu"
    no_progress: bool = False
    no_limits: bool = False
    num_heads: int | None = None
    pre_post_timestep_conditioning: bool | None = None
    out: str | None = None
    overwrite: bool = False
    # `fpdm sample`
    nrow: int = 10
    upscale: int = 4
    eval: bool = False
    adm_npz: bool = False
    vae: str | None = None
    # `fpdm sweep`
    iters_list: str = "1,2,3,4,6,8,12"

    @classmethod
    def from_options(cls, options: Any) -> SampleRequest:
        """From parsed command-line options (an argparse Namespace): the fields it has."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})

    def load_kwargs(self) -> dict[str, Any]:
        """`fpdm.load_model`'s keyword arguments for these options."""
        return {"use_ema": not self.no_ema, "num_heads": self.num_heads,
                "pre_post_timestep_conditioning": self.pre_post_timestep_conditioning}


MAX_GRID_SIDE = 16_384  # pixels: a wider PNG is a typo in --upscale, not a picture anyone can open


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during sampling; the message says what was kept and how to resume."""


def print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def sampler_settings(r: SampleRequest) -> SamplerSettings:
    return SamplerSettings(sampler=r.sampler, spacing=r.spacing, eta=r.eta, cfg_scale=r.cfg_scale,
                           cfg_legacy=r.cfg_legacy,
                           reuse=r.reuse, tol=r.tol, tol_mode=r.tol_mode, solver=r.solver,
                           anderson_window=r.anderson_window)


def sample_request(r: SampleRequest, model: Any, diffusion: Any, iters: int | str | None,
                   parts: Path | None = None, world: World | None = None, check_only: bool = False
                   ) -> SampleRun | None:
    """`sample_seeds` with the request's options: its checks first, then the batches (`iters` is a sweep's
    k, or the request's own --iters). With `check_only`, the checks alone (None)."""
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import check_settings, class_labels, resolve_steps, sample_seeds

    if r.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {r.batch_size}")
    if r.schedule is not None and (r.iters is not None or iters in (None, CALIBRATED)):
        # (a sweep's k is not a schedule)
        return _sample_scheduled(r, model, diffusion, r.iters, parts, world, check_only)
    if r.ratio != DEFAULT_RATIO and r.profile in ("constant", "released"):
        why = " (the released arrangement is decreasing at ratio 3)" if r.profile == "released" else ""
        raise ValueError(f"--ratio {r.ratio} shapes the increasing and decreasing profiles; --profile "
                         f"{r.profile} does not use it{why}")
    settings = sampler_settings(r)
    n_steps, per_step = resolve_steps(model, r.budget, r.steps, iters, r.profile, r.ratio,  # errors first
                                      settings.sampler)
    check_settings(model, settings, budget=r.budget, steps=r.steps, profile=r.profile, label=r.label,
                   n_steps=n_steps, per_step=per_step, limits=not r.no_limits)
    seeds = parse_seeds(r.seeds)
    labels = class_labels(model.config.num_classes, len(seeds), r.label)
    if check_only:
        return None
    return sample_seeds(model, diffusion, seeds, labels=labels, budget=r.budget, steps=r.steps, iters=iters,
                        profile=r.profile, ratio=r.ratio, settings=settings, batch_size=r.batch_size,
                        device=r.device, parts=parts, world=world, progress=not r.no_progress,
                        identity={"ckpt": str(r.ckpt), "ema": not r.no_ema})


CALIBRATED = "calibrated"  # the sweep's row for --schedule


def _sample_scheduled(r: SampleRequest, model: Any, diffusion: Any, iters: int | str | None,
                      parts: Path | None, world: World | None, check_only: bool = False) -> SampleRun | None:
    """`sample_request` with a calibrated schedule in place of --steps/--iters/--profile."""
    from fpdm.sampling.calibrate import check_schedule, read_schedule
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import check_settings, class_labels, sample_seeds

    if r.steps is not None or r.profile != "constant" or iters is not None:
        raise ValueError("--schedule fixes the steps and every step's iterations; drop --steps, --iters and "
                         "--profile")
    schedule = read_schedule(r.schedule)
    settings = sampler_settings(r)
    check_schedule(schedule, model, settings, r.budget, source=f"--schedule {r.schedule}")
    check_settings(model, settings, budget=schedule["budget"], steps=None, profile="constant",
                   label=r.label, n_steps=schedule["steps"], per_step=schedule["iters"],
                   limits=not r.no_limits)
    seeds = parse_seeds(r.seeds)
    labels = class_labels(model.config.num_classes, len(seeds), r.label)
    if check_only:
        return None
    return sample_seeds(model, diffusion, seeds, labels=labels, settings=settings, batch_size=r.batch_size,
                        device=r.device, parts=parts, world=world, progress=not r.no_progress,
                        schedule=schedule, identity={"ckpt": str(r.ckpt), "ema": not r.no_ema,
                                                     "schedule": schedule["weights_hash"]})


def model_label(ckpt: str | Path) -> str:
    """A short name for the weights: a built-in's or an export's name, an official file's stem, or the run
    folder of a training checkpoint (with the step of a kept one: "run-ckpt-5000")."""
    path = Path(ckpt)
    if path.suffix == ".pt" and path.stem.startswith("ckpt"):
        return path.parent.name + ("" if path.name == "ckpt.pt" else f"-{path.stem}")
    return path.stem if path.suffix else path.name


def sample_tag(r: SampleRequest) -> str:
    """The default output name: the weights' name, then every setting that changes the samples (defaults
    left out)."""
    parts = (model_label(r.ckpt), r.sampler, r.spacing != "uniform" and r.spacing,
             r.schedule and f"schedule-{Path(r.schedule).stem}",
             r.budget and f"B{r.budget}",
             r.steps and f"s{r.steps}", r.iters is not None and f"k{r.iters}",
             r.budget and r.steps and r.profile != "constant" and r.profile,
             r.profile != "constant" and r.ratio != DEFAULT_RATIO and f"ratio{r.ratio}",
             r.reuse and "reuse", r.tol and f"tol{r.tol}", r.tol_mode != "reallocate" and f"tol{r.tol_mode}",
             r.solver != "picard" and r.solver,
             r.solver == "anderson" and r.anderson_window != 5 and f"window{r.anderson_window}",
             r.eta and f"eta{r.eta}", r.cfg_scale != 1 and f"cfg{r.cfg_scale}", r.cfg_legacy and "cfglegacy",
             r.label is not None and f"label{r.label}", r.no_ema and "raw",
             f"seeds{r.seeds.replace(',', '_')}")
    return "-".join(str(v) for v in parts if v)


def sample_identity(r: SampleRequest) -> dict:
    """What determines the samples of a `fpdm sample` run: a later run into the same files must match."""
    keys = ("ckpt", "no_ema", "seeds", "label", "budget", "steps", "iters", "profile", "ratio", "schedule",
            "sampler", "eta", "cfg_scale", "cfg_legacy", "reuse", "tol", "solver", "anderson_window", "vae",
            "num_heads", "pre_post_timestep_conditioning")
    # fields added since records were first written count only away from their defaults, so the records of
    # older versions still match the same settings
    later = {"tol_mode": "reallocate", "spacing": "uniform"}
    moved = {k: getattr(r, k) for k, v in later.items() if getattr(r, k) != v}
    return {k: getattr(r, k) for k in keys} | moved


def refuse_other_results(record_path: Path, identity: dict, overwrite: bool) -> None:
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


def sample_to_files(r: SampleRequest, model: Any, diffusion: Any, ckpt: dict[str, Any],
                    warn: Callable[[str], None] = print_to_stderr) -> tuple[dict[str, Any], Path] | None:
    """`fpdm sample`'s work after loading the weights: checks, batches (resumable in `<prefix>.parts/`),
    decoding latents, the grid, the arrays, the record and the metrics. Returns (record, prefix), or None
    on the processes of a torchrun world other than the first. Ctrl-C raises `Interrupted`."""
    from fpdm.data.datasets import trained_on
    from fpdm.data.latents import training_vae
    from fpdm.evaluation.evaluate import digits_eval, fid_name, small_sample_warning
    from fpdm.sampling.loop import parse_seeds
    from fpdm.sampling.many import (
        count_parts,
        discard_empty_parts,
        grid_caption,
        label_index,
        parts_folder,
        remove_parts,
        write_record,
        write_samples,
    )

    r.label = label_index(r.label, ckpt.get("class_names"), model.config.num_classes)  # a name → its index
    vae_path = r.vae or training_vae(ckpt)
    if vae_path is None and model.config.in_channels not in (1, 3):  # before sampling, not at the grid
        raise ValueError(f"these weights sample {model.config.in_channels}-channel latents and no VAE is "
                         "known for them (the training data's latent manifest is not there): pass --vae "
                         "FOLDER, a local diffusers AutoencoderKL, to decode them into images")
    world = init_world(r.device)  # several processes under torchrun: batches are shared out
    r.device = local_device(r.device, world)
    model.to(r.device)
    prefix = Path(r.out) if r.out else Path(r.ckpt).parent / "samples" / sample_tag(r)
    writable_folder(prefix.parent, f"--out {prefix}")  # before sampling, not after it
    for flag, value in (("--nrow", r.nrow), ("--upscale", r.upscale)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    side = max(min(r.nrow, len(parse_seeds(r.seeds))), 1) * (model.config.input_size * r.upscale + 2) + 2
    if side > MAX_GRID_SIDE and not vae_path:  # (decoded latents are larger: not checked)
        raise ValueError(f"--upscale {r.upscale} with --nrow {r.nrow} makes a grid {side:,} pixels wide; at "
                         f"most {MAX_GRID_SIDE:,}")
    identity = sample_identity(r)
    sample_request(r, model, diffusion, r.iters, check_only=True)  # wrong options before other files' names
    refuse_other_results(Path(f"{prefix}.json"), identity, r.overwrite)
    if r.eval and fid_name(model.config, trained_on(ckpt)) is None:  # before sampling, not after it
        raise ValueError("--eval computes digits or Fashion-MNIST metrics, but this model was trained on "
                         "neither; use `fpdm eval --inception-weights` on the .npz")
    if r.eval and (warning := small_sample_warning(len(parse_seeds(r.seeds)))) is not None:
        warn(f"fpdm sample: warning: {warning}")
    parts = parts_folder(prefix)
    try:
        run = sample_request(r, model, diffusion, r.iters, parts=parts, world=world)
        if run is None:  # another process writes the outputs
            return None
    except KeyboardInterrupt:
        discard_empty_parts(parts)  # an empty folder would only block a later run with other settings
        raise Interrupted(f"{count_parts(parts)} finished batch(es) kept in {parts}: run the same command "
                          "again to resume" if parts.exists() else "no batch had finished") from None
    except BaseException:
        discard_empty_parts(parts)
        raise
    x, record = run.samples, run.record
    latents = None
    if vae_path:
        from fpdm.data.latents import decode, load_vae

        latents, x = x, decode(load_vae(vae_path, r.device), x)  # (N, 3, H, W) in [-1, 1]
        record["vae"] = vae_path
    name = Path(r.ckpt).name if Path(r.ckpt).name != "ckpt.pt" else Path(r.ckpt).parent.name
    png, npz = write_samples(prefix, x, run.labels, run.seeds, latents=latents, nrow=r.nrow,
                             upscale=r.upscale, caption=grid_caption(record, name),
                             show_labels=model.config.num_classes > 0, class_names=ckpt.get("class_names"))
    record.update(ckpt=r.ckpt, train_step=ckpt.get("step"), ema=not r.no_ema, png=str(png), npz=str(npz),
                  identity=identity, **provenance())
    if r.adm_npz:
        from fpdm.evaluation.inception import export_adm_npz

        record["adm_npz"] = str(export_adm_npz(x, Path(f"{prefix}.adm.npz")))
    if r.eval:
        record["eval"] = digits_eval(x, run.labels, model.config, trained_on(ckpt))
    write_record(prefix, record)
    remove_parts(parts)  # everything is in the .npz now
    return record, prefix
