import itertools

import numpy as np
import pytest

from fpdm.sampling.budget import BudgetError
from fpdm.sampling.calibrate import allocate_by_table


def _brute_force(errors, total):
    steps, kmax = errors.shape
    options = [ks for ks in itertools.product(range(1, kmax + 1), repeat=steps) if sum(ks) == total]
    return min(sum(errors[j, k - 1] for j, k in enumerate(ks)) for ks in options)


def test_spends_exactly_and_is_optimal_on_random_tables():
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps, kmax = rng.integers(1, 5), rng.integers(1, 6)
        total = int(rng.integers(steps, steps * kmax + 1))
        errors = rng.random((steps, kmax)) * rng.choice([1.0, 100.0])
        alloc = allocate_by_table(errors, total)
        assert len(alloc) == steps and sum(alloc) == total and all(1 <= k <= kmax for k in alloc)
        got = sum(errors[j, k - 1] for j, k in enumerate(alloc))
        assert got == pytest.approx(_brute_force(errors, total), rel=1e-12)


def test_iterations_go_where_the_table_says_they_pay():
    # errors w_j 2^-k: an iteration at step j buys w_j 2^-(k+1), so with w = (8, 1) the first three extra
    # iterations all go to step 0 (gains 2, 1, 0.5 beat step 1's 0.25), the fourth is a tie (0.25 each)
    w = np.array([8.0, 1.0])
    errors = w[:, None] * 2.0 ** -np.arange(1, 9)[None]
    assert allocate_by_table(errors, 2) == [1, 1]
    assert allocate_by_table(errors, 5) == [4, 1]
    assert allocate_by_table(errors, 6) == [5, 1]  # tie broken toward the earlier step
    assert allocate_by_table(errors[::-1], 5) == [1, 4]
    flat = np.ones((3, 4))
    assert allocate_by_table(flat, 7) == [4, 2, 1]  # nothing to gain anywhere: earlier steps first


def test_errors_named():
    with pytest.raises(BudgetError, match="cannot be spread over 3 steps"):
        allocate_by_table(np.ones((3, 2)), 7)
    with pytest.raises(ValueError, match="finite"):
        allocate_by_table(np.array([[1.0, np.nan]]), 2)
    with pytest.raises(ValueError, match="table"):
        allocate_by_table(np.ones(3), 3)


# ------------------------------------------------------------------------------- measured schedules

import json  # noqa: E402

import torch  # noqa: E402

import fpdm.sampling.many as ss  # noqa: E402
from fpdm.config import ModelConfig  # noqa: E402
from fpdm.diffusion.gaussian import GaussianDiffusion  # noqa: E402
from fpdm.models.registry import build_model  # noqa: E402
from fpdm.sampling.calibrate import (  # noqa: E402
    calibrate,
    candidate_steps,
    check_schedule,
    read_schedule,
    step_errors,
    write_schedule,
)
from fpdm.sampling.loop import SamplerSettings, sample  # noqa: E402

CFG = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_classes=10)
DIFF = GaussianDiffusion.make(learn_sigma=True)


def _model(arch="fpdm", seed=0):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(arch=arch, **CFG))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)  # small weights: a contraction, so the iterates converge
    return m.eval()


@pytest.mark.parametrize("sampler,cfg", [("ddpm", 1.0), ("ddim", 1.0), ("ddpm", 2.5)])
def test_the_error_table_is_the_samplers_own_change_of_state(sampler, cfg):
    # Oracle: sample() run with the reference count at every step but k at the last one ends exactly
    # errors[-1, k - 1] (mean squared) away from sample() with the reference count everywhere.
    m, seeds, steps, ref = _model(), [5, 6, 7], 4, 12
    labels = torch.tensor([1, 2, 3])
    s = SamplerSettings(sampler=sampler, cfg_scale=cfg)
    table = step_errors(m, DIFF, steps, seeds, labels, s, max_iters=ref, ref_iters=ref)
    assert table.shape == (steps, ref) and (table[:, -1] == 0).all()  # k = the reference itself
    base, _ = sample(m, DIFF, labels, seeds, steps=steps, iters=ref, settings=s)
    for k in (1, 3):
        x, _ = sample(m, DIFF, labels, seeds, steps=steps, iters=[ref] * (steps - 1) + [k], settings=s)
        assert float(((x - base) ** 2).mean()) == pytest.approx(table[-1, k - 1], rel=1e-5)
    assert (np.diff(table, axis=1) <= 1e-12).all()  # a contraction: more iterations, less change


