"""The solvers study's declaration and report, on synthetic results (the real run: `fpdm reproduce --study
solvers`; at `--scale tiny` it takes about 3.5 minutes here, too long for the suite)."""

from dataclasses import replace

from fpdm.diffusion.samplers import SAMPLERS
from fpdm.studies import solvers
from fpdm.studies.ratio_cells import RATIO_FULL, RATIO_TINY


def _result(spec, fid):
    s = spec.settings()
    return {"settings": s, "digits_fid": fid, "steps": 1, "blocks": s["budget"]}


def test_selection_cells_are_feasible_for_their_sampler_and_disjoint_from_the_evaluation_seeds():
    cells = solvers.selection_cells(RATIO_FULL)
    assert {c.seed_block for c in cells} == {solvers.SELECT_BLOCK}
    assert solvers.SELECT_BLOCK >= RATIO_FULL.sampling_seeds
    for c in cells:
        cost = 28 if c.train.name == "dit28" else 12 if c.train.name == "dit12" else 2 + c.iters
        assert c.budget % cost == 0 and SAMPLERS[c.sampler].steps_for(c.budget // cost), c
    # Heun's 2n - 1 evaluations: a 2-step DiT-28 budget (2 evaluations) cannot run it, a 5-step one can
    assert not [c for c in cells if c.train.name == "dit28" and c.budget == 56 and c.sampler == "heun"]
    assert [c for c in cells if c.train.name == "dit28" and c.budget == 140 and c.sampler == "heun"]
    assert solvers.feasible_ks(56, "heun", 26) == [6]  # 56 / (2 + 6) = 7 evaluations, odd: 4 Heun steps


def test_settings_are_picked_on_selection_seeds_then_evaluated_on_the_evaluation_blocks(tmp_path):
    scale = RATIO_TINY
    first = solvers.selection_cells(scale)
    # a synthetic world: DPM-Solver++ on karras is best for everyone, larger k better for FPDM
    def fid(c):
        return 100 - 10 * (c.sampler == "dpm++2m") - 5 * (c.spacing == "karras") - (c.iters or 0)
    stage_one = [_result(c, fid(c)) for c in first]
    second = solvers.stage_two_cells(scale, stage_one)
    # stage 2: the two best at the first k (ties broken by the spacings' order), over every feasible k
    assert {(c.sampler, c.spacing) for c in second if c.train.name == "fpdm"} == {("dpm++2m", "karras"),
                                                                                   ("dpm++2m", "uniform")}
    selected = stage_one + [_result(c, fid(c)) for c in second]
    cells = solvers.evaluation_cells(scale, selected)
    assert {c.seed_block for c in cells} == set(range(scale.sampling_seeds))
    best = [c for c in cells if c.train.name == "fpdm" and c.budget == 56 and c.reuse]
    assert {(c.sampler, c.spacing, c.iters) for c in best} == {("dpm++2m", "karras", 6)}  # the largest k
    results = [_result(c, fid(c) + c.seed_block) for c in cells]
    path = solvers.write_report(tmp_path, "tiny", scale, replace(scale, num_samples=4), [], selected,
                                results)
    text = path.read_text()
    assert "**each its own best**" in text and "dpm++2m/karras" in text
    assert "| **FPDM wins** |" in text and "DiT wins" not in text  # lower by k everywhere, no noise
    assert (tmp_path / "frontier.png").exists()


def test_a_uniform_spacing_cell_keeps_the_cache_key_it_had_before_spacings():
    from fpdm.studies.engine import EvalSpec, TrainSpec, cache_key

    spec = EvalSpec("smoothing", TrainSpec("fpdm", "FPDM-T/2"), 3000, 140, iters=4, seed_block=1)
    assert cache_key(spec.settings()) == "00a8f666dbd25c32"  # as computed before `spacing` existed
    karras = EvalSpec("smoothing", TrainSpec("fpdm", "FPDM-T/2"), 3000, 140, iters=4, spacing="karras")
    assert karras.settings()["spacing"] == "karras"


def test_a_digits_training_keeps_its_cache_key_now_that_studies_name_their_dataset():
    from fpdm.studies.ratio_cells import models

    m = models(RATIO_FULL)
    # as computed before TrainSpec had `data` and `builtin`: the ratio study's cache stays valid
    assert (m["dit28"].key(RATIO_FULL, 3000), m["fpdm-N10M12"].key(RATIO_FULL, 3000)) == \
        ("294cc33bb0bd00d1", "e285c53aed9f0157")
    assert replace(m["dit28"], data="fashion-mnist").key(RATIO_FULL, 3000) != "294cc33bb0bd00d1"
