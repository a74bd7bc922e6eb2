"""Built-in digits weights: FPDM-T/2 and DiT-T/2 trained here by our own recipe, shipped in the package and
selected by name (`fpdm sample --ckpt digits-fpdm`), so a newcomer samples in seconds without training.

`fpdm build-weights` regenerates them (`fpdm.weights.build`): the demo's recipe (3,000 steps, batch 64,
AdamW 1e-3, 100 warm-up steps, EMA 0.999, seed 0, S-JFB N = M = 3 for FPDM) on one thread, then the EMA
weights in our export format. On the same torch build the result is bit for bit the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parents[1] / "assets"


@dataclass(frozen=True)
class Builtin:
    model: str
    budget: int  # the budget its digits-FID is stated at
    iters: int | None  # FPDM iterations per step at that budget


BUILTINS: dict[str, Builtin] = {
    "digits-fpdm": Builtin("FPDM-T/2", budget=120, iters=2),
    "digits-dit": Builtin("DiT-T/2", budget=120, iters=None),
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
