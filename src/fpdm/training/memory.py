"""Device-independent memory accounting for a training step.

`MemoryMeter` watches every tensor storage that an op creates while it is active (forward, backward,
recomputation inside gradient checkpoints, optimizer states) and frees it when the storage dies, so it knows
the live bytes at any point and their peak — on CPU as on CUDA, with no allocator statistics. Storages that
existed before (parameters, inputs) are not counted; views and in-place results are not new storages.
`training_state_bytes` gives the part that does not depend on the batch: parameters, gradients, AdamW's two
moments and the EMA copy.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # identity of the StorageImpl, shared by all views


class MemoryMeter(TorchDispatchMode):
    """Context manager: `current` and `peak` bytes of storages created inside it (and still alive)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def reset_peak(self) -> None:
        self.peak = self.current

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_key(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            key = _storage_key(t)
            if key in inputs or key in self._live:
                continue  # a view or in-place result, or a storage already counted
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            self._live[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def training_state_bytes(model: nn.Module, ema: bool = True, optimizer_moments: int = 2) -> dict[str, int]:
    """Bytes of what a step keeps regardless of batch: parameters, their gradients, the optimizer's
    moments (AdamW: 2 per parameter) and an EMA copy, each in the parameters' dtype."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    out = {"parameters": params, "gradients": trainable, "optimizer": optimizer_moments * trainable,
           "ema": params if ema else 0}
    out["total"] = sum(out.values())
    return out


__all__ = ["MemoryMeter", "training_state_bytes"]
