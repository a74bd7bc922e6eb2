"""Regenerating the built-in weights (`fpdm build-weights`): train by the recipe on one thread, export the EMA
weights into the package's assets, and measure the FID stated beside them (digits- or fashion-FID)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

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

__all__ = ["build"]


def build(name: str, out: str | Path | None = None, *, steps: int | None = None, dtype: Any = None,
          progress: bool = True) -> dict[str, Any]:
    """Train the built-in `name` by its recipe (one thread; `steps` shortens it, for tests), export its EMA
    weights to `out` (default: the package's assets; `dtype` overrides the built-in's storage, e.g.
    torch.bfloat16), measure its FID at its stated budget on seeds 0-99, and return the config written
    beside the weights (the measurement under "digits_eval" or "fashion_eval")."""
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in {name!r}; expected one of {', '.join(BUILTINS)}")
    spec = BUILTINS[name]
    torch.set_num_threads(1)  # the recipe's arithmetic, so the bits do not depend on the machine's cores
    out = Path(out) if out is not None else builtin_folder(name)
    dtype = dtype if dtype is not None else (getattr(torch, spec.dtype) if spec.dtype else None)
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
        recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "data_dir")}
        recipe.update(model=spec.model, threads=1, **({"depth": spec.recipe["depth"]}
                                                      if "depth" in spec.recipe else {}))
        config = export_weights(Path(tmp) / "ckpt.pt", out, dtype=dtype, extra={
            "builtin": name, "recipe": recipe, "command": f"fpdm build-weights {name}",
            "train_wall_s": summary["wall_s"]})
    config[f"{spec.data.split('-')[0]}_eval"] = measure(name, out)
    write_exported(out, load_exported(out)[0], config)  # the config's hash lives in the weights file
    return config


def measure(name: str, folder: str | Path) -> dict[str, Any]:
    """The built-in `name`'s FID (and the rest of its dataset's metrics) at its stated budget, seeds 0-99."""
    spec = BUILTINS[name]
    model, diffusion, _ = load_model(folder)
    run = sample_seeds(model, diffusion, range(100), budget=spec.budget, iters=spec.iters, batch_size=100)
    plan = plan_budget(model.config, spec.budget, iters=spec.iters)  # the k the budget alone takes
    return {"budget": spec.budget, "iters": plan.iters[0] if plan.iters else None, "sampler": "ddpm",
            "seeds": "0-99", **digits_eval(run.samples, run.labels, model.config, spec.data)}
