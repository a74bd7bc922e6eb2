"""Named model sizes, `create_model("FPDM-XL/2", ...)` and rebuilding a model from its config."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fpdm.config import ModelConfig
from fpdm.models.dit import DiT
from fpdm.models.fpdm import FPDM

# size → (depth, hidden_size, num_heads). T is our tiny size for 8×8 data on CPU.
SIZES: dict[str, tuple[int, int, int]] = {
    "T": (6, 128, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)
MODEL_NAMES = tuple(f"{a}-{s}/{p}" for a in ("DiT", "FPDM") for s in SIZES for p in PATCHES)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a named model, e.g. "DiT-S/2" or "FPDM-XL/2", with any ModelConfig field overridden."""
    try:
        arch, rest = name.split("-", 1)
        size, patch = rest.split("/")
        depth, width, heads = SIZES[size]
        patch_size = int(patch)
        if arch not in ("DiT", "FPDM") or patch_size not in PATCHES:
            raise ValueError
    except (ValueError, KeyError):
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}") from None
    base = ModelConfig(arch=arch.lower(), patch_size=patch_size, depth=depth, hidden_size=width,
                       num_heads=heads)
    try:
        return replace(base, **overrides)
    except TypeError as e:
        raise ValueError(f"bad override for {name}: {e}") from None


def build_model(config: ModelConfig) -> DiT | FPDM:
    return FPDM(config) if config.arch == "fpdm" else DiT(config)


def create_model(name: str, **overrides: Any) -> DiT | FPDM:
    """`create_model("FPDM-XL/2", input_size=32, in_channels=4, num_classes=1000, learn_sigma=True)`."""
    return build_model(model_config(name, **overrides))
