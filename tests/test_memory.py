import pytest
import torch

from fpdm import IterationPlan, ModelConfig, build_model
from fpdm.training.memory import MemoryMeter, training_state_bytes


def _chain():
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # allocated before the meter: accumulation is in place
    return net, torch.randn(128, 64)


def test_meter_counts_exactly_what_autograd_keeps():
    net, x = _chain()
    with MemoryMeter() as meter:
        loss = net(x).square().mean()
        # each Linear's output is kept (as the next one's input, or by square); the loss is a 4-byte scalar
        assert meter.current == 4 * 128 * 64 * 4 + 4
        loss.backward()
        assert meter.peak >= meter.current + 128 * 64 * 4
    del loss
    assert meter.current == 0  # freed storages are uncounted


def test_meter_ignores_views_inplace_and_preexisting_storages():
    a = torch.randn(32, 32)
    with MemoryMeter() as meter:
        a.t().reshape(-1)[:5]
        a.mul_(2)
        b = a + 1
        b.view(-1).add_(1)
    assert meter.current == b.untyped_storage().nbytes() == 32 * 32 * 4


def test_no_grad_iterations_cost_no_memory():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fpdm", input_size=8, patch_size=2, in_channels=1, hidden_size=32,
                                    depth=6, num_heads=4, num_classes=10)).train()
    x, t, y = torch.randn(4, 1, 8, 8), torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,))
    held, peak = {}, {}
    for n in (0, 5, 10):
        with MemoryMeter() as meter:
            out = model(x, t, y, iters=IterationPlan(n, 2))
            held[n], peak[n] = meter.current, meter.peak
        del out
    # n no-grad iterations keep nothing but their result, the with-grad iterations' input: one (N, T, D)
    # tensor (with n = 0 that input is h_pre itself, which the pre blocks' graph already holds)
    z_bytes = 4 * 16 * 32 * 4
    assert held[5] == held[10] == held[0] + z_bytes and held[0] > 0
    # not even transiently: a graph built and then dropped (iterate with grad, then detach) raises the peak
    assert peak[5] == peak[10] == peak[0] + z_bytes


@pytest.mark.parametrize("ema", [True, False])
def test_training_state_bytes_closed_form(ema):
    net, _ = _chain()
    n = sum(p.numel() for p in net.parameters())
    s = training_state_bytes(net, ema=ema)
    assert s["total"] == 4 * n * (5 if ema else 4)
    assert s["optimizer"] == 2 * s["gradients"] == 2 * 4 * n
