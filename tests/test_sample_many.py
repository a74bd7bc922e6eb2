import pytest
import torch
from batch_dependent import BATCH_TOL

import fpdm
import fpdm.sampling.many as ss
from fpdm.config import ModelConfig
from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.models.registry import build_model
from fpdm.sampling.budget import allocate
from fpdm.sampling.loop import SamplerSettings, sample

CFG = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_classes=10)
DIFF = GaussianDiffusion.make(learn_sigma=True)


def _model(arch="fpdm"):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch=arch, **CFG))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m.eval()


def test_class_labels():
    assert ss.class_labels(10, 12).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert ss.class_labels(10, 3, label=7).tolist() == [7, 7, 7]
    assert ss.class_labels(0, 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="--label 10 is out of range"):
        ss.class_labels(10, 2, label=10)


def test_resolve_steps():
    m = _model()  # pre 1 + k + post 1
    assert ss.resolve_steps(m, 60, None, 4, "constant") == (10, [4] * 10)
    steps, per_step = ss.resolve_steps(m, 60, 10, None, "increasing")  # 60 - 10 × (1 + 1) = 40 iterations
    assert steps == 10 and per_step == allocate(40, 10, "increasing") and sum(per_step) == 40
    assert ss.resolve_steps(m, None, "ddim5", 3) == ("ddim5", 3)
    assert ss.resolve_steps(m, None, None, None) == (50, None)
    with pytest.raises(ValueError, match="plain number"):
        ss.resolve_steps(m, 60, "ddim5", None)
    with pytest.raises(ValueError, match="FPDM checkpoints only"):
        ss.resolve_steps(_model("dit"), None, 5, 2)


def test_budgeted_batches_equal_one_call_of_the_sampler(kernels):
    m = _model()
    run = fpdm.sample_seeds(m, DIFF, range(5), budget=30, iters=1, batch_size=2)
    labels = torch.arange(5) % 10
    x, rec = sample(m, DIFF, labels, list(range(5)), steps=10, iters=[1] * 10)
    # batches of 2 against one of 5: another batch size, so equal to the portable tolerance, not bit for bit
    torch.testing.assert_close(run.samples, x, atol=BATCH_TOL, rtol=0)
    assert torch.equal(run.labels, labels) and run.seeds == [0, 1, 2, 3, 4]
    assert run.record["blocks_counted_per_batch"] == [30, 30, 30] and run.record["budget"] == 30
    assert run.record["num_samples"] == 5 and run.record["seeds"] == [0, 4]


def _interrupted_at(n: int, calls: list):
    """The sampler, raising KeyboardInterrupt on its n-th batch (a Ctrl-C between batches)."""
    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)
    return flaky


def test_interrupted_run_resumes_from_its_parts(tmp_path, monkeypatch, kernels):
    m, parts = _model(), tmp_path / "x.parts"
    kw = dict(budget=30, iters=1, batch_size=2, settings=SamplerSettings(reuse=True), identity={"ckpt": "a"})
    straight = fpdm.sample_seeds(m, DIFF, range(7), **kw)
    calls = []
    monkeypatch.setattr(fpdm.sampling.loop, "sample", _interrupted_at(3, calls))
    with pytest.raises(KeyboardInterrupt):
        ss.sample_seeds(m, DIFF, range(7), parts=parts, **kw)
    assert ss.count_parts(parts) == 2
    calls.clear()
    resumed = ss.sample_seeds(m, DIFF, range(7), parts=parts, **kw)
    assert len(calls) == 2  # only the two missing batches of four
    assert torch.equal(resumed.samples, straight.samples)  # the same batches: bit for bit on any machine
    with pytest.raises(ValueError, match="other settings"):  # another checkpoint: not these batches
        ss.sample_seeds(m, DIFF, range(7), parts=parts, **{**kw, "identity": {"ckpt": "b"}})
    ss.remove_parts(parts)
    assert not parts.exists()


