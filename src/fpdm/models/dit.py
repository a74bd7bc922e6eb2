"""DiT (Peebles & Xie 2023): the explicit baseline, a stack of `depth` adaLN-Zero blocks."""

from __future__ import annotations

from torch import Tensor, nn

from fpdm.config import ModelConfig
from fpdm.models.backbone import DiffusionTransformer
from fpdm.models.blocks import DiTBlock, checkpointed


class DiT(DiffusionTransformer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._build_embedders()
        self.blocks = nn.ModuleList(
            DiTBlock(config.hidden_size, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self._build_head()
        self.initialize_weights()

    def block_evals(self, iters: int | None = None) -> int:
        """Transformer blocks evaluated by one forward (the paper's unit of sampling cost)."""
        return self.config.depth

    def forward(self, x: Tensor, t: Tensor, y: Tensor, grad_checkpoint: bool = False) -> Tensor:
        """x (N, C, H, W), t (N,) original timesteps, y (N,) labels → (N, C_out, H, W).

        `grad_checkpoint` recomputes each block's activations in backward instead of keeping them."""
        h, t_emb, y_emb = self.embed(x, t, y)
        c = t_emb + y_emb  # (N, D)
        for block in self.blocks:
            h = checkpointed(block, grad_checkpoint)(h, c)  # (N, T, D)
        return self.head(h, c)