@pytest.mark.parametrize("sampler", ["dpm++2m", "heun", "unipc"])
def test_the_error_table_of_a_solver_with_history_is_per_evaluation(sampler):
    # one row per model evaluation (Heun: 2n - 1); the last one's oracle as for DDPM: sample() with the
    # reference count everywhere but k at the last evaluation ends errors[-1, k - 1] away
    from fpdm.diffusion.samplers import SAMPLERS

    m, seeds, steps, ref = _model(), [5, 6, 7], 4, 10
    labels = torch.tensor([1, 2, 3])
    s = SamplerSettings(sampler=sampler)
    evals = SAMPLERS[sampler].evaluations(steps)
    table = step_errors(m, DIFF, steps, seeds, labels, s, max_iters=ref, ref_iters=ref)
    assert table.shape == (evals, ref) and (table[:, -1] == 0).all() and table[:, 0].sum() > 0
    base, _ = sample(m, DIFF, labels, seeds, steps=steps, iters=ref, settings=s)
    for k in (1, 3):
        x, _ = sample(m, DIFF, labels, seeds, steps=steps, iters=[ref] * (evals - 1) + [k], settings=s)
        assert float(((x - base) ** 2).mean()) == pytest.approx(table[-1, k - 1], rel=1e-5)


def test_a_heun_schedule_has_one_count_per_evaluation_and_spends_its_budget():
    m = _model()
    s = SamplerSettings(sampler="heun", spacing="karras")
    sch = calibrate(m, DIFF, 35, seeds=range(4), steps=3, max_iters=8, measure_samples=2, settings=s)
    assert len(sch["iters"]) == 5 and 5 * 2 + sum(sch["iters"]) == 35  # 3 Heun steps: 5 evaluations
    check_schedule(sch, m, s, 35)
    run = ss.sample_seeds(m, DIFF, range(2), settings=s, schedule=sch)
    assert run.record["blocks_counted"] == 35 and run.record["iters_planned"] == sch["iters"]
    with pytest.raises(ValueError, match="calibrated with spacing='karras', this run has 'uniform'"):
        check_schedule(sch, m, SamplerSettings(sampler="heun"))
    assert candidate_steps(m, 35, max_iters=8, sampler="heun") == [3, 4, 5, 6]  # 5 .. 11 evaluations


def test_reuse_changes_the_table_after_the_first_step():
    m, labels = _model(), torch.tensor([0, 1])
    cold = step_errors(m, DIFF, 3, [1, 2], labels, SamplerSettings(), max_iters=4)
    warm = step_errors(m, DIFF, 3, [1, 2], labels, SamplerSettings(reuse=True), max_iters=4)
    assert np.array_equal(cold[0], warm[0]) and not np.allclose(cold[1:], warm[1:])
    with pytest.raises(ValueError, match="drop --tol"):
        step_errors(m, DIFF, 3, [1], labels[:1], SamplerSettings(tol=0.1), max_iters=4)


def test_calibrate_spends_the_budget_and_picks_the_best_scoring_step_count():
    m = _model()
    # 30 / (2 + 8) = 3 .. 30 / (2 + 1) = 10, six geometric steps: 3, 3.8, 4.9, 6.2, 7.9, 10
    assert candidate_steps(m, 30, max_iters=8) == [3, 4, 5, 6, 8, 10]
    assert candidate_steps(m, 12, max_iters=8) == [2, 3, 4]  # few enough: every one
    scores = iter([5.0, 1.0, 3.0, 4.0, 6.0, 7.0])
    seen = []

    def score(x, labels):
        seen.append(len(x))
        return next(scores)

    sch = calibrate(m, DIFF, 30, seeds=range(900, 906), score=score, max_iters=8, measure_samples=2)
    assert sch["steps"] == 4 and len(sch["iters"]) == 4 and 4 * 2 + sum(sch["iters"]) == 30
    assert seen == [6] * 6 and sch["calibration_seeds"] == [900, 905, 6]
    assert sch["cost"]["blocks"] > 0 and sch["timesteps"][0] > sch["timesteps"][-1]
    assert sch["iters"] == allocate_by_table(np.array(sch["candidates"][1]["errors"]), 22)
    with pytest.raises(ValueError, match="give --steps"):
        calibrate(m, DIFF, 30, seeds=range(4), max_iters=8)
    dit = calibrate(_model("dit"), DIFF, 12, seeds=range(3))
    assert dit["steps"] == 3 and dit["iters"] is None  # a DiT: the budget fixes the steps


