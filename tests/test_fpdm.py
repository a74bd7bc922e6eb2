import pytest
import torch
import torch.nn.functional as F

from fpdm import FPDM, IterationPlan, ModelConfig

CFG = dict(arch="fpdm", input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=6, num_heads=4,
           num_classes=10, learn_sigma=True, class_dropout_prob=0.0)


def _random_model(**kw) -> FPDM:
    """Every weight random, including the zero-initialised adaLN and output layers."""
    torch.manual_seed(0)
    model = FPDM(ModelConfig(**{**CFG, **kw}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.double().eval()  # float64: the comparison tests the computation, not rounding


def _by_hand(m: FPDM, x, t, y, k, z_init=None, pptc=False):
    h = m.x_embedder.proj(x).flatten(2).transpose(1, 2) + m.pos_embed
    t_emb = m.t_embedder(t)
    y_emb = m.y_embedder.embedding_table(y)
    c = t_emb + y_emb
    c_pp = c if pptc else y_emb
    for b in m.blocks_pre:
        h = b(h, c_pp)
    u = m.block_pre_projection(h)
    z = h if z_init is None else z_init
    for _ in range(k):
        a = m.block_fixed_point_projection_fc1(torch.cat([z, u], dim=-1))
        a = m.block_fixed_point_projection_fc2(F.gelu(a, approximate="tanh"))
        z = m.block_fixed_point(a, c)
    out = z
    for b in m.blocks_post:
        out = b(out, c_pp)
    out = m.final_layer(out, c_pp)  # (N, T, p*p*C)
    n, p, co = out.shape[0], m.patch_size, m.out_channels
    out = out.reshape(n, 4, 4, p, p, co).permute(0, 5, 1, 3, 2, 4).reshape(n, co, 8, 8)
    return out, z


def _inputs(n=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.tensor([0, 500, 999])[:n], torch.tensor([1, 7, 10])[:n]


@pytest.mark.parametrize("k", [0, 1, 4])
@pytest.mark.parametrize("pptc", [False, True])
def test_forward_equals_hand_unrolled(k, pptc):
    m = _random_model(pre_depth=2, post_depth=1, pre_post_timestep_conditioning=pptc)
    x, t, y = _inputs()
    with torch.no_grad():
        out, z = m(x, t, y, iters=k, return_state=True)
        want, want_z = _by_hand(m, x, t, y, k, pptc=pptc)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, want_z, atol=1e-5, rtol=1e-5)


def test_warm_start_continues_the_iteration():
    """3 iterations, then 2 more from z*, equal 5 iterations from scratch (same t, x)."""
    m = _random_model()
    x, t, y = _inputs()
    with torch.no_grad():
        _, z3 = m(x, t, y, iters=3, return_state=True)
        out_a = m(x, t, y, iters=2, z_init=z3)
        out_b = m(x, t, y, iters=5)
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)


def test_z_init_shape_checked():
    m = _random_model()
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="z_init has shape"):
        m(x, t, y, iters=1, z_init=torch.zeros(3, 15, 32, dtype=torch.float64))


def test_default_iters_match_dit_block_count():
    m = FPDM(ModelConfig(**CFG))
    assert m.default_iters == 4 and m.block_evals() == 6 and m.block_evals(7) == 9


def test_no_state_kept_between_calls():
    m = _random_model()
    x, t, y = _inputs()
    with torch.no_grad():
        a = m(x, t, y, iters=3)
        m(x * 2, t, y, iters=3, return_state=True)
        b = m(x, t, y, iters=3)
    assert torch.equal(a, b)


def test_every_parameter_gets_a_gradient_after_sjfb_step():
    x, t, y = _inputs()
    target = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # Default init (adaLN-Zero): gradients exist for every parameter (many are exactly zero at step 0).
    m = FPDM(ModelConfig(**CFG)).double().train()
    (m(x, t, y, iters=IterationPlan(no_grad=2, with_grad=2)) - target).square().mean().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    # Random weights: each parameter, the pre blocks and injection included, gets a non-zero gradient.
    m = _random_model().train()
    (m(x, t, y, iters=IterationPlan(no_grad=2, with_grad=2)) - target).square().mean().backward()
    assert [n for n, p in m.named_parameters() if not p.grad.abs().sum() > 0] == []


def test_null_class_and_unconditional():
    m = _random_model(num_classes=0)
    x, t, _ = _inputs()
    with torch.no_grad():
        a = m(x, t, torch.tensor([0, 3, 9]), iters=2)
        b = m(x, t, torch.zeros(3, dtype=torch.long), iters=2)
    assert torch.equal(a, b)  # unconditional: labels are ignored
