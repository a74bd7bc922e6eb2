"""Multi-process runs on PyTorch's own engine: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK, we join its
process group (gloo on CPU, NCCL on CUDA) and otherwise run the single-process code.

Every rank draws the same global batch, noise, timesteps, label dropout and fixed-point plan from the same
seeded generators and keeps its own slice of the batch, so N processes compute what one process computes on
the global batch (up to the order of floating-point sums in the gradient all-reduce).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    collective_device: str = "cpu"  # where collective tensors live (NCCL needs the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of `n` (n divisible by the world size)."""
        if n % self.size:
            raise ValueError(f"the global batch size {n} is not divisible by the {self.size} processes")
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def all_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (identity on one process)."""
        if self.size == 1:
            return x
        y = x.detach().to(self.collective_device, copy=True)
        dist.all_reduce(y)
        return (y / self.size).to(x.device)

    def all_gather_int(self, value: int) -> list[int]:
        if self.size == 1:
            return [value]
        dev = self.collective_device
        out = [torch.zeros((), dtype=torch.long, device=dev) for _ in range(self.size)]
        dist.all_gather(out, torch.tensor(value, dtype=torch.long, device=dev))
        return [int(v) for v in out]

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any (e.g. a stop signal seen by one process)."""
        if self.size == 1:
            return flag
        t = torch.tensor(int(flag), device=self.collective_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: str = "cpu") -> World:
    """Join torchrun's process group if launched by it (WORLD_SIZE > 1), else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank=rank, size=size, local_rank=local, collective_device=f"cuda:{local}" if cuda else "cpu")


def local_device(device: str, world: World) -> str:
    """'cuda' on a multi-GPU run means this process's own GPU."""
    if world.size > 1 and device == "cuda":
        return f"cuda:{world.local_rank}"
    return device


__all__ = ["World", "init_world", "local_device"]
