"""What DiT and FPDM share: embedders, conditioning, the output head, unpatchify and DiT's initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fpdm.config import ModelConfig
from fpdm.models.blocks import DiTBlock, FinalLayer
from fpdm.models.embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_pos_embed_2d


class DiffusionTransformer(nn.Module):
    """Base class. Subclasses call `_build_embedders()`, register their blocks, then `_build_head()`,
    so `state_dict()` keys come in the official registration order."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.in_channels * (2 if config.learn_sigma else 1)
        self.patch_size = config.patch_size

    def _build_embedders(self) -> None:
        cfg = self.config
        self.x_embedder = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_channels, cfg.hidden_size)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.hidden_size, cfg.class_dropout_prob)
        pos = sincos_pos_embed_2d(cfg.hidden_size, self.x_embedder.grid_size)
        self.register_buffer("pos_embed", pos.unsqueeze(0))  # (1, T, D), frozen

    def _build_head(self) -> None:
        self.final_layer = FinalLayer(self.config.hidden_size, self.patch_size, self.out_channels)

    def _adaln_blocks(self) -> list[DiTBlock]:
        return [m for m in self.modules() if isinstance(m, DiTBlock)]

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier Linears, N(0, 0.02) embeddings, and adaLN-Zero (every block's
        modulation and the output layer start at zero, so each block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear over the flattened patch
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self._adaln_blocks():
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for p in (*self.final_layer.adaLN_modulation[-1].parameters(), *self.final_layer.linear.parameters()):
            nn.init.zeros_(p)

    def embed(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens (N, T, D), timestep embedding (N, D) and label embedding (N, D)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ValueError(
                f"expected t and y of shape ({x.shape[0]},), got {tuple(t.shape)} and {tuple(y.shape)}"
            )
        tokens = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        return tokens, self.t_embedder(t), self.y_embedder(y)

    def head(self, h: Tensor, c: Tensor) -> Tensor:
        return self.unpatchify(self.final_layer(h, c))  # (N, C_out, H, W)

    def unpatchify(self, x: Tensor) -> Tensor:
        n, t, _ = x.shape
        p, c, g = self.patch_size, self.out_channels, self.x_embedder.grid_size
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