def test_a_run_resumes_with_another_batch_size(tmp_path, monkeypatch, kernels):
    m, parts = _model(), tmp_path / "x.parts"
    kw = dict(budget=30, iters=1, identity={"ckpt": "a"})
    straight = fpdm.sample_seeds(m, DIFF, range(7), batch_size=2, **kw)
    calls = []

    def flaky(model, diffusion, labels, seeds, **kwargs):
        calls.append(list(seeds))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sample(model, diffusion, labels, seeds, **kwargs)

    monkeypatch.setattr(fpdm.sampling.loop, "sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        ss.sample_seeds(m, DIFF, range(7), parts=parts, batch_size=2, **kw)
    calls.clear()
    resumed = ss.sample_seeds(m, DIFF, range(7), parts=parts, batch_size=5, **kw)
    assert calls == [[4, 5, 6]]  # the finished batches kept, the rest in one batch of the new size
    assert resumed.record["batch_sizes"] == [2, 2, 3] and resumed.record["num_samples"] == 7
    torch.testing.assert_close(resumed.samples, straight.samples, atol=BATCH_TOL, rtol=0)
    assert torch.equal(resumed.samples[:4], straight.samples[:4])  # the kept batches are those samples


def test_batches_plan_around_the_finished_ones():
    assert ss.plan_batches(10, 4, []) == [(0, 4), (4, 8), (8, 10)]
    assert ss.plan_batches(10, 4, [(2, 5), (8, 9)]) == [(0, 2), (2, 5), (5, 8), (8, 9), (9, 10)]
    assert ss.plan_batches(3, 8, [(0, 3)]) == [(0, 3)]


def test_finished_ranges_leave_overlapping_or_foreign_batches_aside(tmp_path):
    for name in ("0000000-0000002.pt", "0000001-0000003.pt", "0000004-0000009.pt", "00003.pt", "x-y.pt"):
        (tmp_path / name).write_bytes(b"")
    assert list(ss.finished_ranges(tmp_path, 8)) == [(0, 2)]  # (1, 3) overlaps, (4, 9) is past 8 seeds


def test_discard_empty_parts(tmp_path):
    parts = ss.parts_folder(tmp_path / "run")
    assert parts == tmp_path / "run.parts"
    parts.mkdir()
    (parts / "settings.json").write_text("{}")
    ss.discard_empty_parts(parts)
    assert not parts.exists()


def split_first_batch_mean(m, kw):
    return ss.sample_seeds(m, DIFF, range(3), batch_size=3, **kw).record["iters_run_mean"]


def test_the_merged_record_describes_every_batch_not_the_first(kernels):
    # per-sample --tol decisions do not depend on the batch, so the whole run's figures must not either
    m, kw = _model(), dict(steps=4, iters=6, settings=SamplerSettings(tol=0.002))
    one = ss.sample_seeds(m, DIFF, range(7), batch_size=7, **kw).record
    split = ss.sample_seeds(m, DIFF, range(7), batch_size=3, **kw).record
    assert split["iters_run_mean"] != split_first_batch_mean(m, kw)  # the first batch alone would differ
    for key in ("iters_run", "iters_run_mean", "blocks_counted", "flops_per_sample"):
        assert split[key] == pytest.approx(one[key]), key
    assert split["blocks_counted"] == 4 * (1 + 6 + 1)


def test_summary_names_the_feature_network_of_the_metrics():
    rec = {"num_samples": 2, "seeds": [0, 1], "arch": "fpdm", "steps": 4, "settings": {},
           "blocks_counted": 12, "eval": {"fashion_fid": 12.5, "fashion_fid_se": 1.0, "precision": 0.5,
                                          "recall": 0.5, "class_consistency": 0.9}}
    lines = ss.summary_lines(rec, "x")
    assert any(ln.strip().startswith("fashion  FID 12.50 ± 1.00") for ln in lines)
    rec["eval"] = {"digits_fid": 3.0, "precision": 0.5, "recall": 0.5}
    assert any(ln.strip().startswith("digits  FID 3.00 ± nan") for ln in ss.summary_lines(rec, "x"))


COMBOS = [  # (arch, budget, steps, iters, profile, settings): every accepted kind of budgeted request
    ("dit", 36, None, None, "constant", {}),
    ("fpdm", 30, None, 4, "constant", {}),  # budgets a Heun count can spend too (2n - 1 evaluations)
    ("fpdm", 45, 5, None, "increasing", {}),
    ("fpdm", 36, None, 2, "constant", {"reuse": True}),
    ("fpdm", 45, 5, None, "constant", {"tol": 0.05}),
    ("fpdm", 45, 5, None, "constant", {"tol": 0.05, "solver": "anderson", "reuse": True}),
]


@pytest.mark.parametrize("sampler", sorted(fpdm.sampling.loop.SAMPLERS))
@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"{c[0]}-{c[1]}-{c[4]}-{'-'.join(c[5]) or 'plain'}")
def test_every_sampler_spends_the_budget_exactly(sampler, combo):
    arch, budget, steps, iters, profile, extra = combo
    settings = SamplerSettings(sampler=sampler, **extra)
    run = ss.sample_seeds(_model(arch), DIFF, range(3), budget=budget, steps=steps, iters=iters,
                          profile=profile, settings=settings, batch_size=2)
    assert run.record["blocks_counted"] == budget and run.record["blocks_counted_per_batch"] == [budget] * 2
    evals = fpdm.sampling.loop.STEP_RULES[sampler].evaluations(run.record["steps"])
    assert run.record["evaluations"] == evals


