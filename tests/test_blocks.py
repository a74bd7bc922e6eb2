import pytest
import torch
import torch.nn.functional as F

from fpdm import IterationPlan, ModelConfig, build_model
from fpdm.models.blocks import DiTBlock, checkpointed
from fpdm.training.memory import MemoryMeter

CFG = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=6, num_heads=4, num_classes=10,
           learn_sigma=True, class_dropout_prob=0.0)


def _model(arch: str):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **CFG))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # every weight random, so every gradient is non-trivial
    return model.train()


def _inputs(n=4):
    g = torch.Generator().manual_seed(1)
    t, y = torch.tensor([0, 300, 600, 999])[:n], torch.tensor([1, 2, 3, 10])[:n]
    return torch.randn(n, 1, 8, 8, generator=g), t, y


def _grads_and_activations(model, grad_checkpoint: bool, **kw):
    model.zero_grad(set_to_none=True)
    x, t, y = _inputs()
    with MemoryMeter() as meter:
        out = model(x, t, y, grad_checkpoint=grad_checkpoint, **kw)
        held = meter.current
        out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, held


@pytest.mark.parametrize("arch,kw", [("dit", {}), ("fpdm", {"iters": IterationPlan(2, 3)})])
def test_checkpointing_gives_the_same_gradients_and_keeps_less(arch, kw):
    model = _model(arch)
    out0, g0, held0 = _grads_and_activations(model, False, **kw)
    out1, g1, held1 = _grads_and_activations(model, True, **kw)
    assert torch.equal(out0, out1)
    assert g0.keys() == g1.keys()
    for name in g0:  # recomputation runs the same kernels on the same inputs: identical on CPU
        assert torch.equal(g0[name], g1[name]), name
    assert held1 < 0.5 * held0


def test_checkpointed_is_plain_call_without_autograd():
    block = DiTBlock(16, 2)
    x, c = torch.randn(2, 4, 16), torch.randn(2, 16)
    assert checkpointed(block, False) is block
    with torch.no_grad(), MemoryMeter() as meter:
        a = checkpointed(block, True)(x, c)
    assert torch.equal(a, torch.no_grad()(block)(x, c))
    assert meter.current == a.untyped_storage().nbytes()  # nothing kept but the output


def test_fused_attention_equals_explicit_softmax_attention():
    from fpdm.models.blocks import Attention

    torch.manual_seed(0)
    attn = Attention(32, 4).double()
    x = torch.randn(3, 10, 32, dtype=torch.float64)
    q, k, v = attn.qkv(x).reshape(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)  # each (N, H, T, D/H)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
    explicit = attn.proj((weights @ v).transpose(1, 2).reshape(3, 10, 32))
    assert torch.allclose(attn(x), explicit, atol=1e-12)


def test_compile_blocks_keeps_outputs_names_and_block_counting():
    from fpdm.models.blocks import compile_blocks
    from fpdm.models.instrument import count_block_calls

    model = _model("fpdm").eval()
    x, t, y = _inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        ref = model(x, t, y, iters=3)
        compile_blocks(model, backend="eager")  # the wiring, without needing a C++ toolchain in CI
        with count_block_calls(model) as counted:
            out = model(x, t, y, iters=3)
        again = model(x, t, y, iters=5)  # another iteration count: the loop is not compiled
    assert torch.equal(out, ref) and counted["blocks"] == 1 + 3 + 1
    assert again.shape == ref.shape and list(model.state_dict()) == keys
    assert "apply_rows" in model.block_fixed_point.__dict__  # the compiled override
    assert "apply_modulated" not in model.block_fixed_point.__dict__  # counting removed its wrapper


def test_checkpointing_is_skipped_without_autograd(monkeypatch):
    # sampling under no_grad must not pay for checkpoint's bookkeeping (it would recompute nothing anyway)
    import fpdm.models.blocks as blocks

    calls = []
    monkeypatch.setattr(blocks, "checkpoint", lambda fn, *a, **kw: calls.append(1) or fn(*a))
    fn = blocks.checkpointed(lambda x: 2 * x, enabled=True)
    x = torch.ones(3, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(fn(x), 2 * torch.ones(3)) and calls == []
    fn(x)
    assert calls == [1]


def test_batch_invariant_runs_small_batches_at_one_matmul_shape():
    from fpdm.models.blocks import MIN_ROWS, batch_invariant

    seen = []
    layer = torch.nn.Linear(4, 3)

    def spy(c):
        seen.append(c.shape[0])
        return layer(c)

    c = torch.randn(20, 4)
    outs = [batch_invariant(spy, c[:n]) for n in (1, 7, 20)]
    assert seen == [MIN_ROWS, MIN_ROWS, 20] and MIN_ROWS == 16  # batches below 16 share one shape
    assert [o.shape[0] for o in outs] == [1, 7, 20]
    torch.testing.assert_close(outs[1], layer(c[:7]))  # the padding rows are dropped, not mixed in


def test_gelu_tanh_is_atens_tanh_gelu_with_and_without_autograd():
    from fpdm.models.blocks import gelu_tanh

    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 4
    ref = F.gelu(x.double(), approximate="tanh")
    with torch.no_grad():
        fast = gelu_tanh(x)  # the sigmoid form
    assert (fast.double() - ref).abs().max() < 2e-6  # ATen's own float32 kernel is 4e-7 off float64
    xg = x.clone().requires_grad_()
    out = gelu_tanh(xg)
    out.backward(torch.linspace(-1, 1, 4096))
    xa = x.clone().requires_grad_()
    F.gelu(xa, approximate="tanh").backward(torch.linspace(-1, 1, 4096))
    # under autograd: the sigmoid form's values, ATen's backward at the same inputs (the same gradient)
    assert torch.equal(out, fast) and torch.equal(xg.grad, xa.grad)


def test_blocks_run_in_sample_chunks_each_with_its_own_modulation(monkeypatch):
    import fpdm.models.blocks as blocks

    torch.manual_seed(0)
    block = blocks.DiTBlock(32, 4)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)  # non-zero adaLN, so every sample's modulation matters
    x, c = torch.randn(10, 16, 32), torch.randn(10, 32)
    mod = block.modulation(c)
    with torch.no_grad():
        one_by_one = torch.cat([block.apply_rows(x[i:i + 1], tuple(v[i:i + 1] for v in mod))
                                for i in range(10)])
        monkeypatch.setattr(blocks, "CHUNK_ROWS", 48)  # 3 samples of 16 tokens per chunk
        calls = []
        inner = block.apply_rows
        block.apply_rows = lambda x, m: calls.append(x.shape[0]) or inner(x, m)
        chunked = block.apply_modulated(x, mod)
    assert calls == [3, 3, 3, 1]
    assert torch.allclose(chunked, one_by_one, atol=1e-6)