def test_a_scheduled_run_spends_exactly_the_budget_and_stale_schedules_are_refused(tmp_path):
    m = _model()
    sch = calibrate(m, DIFF, 30, seeds=range(4), steps=5, max_iters=8, measure_samples=2)
    files = write_schedule(tmp_path / "s.json", sch)
    assert [f.name for f in files] == ["s.json", "s.png"]
    sch = read_schedule(tmp_path / "s.json")
    s = SamplerSettings()
    check_schedule(sch, m, s, 30)
    run = ss.sample_seeds(m, DIFF, range(3), settings=s, schedule=sch)
    assert run.record["blocks_counted"] == 30 and run.record["iters_planned"] == sch["iters"]
    assert run.record["profile"] == "calibrated" and run.record["schedule"]["weights_hash"]
    with pytest.raises(ValueError, match="calibrated for other weights"):
        check_schedule(sch, _model(seed=1), s)
    with pytest.raises(ValueError, match="--budget 36 but .* spends 30"):
        check_schedule(sch, m, s, 36)
    with pytest.raises(ValueError, match="calibrated with sampler='ddpm', this run has 'ddim'"):
        check_schedule(sch, m, SamplerSettings(sampler="ddim"))
    with pytest.raises(ValueError, match="calibrated with reuse=False"):
        check_schedule(sch, m, SamplerSettings(reuse=True))
    with pytest.raises(ValueError, match="inconsistent"):
        check_schedule({**sch, "iters": [*sch["iters"][:-1], sch["iters"][-1] + 1]}, m, s)
    text = (tmp_path / "s.json").read_text()
    (tmp_path / "s.json").write_text(text.replace('"budget": 30', '"budget": 31'))
    with pytest.raises(ValueError, match="s.json is damaged"):
        read_schedule(tmp_path / "s.json")


def test_calibrate_and_sample_from_the_command_line(tmp_path, capsys):
    from fpdm.cli.app import main

    tiny = ["--hidden-size", "32", "--depth", "4", "--num-heads", "2"]
    assert main(["train", "--model", "FPDM-T/2", *tiny, "--steps", "2", "--batch-size", "8", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    ckpt = str(tmp_path / "run" / "ckpt.pt")
    assert main(["calibrate", "--ckpt", ckpt, "--budget", "24", "--steps", "4", "--seeds", "900-903",
                 "--max-iters", "6", "--out", str(tmp_path / "s.json"), "--no-progress"]) == 0
    assert "schedule  4 steps" in capsys.readouterr().out
    assert main(["sample", "--ckpt", ckpt, "--budget", "24", "--schedule", str(tmp_path / "s.json"),
                 "--seeds", "0-2", "--out", str(tmp_path / "x"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "x.json").read_text())
    assert record["blocks_counted"] == 24 and record["profile"] == "calibrated"
    assert main(["sample", "--ckpt", ckpt, "--schedule", str(tmp_path / "s.json"), "--sampler", "ddim",
                 "--seeds", "0", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibrated with sampler='ddpm'" in err[0]
    assert main(["sample", "--ckpt", ckpt, "--schedule", str(tmp_path / "s.json"), "--iters", "2",
                 "--seeds", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--schedule fixes the steps" in capsys.readouterr().err
    assert main(["sweep", "--ckpt", ckpt, "--budget", "24", "--iters-list", "4", "--schedule",
                 str(tmp_path / "s.json"), "--seeds", "0-5", "--out", str(tmp_path / "sw"),
                 "--no-progress"]) == 0
    rows = json.loads((tmp_path / "sw.json").read_text())["rows"]
    assert [r["iters"] for r in rows] == [4, "calibrated"] and all(r["blocks_counted"] == 24 for r in rows)
