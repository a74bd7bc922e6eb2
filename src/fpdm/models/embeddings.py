"""Input embedders of DiT/FPDM: patches, timesteps, class labels, and the frozen 2-D sin-cos positions.

Module and parameter names follow the official DiT checkpoints (`x_embedder.proj`, `t_embedder.mlp.{0,2}`,
`y_embedder.embedding_table`) so their weights load with `strict=True`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpdm.models.blocks import batch_invariant


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches → tokens of width D, row-major over the patch grid.

    The weights live in a Conv2d (the official checkpoints' `x_embedder.proj`), but the forward is
    patches × weight: one matmul over N·T rows. A convolution library chooses its algorithm by batch size
    (oneDNN does), which made a sample's tokens depend on the batch it was in; a matmul keeps each row's
    arithmetic the same for any batch on the BLAS libraries we know of (not a guarantee: see
    docs/reproducibility.md)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size={input_size} is not divisible by patch_size={patch_size}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"expected inputs of spatial size {self.input_size}x{self.input_size}, got {tuple(x.shape)}"
            )
        n, c = x.shape[:2]
        p, g = self.patch_size, self.grid_size
        patches = x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # (N, g, g, C, p, p)
        patches = patches.reshape(n, g * g, c * p * p)  # (N, T, C·p·p), in the weight's (c, i, j) order
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # (D, C·p·p)
        return F.linear(patches, weight, self.proj.bias)  # (N, T, D)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: [cos(t·f) ; sin(t·f)], f geometric."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (N, dim)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)  # float32, as the official model
        return batch_invariant(self.mlp, freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra row, the null class (index `num_classes`), for guidance.

    With `num_classes == 0` the model is unconditional and every label is the null class. Label dropout
    (training only) is not done here but by `drop_labels` in the training loop, on the whole global batch,
    so a run gives the same labels on 1 or N processes; `dropout_prob` is kept for the config.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= dropout_prob <= 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1], got {dropout_prob}")
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: Tensor) -> Tensor:
        if self.num_classes == 0:
            labels = torch.full_like(labels, self.null_class)
        return self.embedding_table(labels)  # (N, D)


def drop_labels(labels: Tensor, prob: float, num_classes: int,
                generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by the null class (`num_classes`) with probability `prob` (classifier-free
    guidance training). One uniform draw per label, in order, from `generator` (default: the global CPU
    RNG). Unconditional models (`num_classes == 0`) draw nothing."""
    if num_classes == 0 or prob <= 0:
        return labels
    drop = torch.rand(labels.shape[0], generator=generator) < prob  # (N,) on CPU: device-independent draws
    return torch.where(drop.to(labels.device), torch.full_like(labels, num_classes), labels)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))  # (dim/2,)
    angles = pos.reshape(-1)[:, None] * omega[None]  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, dim)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """Frozen 2-D position table (T, dim) for a row-major grid of tokens.

    The first half of the channels encodes the column index, the second half the row index — the layout
    of the official DiT buffer, so pretrained weights see the positions they were trained with.
    """
    if dim % 4:
        raise ValueError(f"hidden size must be divisible by 4 for 2-D sin-cos positions, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb = np.concatenate([_sincos_1d(dim // 2, cols.astype(np.float64)),
                          _sincos_1d(dim // 2, rows.astype(np.float64))], axis=1)
    return torch.from_numpy(emb).float()  # (T, dim)
