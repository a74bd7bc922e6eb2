"""Transformer blocks with adaLN-Zero conditioning (DiT) and the final projection layer.

Each block splits its work into `modulation(c)` (depends only on the conditioning vector) and
`apply_modulated(x, mod)`, so the fixed-point layer can compute the modulation once and reuse it on every
iteration.

On CPU a block runs over a large batch a few samples at a time (`by_sample_chunks`), so its intermediates
(qkv, attention, the 4× MLP) stay in a core's L2 cache, and tanh-GELU is computed in its sigmoid form
(`gelu_tanh`): the same function, about twice as fast as ATen's CPU kernel. benchmarks/throughput.py
measures both against the code before them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Below this many rows, BLAS picks other kernels (GEMV, small-M paths) whose rounding differs, so a sample's
# conditioning would depend on the batch it is in. Padding the per-sample (N, D) linears to this many rows
# gives every batch below 16 one matmul shape: fewer differences, not a guarantee (docs/reproducibility.md).
MIN_ROWS = 16


def batch_invariant(layer: nn.Module, c: Tensor) -> Tensor:
    """Apply a row-wise layer to (N, D) conditioning vectors with at least MIN_ROWS rows (zero padding)."""
    n = c.shape[0]
    if n >= MIN_ROWS:
        return layer(c)
    return layer(torch.cat([c, c.new_zeros(MIN_ROWS - n, *c.shape[1:])]))[:n]


def checkpointed(fn: Callable[..., Tensor], enabled: bool) -> Callable[..., Tensor]:
    """`fn`, or `fn` under activation checkpointing when `enabled`: only its inputs are kept for backward
    and its activations are recomputed then. Without autograd recording it is plain `fn` (sampling pays
    nothing)."""
    if not enabled:
        return fn

    def run(*args: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return fn(*args)
        return checkpoint(fn, *args, use_reentrant=False)

    return run


# Rows per chunk on CPU: at 64 tokens and width 128 a block runs ≈ 2× faster in chunks of 512 rows (8
# samples) than on 6,400 at once (project machine: 2 MiB L2 per core); 256 and 1,024 rows measured within 7 %.
CHUNK_ROWS = 512


def by_sample_chunks(
    fn: Callable[..., Tensor], x: Tensor, *per_sample: Tensor | tuple[Tensor, ...]
) -> Tensor:
    """`fn(x, *per_sample)` computed on CHUNK_ROWS-row slices of the batch (whole samples each) and
    concatenated: fn must treat samples independently. x (N, T, D); every other argument is indexed by sample
    along dim 0 (a tuple of such tensors is sliced member-wise). GPUs, small batches and computations that
    record autograd run in one call."""
    n, t = x.shape[0], x.shape[1]
    step = max(1, CHUNK_ROWS // t)
    # under autograd the chunks' extra graph nodes and weight-gradient sums cost more than the cache saves
    # (S-JFB step of FPDM-T/4: 885 ms chunked, 798 ms not)
    if n <= step or x.device.type != "cpu" or torch.is_grad_enabled():
        return fn(x, *per_sample)

    def part(a: Tensor | tuple[Tensor, ...], i: int) -> Tensor | tuple[Tensor, ...]:
        return tuple(v[i:i + step] for v in a) if isinstance(a, tuple) else a[i:i + step]

    out = None
    for i in range(0, n, step):
        r = fn(x[i:i + step], *(part(a, i) for a in per_sample))
        if out is None:
            out = r.new_empty((n, *r.shape[1:]))
        out[i:i + step] = r  # copied while the chunk is still in cache (a cat at the end is ≈ 3× slower)
    return out


_GELU_C = 2 * (2 / torch.pi) ** 0.5  # tanh-GELU: 0.5·(1 + tanh(u)) = sigmoid(2u), u = √(2/π)(x + 0.044715 x³)


def _gelu_gate(x: Tensor) -> Tensor:
    """sigmoid(2u) as a fresh tensor, then in-place passes (each over a cache-resident chunk)."""
    g = torch.addcmul(_gelu_c(x), x, x, value=_GELU_C * 0.044715)  # C + C·0.044715 x²
    return g.mul_(x).sigmoid_()


def _gelu_c(x: Tensor) -> Tensor:
    return torch.tensor(_GELU_C, dtype=x.dtype)  # 0-dim: broadcast by addcmul, no full-size constant


class _GeluTanh(torch.autograd.Function):
    """The sigmoid form forward, ATen's `gelu_backward` (which beats a hand-written backward of the sigmoid
    form: S-JFB step of FPDM-S/2 0.88× the released code's time against 0.85×)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _gelu_gate(x).mul_(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


def gelu_tanh(x: Tensor) -> Tensor:
    """F.gelu(x, approximate="tanh") (within 1e-6 in float32): on CPU float32 in its sigmoid form, which ATen
    evaluates about twice as fast, with ATen's own backward under autograd; elsewhere ATen's kernel."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return F.gelu(x, approximate="tanh")
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluTanh.apply(x)
    return _gelu_gate(x).mul_(x)


def linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """layer(x); without autograd on CPU as a matmul then an in-place bias add, which skips addmm's copy of
    the bias into the output before the GEMM (8 % of a 512 × 128 × 512 Linear)."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or layer.bias is None:
        return layer(x)
    return torch.matmul(x, layer.weight.t()).add_(layer.bias)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))  # (N, T, D), one pass


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (names as timm's `Attention`)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = linear(self.qkv, x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients once, where three
        # selects would each zero-fill and copy into a full (3, N, H, T, D/H) gradient
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, D/H)
        return linear(self.proj, out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.fc2, gelu_tanh(linear(self.fc1, x)))


class DiTBlock(nn.Module):
    """Pre-norm transformer block; LayerNorms without affine, modulated by (shift, scale, gate) from c."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def modulation(self, c: Tensor) -> tuple[Tensor, ...]:
        return batch_invariant(self.adaLN_modulation, c).chunk(6, dim=1)  # 6 × (N, D)

    def apply_modulated(self, x: Tensor, mod: tuple[Tensor, ...]) -> Tensor:
        """The block on x (N, T, D) with a precomputed modulation: one block evaluation, chunked on CPU."""
        return by_sample_chunks(self.apply_rows, x, mod)

    def apply_rows(self, x: Tensor, mod: tuple[Tensor, ...]) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = torch.addcmul(x, gate_msa.unsqueeze(1), self.attn(modulate(self.norm1(x), shift_msa, scale_msa)))
        x = torch.addcmul(x, gate_mlp.unsqueeze(1), self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x  # (N, T, D)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.apply_modulated(x, self.modulation(c))


def compile_blocks(model: nn.Module, **compile_kwargs: object) -> nn.Module:
    """torch.compile every transformer block's `apply_rows`, in place; the model's own loops stay eager.

    Compiling the whole FPDM forward would specialise on the iteration counts, which S-JFB draws afresh
    every step (one recompilation per (n, m) pair); a block's computation never changes shape. Parameter
    names and the state dict are untouched."""
    for block in model.modules():
        if isinstance(block, DiTBlock):
            block.apply_rows = torch.compile(block.apply_rows, **compile_kwargs)
    return model


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a Linear to p·p·C_out values per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = batch_invariant(self.adaLN_modulation, c).chunk(2, dim=1)
        return by_sample_chunks(self._rows, x, shift, scale)  # (N, T, p*p*C_out)

    def _rows(self, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        return self.linear(modulate(self.norm_final(x), shift, scale))
