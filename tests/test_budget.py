import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fpdm import create_model
from fpdm.models.registry import model_config
from fpdm.sampling.budget import (
    PROFILES,
    BudgetError,
    allocate,
    feasible_pairs,
    forward_flops,
    plan_budget,
    step_cost,
)

FPDM_T = model_config("FPDM-T/2", input_size=8, in_channels=1, num_classes=10)  # pre 1, post 1, depth 6
DIT_T = model_config("DiT-T/2", input_size=8, in_channels=1, num_classes=10)


def test_allocations_on_many_random_budgets():
    rng = random.Random(0)
    for _ in range(2000):
        steps = rng.randint(1, 60)
        total = rng.randint(steps, steps * 30)
        ratio = rng.choice([1.0, 1.5, 3.0, 10.0])
        for profile in PROFILES:
            k = allocate(total, steps, profile, ratio)
            assert len(k) == steps and sum(k) == total and min(k) >= 1, (total, steps, profile, ratio)
            if profile == "increasing" and ratio > 1:
                assert k == sorted(k)
            if (profile == "decreasing" and ratio > 1) or profile == "released":
                assert k == sorted(k, reverse=True)
            if profile == "constant":
                assert max(k) - min(k) <= 1
                half = steps // 2  # the remainder is not piled at one end
                assert abs(sum(k[:half]) - sum(k[steps - half:])) <= 1


def test_ramp_follows_its_weights_without_rounding_bias():
    rng = random.Random(1)
    drift = 0.0
    for _ in range(500):
        steps = rng.randint(2, 40)
        total = rng.randint(steps, steps * 20)
        k = allocate(total, steps, "increasing", 3.0)
        extra = total - steps
        w = [1 + 2 * i / (steps - 1) for i in range(steps)]
        target = [1 + extra * wi / sum(w) for wi in w]
        assert all(abs(a - b) < 1 for a, b in zip(k, target, strict=True))
        drift += sum(a - b for a, b in zip(k[: steps // 2], target[: steps // 2], strict=True))
    assert abs(drift) / 500 < 0.5  # rounding does not favour the first half


def test_allocation_examples_and_errors():
    assert allocate(13, 5) == [3, 2, 3, 2, 3]
    assert allocate(40, 8, "increasing") == [3, 4, 4, 5, 5, 6, 6, 7]
    assert allocate(40, 8, "released") == allocate(40, 8, "decreasing", 3.0)[::1] == [7, 6, 6, 5, 5, 4, 4, 3]
    # a tie: 3 extra iterations on weights 1, 2, 3 are targets 0.5, 1, 1.5; floors 0, 1, 1 leave one
    # iteration for two equal remainders (0.5), and it goes to the larger weight, keeping the ramp monotone
    assert allocate(6, 3, "increasing") == [1, 2, 3]
    assert allocate(6, 3, "decreasing") == [3, 2, 1]
    with pytest.raises(BudgetError, match="at least one"):
        allocate(3, 4)
    with pytest.raises(ValueError, match="profile"):
        allocate(8, 4, "sideways")


def test_plan_budget_spends_exactly_or_explains():
    assert step_cost(FPDM_T, 4) == 6 and step_cost(DIT_T) == 6
    p = plan_budget(FPDM_T, 300, iters=4)
    assert (p.steps, set(p.iters), p.blocks) == (50, {4}, 300)
    p = plan_budget(FPDM_T, 300, steps=40, profile="increasing")
    assert p.steps == 40 and sum(p.iters) + 2 * 40 == 300 and list(p.iters) == sorted(p.iters)
    assert plan_budget(DIT_T, 300).steps == 50
    with pytest.raises(BudgetError, match=r"feasible nearby: 294 \(49 steps\) or 300 \(50 steps\)"):
        plan_budget(FPDM_T, 299, iters=4)
    with pytest.raises(BudgetError, match="multiple of the DiT depth 6"):
        plan_budget(DIT_T, 299)
    with pytest.raises(BudgetError, match="not both"):
        plan_budget(FPDM_T, 300, iters=4, steps=50)
    with pytest.raises(BudgetError, match="at most 100 steps fit"):
        plan_budget(FPDM_T, 300, steps=101)
    with pytest.raises(BudgetError, match="FPDM checkpoints only"):
        plan_budget(DIT_T, 300, iters=3)


def test_the_budget_alone_takes_the_feasible_k_nearest_the_models_own():
    """FPDM-T (pre 1 + post 1, depth 6: k = 4 by default): 300 = 50 × (2 + 4) keeps k = 4; 98 has no k = 4
    plan and k = 5 (14 steps) is nearer than k = 12 (7 steps); 140 ties k = 5 (20 steps) with k = 3 (28
    steps) and takes the smaller k."""
    assert plan_budget(FPDM_T, 300).iters == (4,) * 50
    assert plan_budget(FPDM_T, 98).iters == (5,) * 14
    assert plan_budget(FPDM_T, 140).iters == (3,) * 28
    with pytest.raises(BudgetError, match="budget 2 is below one step"):
        plan_budget(FPDM_T, 2)


def test_feasible_pairs():
    assert feasible_pairs(FPDM_T, 24) == [(1, 8), (2, 6), (4, 4), (6, 3), (10, 2), (22, 1)]
    assert feasible_pairs(DIT_T, 24) == [(0, 4)] and feasible_pairs(DIT_T, 25) == []


@pytest.mark.parametrize("name, size, iters", [("FPDM-T/2", 8, 5), ("DiT-T/2", 8, 0), ("FPDM-S/4", 32, 3)])
def test_forward_flops_match_torch_flop_counter(name, size, iters):
    model = create_model(name, input_size=size, in_channels=4, num_classes=10).eval()
    n = 16  # >= 16 rows: no batch-invariance padding in the count
    x = torch.randn(n, 4, size, size)
    kw = {"iters": iters} if name.startswith("FPDM") else {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), **kw)
    cfg = model.config
    t, d = (size // cfg.patch_size) ** 2, cfg.hidden_size
    blocks = cfg.depth if cfg.arch == "dit" else cfg.pre_depth + iters + cfg.post_depth
    attention = blocks * 4 * t * t * d  # CPU scaled_dot_product_attention is not seen by the counter
    assert counter.get_total_flops() / n == forward_flops(cfg, iters) - attention
