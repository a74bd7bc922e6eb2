"""The order in which a run sees its data: shuffled epochs, resumable from a checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from fpdm.common.checkpoint import generator_state, set_generator_state


class BatchStream:
    """Shuffled epochs of mini-batches from an in-memory dataset; its position is part of the checkpoint."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ValueError("the dataset is empty")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start_state = generator_state(self.generator)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        chunks, have = [], 0
        while have < self.batch_size:
            if self.pos == self.n:
                self.epoch_start_state = generator_state(self.generator)
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(self.batch_size - have, self.n - self.pos)
            chunks.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            have += take
        return torch.cat(chunks)  # (batch_size,) indices

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_start_state": self.epoch_start_state, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["epoch_start_state"])
        self.epoch_start_state = state["epoch_start_state"]
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = state["pos"]


__all__ = ["BatchStream"]
