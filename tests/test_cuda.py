"""CUDA-only checks (skipped without a GPU): the optimisations and the memory meter on the device."""

import pytest
import torch

from fpdm import IterationPlan, ModelConfig, build_model
from fpdm.models.blocks import compile_blocks
from fpdm.training.memory import MemoryMeter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CFG = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=6, num_heads=4, num_classes=10,
           class_dropout_prob=0.0)


def _setup(arch: str, device: str):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **CFG))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t, y = torch.tensor([1, 200, 500, 999]), torch.tensor([0, 3, 7, 10])
    return model.to(device).train(), x.to(device), t.to(device), y.to(device)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def test_meter_counts_the_same_bytes_on_cuda_as_on_cpu():
    """Device independence, including backward (which autograd runs on its own device thread)."""
    res = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to(dev)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        x = torch.randn(128, 64, device=dev)
        with MemoryMeter() as meter:
            loss = net(x).square().mean()
            held = meter.current
            loss.backward()
        res[dev] = (held, meter.peak)
    assert res["cpu"] == res["cuda"] and res["cuda"][1] > res["cuda"][0]


@pytest.mark.parametrize("arch", ["dit", "fpdm"])
def test_meter_on_models_agrees_across_devices(arch):
    """Fused attention saves slightly different tensors on CUDA (padded log-sum-exp, RNG state), so the
    model totals agree closely, not to the byte."""
    res = {}
    for dev in ("cpu", "cuda"):
        model, x, t, y = _setup(arch, dev)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        kw = {"iters": IterationPlan(2, 3)} if arch == "fpdm" else {}
        with MemoryMeter() as meter:
            loss = model(x, t, y, **kw).square().mean()
            held = meter.current
            loss.backward()
        res[dev] = (held, meter.peak)
    for a, b in zip(res["cpu"], res["cuda"], strict=True):
        assert abs(a - b) <= 0.05 * a, res


@pytest.mark.parametrize("arch", ["dit", "fpdm"])
def test_checkpointed_gradients_match_on_cuda(arch):
    model, x, t, y = _setup(arch, "cuda")
    kw = {"iters": IterationPlan(2, 3)} if arch == "fpdm" else {}
    grads = []
    for ckpt in (False, True):
        model.zero_grad(set_to_none=True)
        model(x, t, y, grad_checkpoint=ckpt, **kw).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_compiled_blocks_match_eager_on_cuda():
    model, x, t, y = _setup("fpdm", "cuda")
    model.eval()
    with torch.no_grad():
        ref = model(x, t, y, iters=4)
        compile_blocks(model)
        out = model(x, t, y, iters=4)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_forward_close_to_fp32():
    model, x, t, y = _setup("fpdm", "cuda")
    with torch.no_grad():
        ref = model(x, t, y, iters=4)
        with torch.autocast("cuda", torch.bfloat16):
            out = model(x, t, y, iters=4).float()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
