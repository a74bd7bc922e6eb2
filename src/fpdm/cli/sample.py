"""`fpdm sample`: draw samples from any weights, write the grid, the arrays and the record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fpdm.cli.common import _Formatter, _official_kw, _writable_folder
from fpdm.cli.sampling_options import (
    _add_sampling_options,
    _refuse_other_results,
    _sample_identity,
    _sample_seeds,
    _sample_tag,
)
from fpdm.common.distributed import init_world, local_device


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
