"""Regenerating the built-in weights (`fpdm build-weights`): train by the recipe on one thread, export the EMA
weights into the package's assets, and measure the FID stated beside them (digits- or fashion-FID)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fpdm.common.checkpoint import into_the_package
from fpdm.config import TrainConfig
from fpdm.evaluation.evaluate import digits_eval
from fpdm.models.registry import model_config
from fpdm.sampling.budget import plan_budget
from fpdm.sampling.many import sample_seeds
from fpdm.training.loop import train
from fpdm.training.request import TrainRequest, configs
from fpdm.weights.builtin import BUILTINS, builtin_folder
from fpdm.weights.export import export_weights, load_exported, write_exported
from fpdm.weights.loading import load_model

__all__ = ["build", "measure", "ship", "training_wall_s"]


def build(name: str, out: str | Path | None = None, *, steps: int | None = None, dtype: Any = None,
          progress: bool = True) -> dict[str, Any]:
    """Train the built-in `name` by its recipe (one thread; `steps` shortens it, for tests), export its EMA
    weights to `out` (default: the package's assets; `dtype` overrides the built-in's storage, e.g.
    torch.bfloat16), measure its FID at its stated budget on seeds 0-99, and return the config written
    beside the weights (the measurement under "digits_eval" or "fashion_eval")."""
    spec = _spec(name)
    if out is None:  # before hours of training, not after
        into_the_package(builtin_folder(name), "--out")
    torch.set_num_threads(1)  # the recipe's arithmetic, so the bits do not depend on the machine's cores
    with tempfile.TemporaryDirectory() as tmp:
        if spec.recipe:
            r = TrainRequest(model=spec.model, out=tmp, no_progress=not progress,
                             **{**spec.recipe, **({"steps": steps} if steps else {})})
            cfg, model_cfg, diffusion_cfg, dataset = configs(r)
            summary = train(cfg, model_cfg, diffusion_cfg, dataset=dataset, progress=progress)
        else:
            cfg = TrainConfig(data="digits", out_dir=tmp, **({"steps": steps} if steps else {}))
            summary = train(cfg, model_config(spec.model, input_size=8, in_channels=1, num_classes=10),
                            progress=progress)
        return ship(name, tmp, out, dtype=dtype, check_recipe=steps is None, train_wall_s=summary["wall_s"])


# not compared: where a run wrote, which checkpoint files it kept (neither changes its weights) and the
# cosine horizon, which a run fills in from `steps` when it starts
IGNORED = ("out_dir", "data_dir", "device", "keep_last", "keep_every", "lr_decay_steps")


def ship(name: str, run: str | Path, out: str | Path | None = None, *, dtype: Any = None,
         check_recipe: bool = True, train_wall_s: float | None = None) -> dict[str, Any]:
    """Export the finished training run in `run` as the built-in `name` (`fpdm build-weights NAME
    --from-run RUN`: a recipe's hours of training need not be repeated). The run must have been trained by
    the built-in's recipe to its last step (a ValueError names what differs); its EMA weights go to `out`
    (default: the package's assets) with the recipe, and the FID measured at the stated budget."""
    from fpdm.common.checkpoint import load_checkpoint

    spec = _spec(name)
    out = Path(out) if out is not None else into_the_package(builtin_folder(name), "--out")
    dtype = dtype if dtype is not None else (getattr(torch, spec.dtype) if spec.dtype else None)
    state = load_checkpoint(Path(run) / "ckpt.pt")
    saved = state["train_config"]
    recipe_only = {k: v for k, v in spec.recipe.items() if k != "depth"}  # depth is the model's
    depth = {"depth": spec.recipe["depth"]} if "depth" in spec.recipe else {}
    want = {**asdict(TrainConfig(data=spec.data)), **recipe_only}
    if check_recipe:
        differ = [f"{k}={saved.get(k)!r} (recipe: {v!r})" for k, v in want.items()
                  if k in saved and k not in IGNORED and saved.get(k) != v]
        mc, ref = state["model_config"], model_config(spec.model, **depth)
        differ += [f"model {k}={mc.get(k)!r} (recipe: {getattr(ref, k)!r})"
                   for k in ("arch", "hidden_size", "depth", "num_heads", "patch_size")
                   if mc.get(k) != getattr(ref, k)]
        if state.get("step") != saved["steps"]:
            differ.append(f"step {state.get('step')} of {saved['steps']} (unfinished)")
        if differ:
            raise ValueError(f"{run} was not trained by the recipe of {name}: {'; '.join(differ)}")
    recipe = {k: v for k, v in saved.items() if k not in ("out_dir", "data_dir", "device", "keep_last")}
    recipe.update(model=spec.model, threads=1, **depth)
    if train_wall_s is None:  # a run trained by `fpdm train`, perhaps over several runs
        train_wall_s = training_wall_s(Path(run))
    config = export_weights(Path(run) / "ckpt.pt", out, dtype=dtype, overwrite=True, extra={
        "builtin": name, "recipe": recipe, "command": f"fpdm build-weights {name}",
        "train_wall_s": train_wall_s})
    config[f"{spec.data.split('-')[0]}_eval"] = measure(name, out)
    write_exported(out, load_exported(out)[0], config)  # the config's hash lives in the weights file
    return config


def training_wall_s(run: Path) -> float | None:
    """A finished run's training time: its summary's `wall_s` if it trained in one go, else its log's
    time per step summed over the steps (a resumed run's summary counts only its last invocation)."""
    from fpdm.training.monitor import read_log

    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    if summary.get("steps_this_run", summary.get("step")) == summary.get("step") and "wall_s" in summary:
        return summary["wall_s"]
    if not (run / "log.jsonl").exists():
        return None
    total, last = 0.0, 0
    for rec in read_log(run / "log.jsonl")[0]:
        if "ms_per_step" in rec and rec["step"] > last:  # a step logged again after a kill counts once
            total += rec["ms_per_step"] * (rec["step"] - last) / 1000
            last = rec["step"]
    return round(total, 1) or None


def _spec(name: str):
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in {name!r}; expected one of {', '.join(BUILTINS)}")
    return BUILTINS[name]


def measure(name: str, folder: str | Path) -> dict[str, Any]:
    """The built-in `name`'s FID (and the rest of its dataset's metrics) at its stated budget, seeds 0-99."""
    spec = BUILTINS[name]
    model, diffusion, _ = load_model(folder)
    run = sample_seeds(model, diffusion, range(100), budget=spec.budget, iters=spec.iters, batch_size=100)
    plan = plan_budget(model.config, spec.budget, iters=spec.iters)  # the k the budget alone takes
    return {"budget": spec.budget, "iters": plan.iters[0] if plan.iters else None, "sampler": "ddpm",
            "seeds": "0-99", **digits_eval(run.samples, run.labels, model.config, spec.data)}
