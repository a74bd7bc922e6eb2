"""Built-in weights, trained here by our own recipes, shipped in the package and selected by name
(`fpdm sample --ckpt digits-fpdm`), so a newcomer samples in seconds without training: FPDM-T/2 and DiT-T/2
on digits, FPDM-T/4 (S-JFB N = M = 3, and the released N = 10, M = 12) and DiT-T/4 (depth 28) on
Fashion-MNIST.

`fpdm build-weights NAME` regenerates one (`fpdm.weights.build`): its recipe on one thread, then the EMA
weights in our export format. On the same torch build the result is bit for bit the same. Digits: the
demo's recipe (3,000 steps, batch 64, AdamW 1e-3, 100 warm-up steps, EMA 0.999, seed 0, S-JFB N = M = 3 for
FPDM). Fashion-MNIST: `configs/fashion32-*.json` (10,000 steps, cosine learning rate, EMA 0.9995), stored
as float16 (half the size; sampling computes in float32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parents[1] / "assets"


@dataclass(frozen=True)
class Builtin:
    model: str
    budget: int  # the budget its FID is stated at
    iters: int | None  # FPDM iterations per step at that budget
    data: str = "digits"
    recipe: dict[str, Any] = field(default_factory=dict)  # `fpdm train` options (TrainRequest) beyond model
    dtype: str | None = None  # how the weights are stored (None: float32)


# configs/fashion32-*.json without the model (tests/test_builtin.py holds them equal)
FASHION_RECIPE = {"data": "fashion-mnist", "batch_size": 64, "lr": 1e-3, "lr_schedule": "cosine",
                  "warmup_steps": 500, "grad_clip": 1.0, "ema_decay": 0.9995, "steps": 10_000,
                  "log_every": 50, "ckpt_every": 50, "keep_every": 1000}

BUILTINS: dict[str, Builtin] = {
    "digits-fpdm": Builtin("FPDM-T/2", budget=120, iters=2),
    "digits-dit": Builtin("DiT-T/2", budget=120, iters=None),
    "fashion-fpdm": Builtin("FPDM-T/4", budget=140, iters=None, data="fashion-mnist", dtype="float16",
                            recipe={**FASHION_RECIPE, "fp_mode": "sjfb", "fp_max_no_grad": 3,
                                    "fp_max_with_grad": 3}),
    "fashion-dit": Builtin("DiT-T/4", budget=140, iters=None, data="fashion-mnist", dtype="float16",
                           recipe={**FASHION_RECIPE, "depth": 28}),
    # the released S-JFB range; trained as the Fashion study's fpdm-N10M12, shipped so no clone retrains it
    "fashion-fpdm-n10m12": Builtin("FPDM-T/4", budget=140, iters=None, data="fashion-mnist", dtype="float16",
                                   recipe={**FASHION_RECIPE, "fp_mode": "sjfb", "fp_max_no_grad": 10,
                                           "fp_max_with_grad": 12}),
}


def builtin_folder(name: str) -> Path:
    return ASSETS / name


def resolve(path: str | Path) -> str | Path:
    """A built-in name → its folder in the package; anything else unchanged. A built-in missing from this
    installation is a FileNotFoundError that says how to build it."""
    if str(path) in BUILTINS and not Path(path).exists():
        folder = builtin_folder(str(path))
        if not (folder / "model.safetensors").exists():
            raise FileNotFoundError(f"the built-in weights {path!r} are not in this installation ({folder}); "
                                    f"build them with `fpdm build-weights {path}`")
        return folder
    return path


__all__ = ["BUILTINS", "Builtin", "builtin_folder", "resolve"]