def test_heun_budgets_count_evaluations_and_name_the_feasible_ones():
    from fpdm.sampling.budget import BudgetError, feasible_pairs, plan_budget

    cfg = _model().config  # an FPDM evaluation: 1 + k + 1 blocks
    plan = plan_budget(cfg, 30, iters=4, sampler="heun")  # 5 evaluations = 3 Heun steps
    assert plan.steps == 3 and plan.iters == (4,) * 5
    with pytest.raises(BudgetError, match=r"budget 24 is 4 evaluations of 6 blocks .* which no number of "
                                          r"heun steps makes.* feasible nearby: 18 \(2 steps\) or 30 \(3 "
                                          r"steps\)"):
        plan_budget(cfg, 24, iters=4, sampler="heun")
    assert (4, 3) in feasible_pairs(cfg, 30, sampler="heun") and (4, 5) in feasible_pairs(cfg, 30)
    dit = _model("dit").config
    assert plan_budget(dit, 20, sampler="heun").steps == 3  # 5 evaluations of depth 4
    with pytest.raises(BudgetError, match="which no number of heun steps makes"):
        plan_budget(dit, 16, sampler="heun")


def test_deterministic_samplers_refuse_eta_and_euler_refuses_zero_terminal_snr():
    m = _model()
    for sampler in ("dpm++2m", "heun", "euler", "ddpm"):
        with pytest.raises(ValueError, match="--eta 0.5 applies to --sampler ddim only"):
            ss.check_settings(m, SamplerSettings(sampler=sampler, eta=0.5), budget=None, steps=4,
                              profile="constant", label=None, n_steps=4, per_step=2)
    zsnr = GaussianDiffusion.make(learn_sigma=True, zero_terminal_snr=True, prediction="v")
    with pytest.raises(ValueError, match="--sampler heun integrates in σ"):
        ss.sample_seeds(m, zsnr, range(2), steps=4, iters=2, settings=SamplerSettings(sampler="heun"))
    ss.sample_seeds(m, zsnr, range(2), steps=4, iters=2, settings=SamplerSettings(sampler="dpm++2m"))


@pytest.mark.parametrize("sampler", ["dpm++2m", "unipc3", "heun"])
def test_a_multistep_history_stays_in_its_batch_and_its_parts(sampler, tmp_path, monkeypatch, kernels):
    """A seed's image does not depend on its batch (batch 1 against 7): the solver's history is each
    batch's own; and a run interrupted between batches resumes to the bit-identical images."""
    m = _model()
    kw = dict(steps=5, iters=2, settings=SamplerSettings(sampler=sampler))
    whole = ss.sample_seeds(m, DIFF, range(7), batch_size=7, **kw).samples
    alone = ss.sample_seeds(m, DIFF, range(7), batch_size=1, **kw).samples
    torch.testing.assert_close(alone, whole, atol=BATCH_TOL, rtol=0)
    straight = ss.sample_seeds(m, DIFF, range(7), batch_size=3, **kw).samples
    monkeypatch.setattr(fpdm.sampling.loop, "sample", _interrupted_at(2, []))
    with pytest.raises(KeyboardInterrupt):
        ss.sample_seeds(m, DIFF, range(7), batch_size=3, parts=tmp_path / "p.parts", **kw)
    monkeypatch.setattr(fpdm.sampling.loop, "sample", sample)
    resumed = ss.sample_seeds(m, DIFF, range(7), batch_size=3, parts=tmp_path / "p.parts", **kw)
    assert torch.equal(resumed.samples, straight)


def test_the_spacing_chooses_the_timesteps_the_record_lists():
    from fpdm.diffusion.schedules import spaced_timesteps

    run = ss.sample_seeds(_model(), DIFF, range(2), steps=6, iters=2,
                          settings=SamplerSettings(sampler="unipc", spacing="karras"))
    assert run.record["timesteps"] == spaced_timesteps(DIFF.alphas_cumprod, 6, "karras")[::-1]
    assert run.record["settings"]["spacing"] == "karras"
    assert "spacing" not in ss.settings_fingerprint(SamplerSettings())  # older parts folders still resume
