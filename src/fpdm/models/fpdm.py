"""FPDM: DiT whose middle blocks are replaced by one weight-shared fixed-point layer with input injection.

    h_pre = PreBlocks(embed(x_t), c_pp);  u = W_inj·h_pre;  z_0 = h_pre (or a warm start)
    z_{k+1} = Block_c(fc2(gelu(fc1([z_k ; u]))));  out = Final(PostBlocks(z_K, c_pp), c_pp)

c = t + y drives the fixed-point block; c_pp = y (released default) or t + y drives the rest.
The module holds no iteration state: warm starts come in as `z_init` and go out with `return_state=True`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpdm.config import ModelConfig
from fpdm.fixed_point.solvers import IterationPlan, Solver, solve
from fpdm.models.backbone import DiffusionTransformer
from fpdm.models.blocks import DiTBlock, by_sample_chunks, checkpointed, gelu_tanh


class FPDM(DiffusionTransformer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d, heads, ratio = config.hidden_size, config.num_heads, config.mlp_ratio
        self._build_embedders()
        self.blocks_pre = nn.ModuleList(DiTBlock(d, heads, ratio) for _ in range(config.pre_depth))
        self.block_pre_projection = nn.Linear(d, d)  # input injection W
        self.block_fixed_point_projection_fc1 = nn.Linear(2 * d, 2 * d)
        self.block_fixed_point_projection_fc2 = nn.Linear(2 * d, d)
        self.block_fixed_point = DiTBlock(d, heads, ratio)
        self.blocks_post = nn.ModuleList(DiTBlock(d, heads, ratio) for _ in range(config.post_depth))
        self._build_head()
        self.initialize_weights()

    @property
    def default_iters(self) -> int:
        """Iterations that cost the same blocks per step as the DiT of the same depth."""
        return max(1, self.config.depth - self.config.pre_depth - self.config.post_depth)

    def block_evals(self, iters: int | None = None) -> int:
        """Transformer blocks per forward: pre + k + post (the paper's unit of sampling cost)."""
        k = self.default_iters if iters is None else iters
        return self.config.pre_depth + k + self.config.post_depth

    def fixed_point_map(self, h_pre: Tensor, c: Tensor) -> Callable[[Tensor], Tensor]:
        """The map z ↦ f(z; h_pre, c). Everything that does not depend on z — the injection, its half of
        fc1, and the block's adaLN modulation — is computed here once, not on every iteration."""
        d = self.config.hidden_size
        fc1 = self.block_fixed_point_projection_fc1
        w_u = fc1.weight[:, d:]  # (2D, D)
        # (N, T, 2D), constant over iterations
        u_fc1 = by_sample_chunks(lambda h: F.linear(self.block_pre_projection(h), w_u, fc1.bias), h_pre)
        w_z = fc1.weight[:, :d]  # (2D, D)
        fc2 = self.block_fixed_point_projection_fc2
        block = self.block_fixed_point
        mod = block.modulation(c)

        def project(z: Tensor, u: Tensor) -> Tensor:  # z (n, T, D), u (n, T, 2D) -> (n, T, D)
            # one GEMM adds the constant half in place of a separate (n, T, 2D) sum per iteration
            a = torch.addmm(u.reshape(-1, u.shape[-1]), z.reshape(-1, d), w_z.t()).view(*z.shape[:2], -1)
            return fc2(gelu_tanh(a))

        def f(z: Tensor, rows: Tensor | None = None) -> Tensor:
            """f on the whole batch, or (`rows`: sample indices) on those samples only: z (len(rows), T, D);
            per-sample solvers iterate just the samples that have not converged."""
            u, m = u_fc1, mod
            if rows is not None:
                u, m = u_fc1[rows], tuple(v[rows] for v in mod)
            return block.apply_modulated(by_sample_chunks(project, z, u), m)  # (N, T, D)

        return f

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        y: Tensor,
        iters: int | IterationPlan | Solver | None = None,
        z_init: Tensor | None = None,
        return_state: bool = False,
        grad_checkpoint: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (N, C, H, W), t (N,) original timesteps, y (N,) labels → (N, C_out, H, W) [, z* (N, T, D)].

        `iters`: an int k runs k iterations in the caller's grad mode (sampling); an `IterationPlan` runs
        its no-grad then with-grad iterations (training); a solver closure (`fixed_point.make_solver`) runs
        a budgeted, possibly early-stopping solve. `z_init` warm-starts the iteration (reuse).
        `grad_checkpoint` recomputes in backward the activations of every explicit block and of every
        with-gradient fixed-point iteration instead of keeping them."""
        h, c, c_pp = self.encode(x, t, y, grad_checkpoint)
        if z_init is not None and z_init.shape != h.shape:
            raise ValueError(f"z_init has shape {tuple(z_init.shape)}, expected {tuple(h.shape)}")
        f = checkpointed(self.fixed_point_map(h, c), grad_checkpoint)
        z = solve(f, h if z_init is None else z_init,
                  self.default_iters if iters is None else iters)
        out = self.decode(z, c_pp, grad_checkpoint)
        return (out, z) if return_state else out

    def encode(self, x: Tensor, t: Tensor, y: Tensor, grad_checkpoint: bool = False
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Everything before the fixed point: (h_pre (N, T, D), c (N, D) for the fixed-point block, c_pp
        (N, D) for the pre/post blocks and the head)."""
        h, t_emb, y_emb = self.embed(x, t, y)
        c = t_emb + y_emb  # (N, D)
        c_pp = c if self.config.pre_post_timestep_conditioning else y_emb
        for block in self.blocks_pre:
            h = checkpointed(block, grad_checkpoint)(h, c_pp)  # (N, T, D)
        return h, c, c_pp

    def decode(self, z: Tensor, c_pp: Tensor, grad_checkpoint: bool = False) -> Tensor:
        """Everything after the fixed point: post blocks and the final layer, z (N, T, D) → (N, C_out, H, W).
        Calibration reads the output of every iterate through it."""
        for block in self.blocks_post:
            z = checkpointed(block, grad_checkpoint)(z, c_pp)
        return self.head(z, c_pp)
