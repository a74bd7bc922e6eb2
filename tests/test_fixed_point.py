import pytest
import torch

from fpdm.fixed_point.solvers import (
    GRADIENT_MODES,
    IterationPlan,
    SolveStats,
    anderson,
    draw_plan,
    iterate,
    make_solver,
    picard,
    relative_residual,
    solve,
)


def test_iterate_closed_form():
    # z <- z/2 + 1 converges to 2; after k steps z_k = 2 + (z0 - 2) / 2**k
    z = iterate(lambda z: z / 2 + 1, torch.tensor([10.0]), 3)
    assert z.item() == pytest.approx(2 + 8 / 8)
    with pytest.raises(ValueError):
        iterate(lambda z: z, torch.zeros(1), -1)


def _plans(mode, n=500, N=3, M=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [draw_plan(mode, N, M, g) for _ in range(n)]


def test_plan_distributions():
    sjfb = _plans("sjfb")
    assert {p.no_grad for p in sjfb} == {0, 1, 2, 3} and {p.with_grad for p in sjfb} == {1, 2, 3, 4}
    assert all(p.detach_init for p in sjfb)
    assert {p.with_grad for p in _plans("jfb")} == {1}
    assert {p.with_grad for p in _plans("multistep")} == {4}
    bp = _plans("backprop")
    assert {p.no_grad for p in bp} == {0} and {p.with_grad for p in bp} == set(range(1, 8))
    assert not any(p.detach_init for p in bp)


def test_plans_are_reproducible_and_modes_share_the_stream():
    assert _plans("sjfb", seed=5) == _plans("sjfb", seed=5)
    assert [p.no_grad for p in _plans("jfb", seed=5)] == [p.no_grad for p in _plans("sjfb", seed=5)]


def test_bad_mode_named():
    with pytest.raises(ValueError, match="'sfjb'"):
        draw_plan("sfjb", 1, 1, torch.Generator())
    assert set(GRADIENT_MODES) == {"sjfb", "jfb", "multistep", "backprop"}


def test_no_grad_phase_builds_no_graph():
    w = torch.randn(4, 4, requires_grad=True)

    def f(z):
        return torch.tanh(z @ w)

    saved = []

    def pack(t):
        saved.append(t)
        return t

    def run(plan):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = solve(f, torch.randn(2, 4), plan)
        return out, len(saved)

    _, only_no_grad = run(IterationPlan(no_grad=5, with_grad=0))
    assert only_no_grad == 0
    out, one = run(IterationPlan(no_grad=0, with_grad=1))
    _, mixed = run(IterationPlan(no_grad=5, with_grad=1))
    assert one > 0 and mixed == one  # the 5 no-grad iterations saved nothing
    out.sum().backward()
    assert w.grad is not None


def test_gradient_only_through_with_grad_iterations():
    # f(z) = a*z: with n no-grad and m grad steps from z0, d out/d a = m * a^(n+m-1) * z0
    a = torch.tensor(0.9, requires_grad=True)
    z0 = torch.tensor(2.0)
    out = solve(lambda z: a * z, z0, IterationPlan(no_grad=3, with_grad=2))
    out.backward()
    assert a.grad.item() == pytest.approx(2 * 0.9 ** 4 * 2.0, rel=1e-6)


def test_detach_init():
    z0 = torch.tensor(1.0, requires_grad=True)
    solve(lambda z: 2 * z, z0, IterationPlan(0, 2, detach_init=False)).backward()
    assert z0.grad.item() == 4.0
    out = solve(lambda z: 2 * z, z0, IterationPlan(0, 2))
    assert not out.requires_grad


def _contraction(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 6, 6, generator=g) * 0.15
    b = torch.randn(3, 6, generator=g)
    return lambda z: torch.tanh((a @ z.unsqueeze(-1)).squeeze(-1) + b)


def test_picard_without_tol_is_plain_iteration():
    f = _contraction()
    stats = SolveStats()
    z = picard(f, torch.zeros(3, 6), 7, None, stats)
    assert torch.equal(z, iterate(f, torch.zeros(3, 6), 7)) and stats.evals == 7 and len(stats.residuals) == 7
    res = stats.residual_values()
    assert res[-1] < res[0]


def test_tol_stops_early_and_residual_is_relative():
    f = _contraction()
    stats = SolveStats()
    picard(f, torch.zeros(3, 6), 100, 1e-5, stats)
    res = stats.residual_values()
    assert stats.evals < 100 and res[-1] < 1e-5 <= res[-2]
    fz, z = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert relative_residual(fz, z).item() == 1.0


def test_anderson_converges_faster_and_counts_evaluations():
    f = _contraction(1)
    z_star = iterate(f, torch.zeros(3, 6), 300)
    p_stats, a_stats = SolveStats(), SolveStats()
    picard(f, torch.zeros(3, 6), 8, None, p_stats)
    z_a = anderson(f, torch.zeros(3, 6), 8, None, a_stats, window=4)
    assert a_stats.evals == 8 and a_stats.residual_values()[-1] < p_stats.residual_values()[-1]
    torch.testing.assert_close(z_a, z_star, atol=1e-5, rtol=0)
    one = SolveStats()
    assert torch.equal(anderson(f, torch.zeros(3, 6), 1, None, one), f(torch.zeros(3, 6))) and one.evals == 1


def test_make_solver_names():
    with pytest.raises(ValueError, match="'newton'"):
        make_solver("newton", 3, None, SolveStats())


def test_iterations_never_sync_with_the_host(monkeypatch):
    """No .item()/bool()/tolist() inside the loop: on a GPU each would stall the queue every iteration."""
    from fpdm import FPDM, ModelConfig

    torch.manual_seed(0)
    model = FPDM(ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=6, num_heads=4,
                             num_classes=10)).train()
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 500]), torch.tensor([1, 2])

    def sync(*args, **kwargs):
        raise AssertionError("host sync inside the fixed-point loop")

    stats = SolveStats()
    solver = make_solver("picard", 4, None, stats)
    for name in ("item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    model(x, t, y, iters=IterationPlan(3, 2)).sum().backward()
    with torch.no_grad():
        model(x, t, y, iters=solver)
        model(x, t, y, iters=5)
    monkeypatch.undo()
    assert stats.evals == 4 and len(stats.residual_values()) == 4


def _counting(f):
    calls = []

    def g(z):
        calls.append(1)
        return f(z)
    return g, calls


@pytest.mark.parametrize("solver", ["picard", "anderson"])
@pytest.mark.parametrize("tol", [None, 1e-3])
def test_solvers_evaluate_f_exactly_as_often_as_they_record(solver, tol):
    # the budget counts recorded evaluations: an unrecorded call of f would be compute the budget hides
    for max_evals in (1, 2, 5, 9):
        f, calls = _counting(_contraction(2))
        stats = SolveStats()
        make_solver(solver, max_evals, tol, stats)(f, torch.zeros(3, 6))
        assert len(calls) == stats.evals == len(stats.residuals) <= max_evals
        if tol is None:
            assert stats.evals == max_evals


def test_anderson_solves_a_linear_map_exactly():
    # Anderson type II with a window beyond the dimension is GMRES on z = Az + b: exact after d + 1 steps,
    # where plain iteration is still far off. Oracle: z* = (I - A)^-1 b.
    g = torch.Generator().manual_seed(0)
    d = 4
    a = 0.9 * torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]  # slow contraction
    b = torch.randn(2, d, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - a, b.T).T

    def f(z):
        return z @ a.T + b

    z0 = torch.zeros(2, d, dtype=torch.float64)
    z = anderson(f, z0, d + 2, None, SolveStats(), window=d + 1, lam=1e-12)
    torch.testing.assert_close(z, z_star, atol=1e-8, rtol=0)
    far = picard(f, z0, d + 2)
    assert (far - z_star).abs().max() > 0.1
    # the window is the number of (x, f(x)) pairs kept: one fewer is no longer exact at d + 2 evaluations
    short = anderson(f, z0, d + 2, None, SolveStats(), window=d, lam=1e-12)
    assert (short - z_star).abs().max() > 1e-6


def test_tol_waits_for_the_slowest_sample():
    # f(z) = a z + b from z0 = 0: z_k = z*(1 - a^k), so the relative residual at evaluation n is
    # a^(n-1) (1 - a) / (1 - a^n), in closed form; the solve stops once every sample is below tol
    a = torch.tensor([[0.5], [0.9]])
    b = torch.ones(2, 1)
    tol = 1e-3

    def res(av, n):
        return av ** (n - 1) * (1 - av) / (1 - av ** n)

    want = next(n for n in range(1, 500) if max(res(0.5, n), res(0.9, n)) < tol)
    stats = SolveStats()
    picard(lambda z: a * z + b, torch.zeros(2, 1), 500, tol, stats)
    fast = next(n for n in range(1, 500) if res(0.5, n) < tol)
    assert stats.evals == want > fast
    # while the batch waits, each sample stops at its own residual (a seed's result is its own)
    assert stats.evals_per_sample.tolist() == [fast, want]
