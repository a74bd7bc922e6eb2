"""Typed configuration. Every checkpoint stores these as plain dicts, so loading rebuilds the exact setup."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

ARCHS = ("dit", "fpdm")


@dataclass(frozen=True)
class ModelConfig:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**_known(cls, d, "model config"))


def _known(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; expected a subset of {sorted(names)}")
    return dict(d)
