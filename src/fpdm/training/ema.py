"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fpdm.config import TrainConfig


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` in eval mode, to be updated with `update_ema`."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameters only (buffers are fixed position tables)."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """EMA decay with a warm-up, min(decay, (1 + step) / (10 + step)): early on the average would
    otherwise be dominated by the (zero-output) initialisation, which matters for short runs."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))
