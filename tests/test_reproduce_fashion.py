"""The Fashion-MNIST study: its declaration (models, recipes, feasible cells, costs) on its own, and the
whole `fpdm reproduce --study fashion --scale smoke` run end to end on the real Fashion-MNIST files (tiny
models, about a minute on 2 cores), whose report must have every verdict row, plot and number."""

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from conftest import load_tool

from fpdm.cli import main
from fpdm.diffusion.samplers import SAMPLERS
from fpdm.studies import fashion, fashion_cells, publish
from fpdm.studies.engine import EvalSpec, TrainSpec, pick_cell, schedule_path
from fpdm.studies.fashion_cells import FASHION_FULL, FASHION_SMOKE

REAL = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
ROOT = Path(__file__).parents[1]


def test_full_scale_cells_spend_their_budget_exactly_and_select_on_disjoint_seeds():
    cells = fashion_cells.pilot_cells(FASHION_FULL)
    assert {c.seed_block for c in cells} == {fashion_cells.SELECT_BLOCK}
    assert fashion_cells.SELECT_BLOCK >= FASHION_FULL.max_seed_blocks  # evaluation blocks never reach it
    for c in cells:
        cost = 28 if c.train.name == "dit28" else 2 + c.iters
        assert c.budget % cost == 0 and SAMPLERS[c.sampler].steps_for(c.budget // cost), c
    # DiT-28 cannot run Heun at 2 steps (its 2n - 1 evaluations), can at 5
    assert not [c for c in cells if c.train.name == "dit28" and c.budget == 56 and c.sampler == "heun"]
    assert [c for c in cells if c.train.name == "dit28" and c.budget == 140 and c.sampler == "heun"]
    assert {c.train.data for c in cells} == {"fashion-mnist"}


def test_the_full_scale_samples_the_builtins_it_was_trained_as_and_refuses_a_mismatched_recipe():
    m = fashion_cells.models(FASHION_FULL)
    assert (m["fpdm"].builtin, m["dit28"].builtin, m["fpdm-N10M12"].builtin) == (
        "fashion-fpdm", "fashion-dit", "fashion-fpdm-n10m12")
    for name in ("fpdm", "dit28", "fpdm-N10M12"):
        fashion_cells.check_builtin(m[name], FASHION_FULL)  # the shipped weights' recorded recipe matches
    wrong = TrainSpec("fpdm-N10M12", "FPDM-T/4", train=m["fpdm-N10M12"].train, data="fashion-mnist",
                      builtin="fashion-fpdm")
    with pytest.raises(ValueError, match="fp_max_no_grad 3 .*study: 10"):
        fashion_cells.check_builtin(wrong, FASHION_FULL)
    assert not [s for s in m.values() if s.builtin and "seed" in dict(s.train)]


def test_training_cost_estimates_order_the_ablations_by_their_gradient_iterations():
    a = fashion_cells.ablations(FASHION_FULL)
    cost = {name: fashion_cells.train_cost_s(spec, 1000) for name, spec in a.items()}
    assert cost["jfb-N6-M6"] < cost["sjfb-N6-M6"] < cost["multistep-N6-M6"]
    assert cost["sjfb-N3-M3"] < cost["sjfb-N6-M6"] < cost["sjfb-N12-M12"] < cost["sjfb-N24-M24"]
    # the built-in's measured 587 ms per step is what the unit was calibrated on
    assert fashion_cells.train_cost_s(fashion_cells._fpdm("x", FASHION_FULL, "sjfb", 3, 3), 1) == \
        pytest.approx(0.587, abs=1e-3)
    assert fashion_cells.train_cost_s(fashion_cells.models(FASHION_FULL)["fpdm"], 10_000) == 0.0  # built-in


def test_the_study_plan_fits_the_issues_cpu_budget():
    p = fashion.plan(FASHION_FULL, Path("/nonexistent"))
    assert p["total_cpu_h"] <= 30, p
    assert "fpdm" not in p["trainings"] and "fpdm-N10M12" not in p["trainings"]
    assert "fpdm-N10M12-seed1" in p["trainings"]  # second seeds are trained by the study itself


def test_a_part_trained_model_costs_the_plan_only_its_remaining_steps(tmp_path):
    fresh = fashion.plan(FASHION_FULL, tmp_path)
    spec, steps = next((s, n) for s, n in fashion_cells.trainings(FASHION_FULL)
                       if s.name == "fpdm-N10M12-seed1")
    log = tmp_path / "train" / spec.key(FASHION_FULL, steps) / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"step": steps // 4, "ms_per_step": 900.0}) + "\n")
    resumed = fashion.plan(FASHION_FULL, tmp_path)
    assert (fresh["part_trained"], resumed["part_trained"]) == (0, 1)
    saved = fashion_cells.train_cost_s(spec, steps) / 4 / 3600
    assert fresh["train_cpu_h"] - resumed["train_cpu_h"] == pytest.approx(saved)


def test_a_scale_of_another_study_is_refused(capsys):
    assert main(["reproduce", "--study", "fashion", "--scale", "quick", "--out", "/nonexistent"]) == 2
    assert "full and smoke" in capsys.readouterr().err
    assert main(["reproduce", "--study", "ratio", "--scale", "smoke", "--out", "/nonexistent"]) == 2


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_plan_prints_the_cost_and_runs_nothing(tmp_path, capsys):
    args = ["reproduce", "--study", "fashion", "--scale", "smoke", "--plan", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "13 trainings to run" in out and "CPU-h" in out and "trainings left, in the order they run" in out
    assert list(tmp_path.iterdir()) == []  # nothing trained, sampled or recorded


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("fashion-study")
    assert main(["reproduce", "--study", "fashion", "--scale", "smoke", "--out", str(out), "--workers",
                 "2"]) == 0
    return out / "fashion"


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_smoke_run_writes_every_verdict_row_plot_and_grid(smoke):
    data = json.loads((smoke / "results.json").read_text())
    text = (smoke / "README.md").read_text()
    keys = [v["key"] for v in data["verdicts"]]
    assert keys == list(fashion.DIGITS)  # one row per finding, the digits verdict beside each
    for v in data["verdicts"]:
        assert f"| {v['finding']} |" in text and v["class"] in ("holds", "partly", "fails", "no verdict")
    for plot in ("frontier.png", "smoothing.png", "table5.png", "training.png", "fig5.png"):
        assert (smoke / plot).stat().st_size > 1000 and f"({plot})" in text
    grids = sorted(p.name for p in (smoke / "grids").glob("*.png"))
    # DiT-28 at its best DDPM spacing beside FPDM at several k (a spacing other than uniform is named)
    assert [g for g in grids if g.startswith("dit28")]
    assert len({g.split("-k")[1] for g in grids if "-k" in g}) >= 2
    assert data["commit"] and data["machine"] and data["plan"]["total_cpu_h"] > 0
    assert all("task_wall_s" in r for r in data["cells"])  # each cell's measured cost is kept
    assert len(data["invocations"]) == 1 and 0 < data["wall_s_total"] <= data["wall_s"] + 5
    assert "over the study's 1 run (`invocations.jsonl`)" in text
    # the command that reproduces it, as run
    assert data["command"] == f"fpdm reproduce --study fashion --scale smoke --out {smoke.parent} --workers 2"
    assert f"Command: `{data['command']}`" in text
    assert "## How much picking on the selection seeds mattered" in text
    assert {e["model"] for e in data["selection_effect"]} >= {"dit28", "fpdm", "FPDM − DiT-28"}


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fig5_shows_dit28_beside_each_fpdm_at_several_k_on_the_cells_own_first_seeds(smoke):
    """Fig. 5's columns are DiT-28 then one FPDM at every k of its grid, and each column's images are the
    cell's own first samples (the same seeds and classes as a 20-sample cell, up to one grey level)."""
    import numpy as np

    from fpdm.common.images import to_uint8
    from fpdm.sampling.many import class_labels, sample_seeds
    from fpdm.studies.engine import cell_model, strip_path

    data = json.loads((smoke / "results.json").read_text())
    assert "fig5.png" in data["plots"] and "(fig5.png)" in (smoke / "README.md").read_text()
    figure = fashion_cells.figure_cells(FASHION_SMOKE, data["selection"])
    assert list(figure) == list(fashion_cells.FPDMS)
    for name, cols in figure.items():
        assert cols[0].train.name == "dit28" and {c.train.name for c in cols[1:]} == {name}
        assert len({c.iters for c in cols[1:]}) == len(cols) - 1 >= 2
    c = figure["fpdm"][1]
    strip = np.load(strip_path(smoke, c, FASHION_SMOKE, fashion.FIG5_ROWS))
    model, diffusion = cell_model(c, FASHION_SMOKE, smoke)
    run = sample_seeds(model, diffusion, range(20), labels=class_labels(10, 20), budget=c.budget,
                       iters=c.iters, batch_size=20)
    assert strip.shape == (10, 32, 32, 1)
    assert np.abs(to_uint8(run.samples)[:10].astype(int) - strip).max() <= 1


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_plan_counts_the_later_cells_once_the_selection_fixes_them(smoke, tmp_path):
    """Resumed late, the plan costs the evaluation cells still missing one by one (no longer the pilot-based
    estimate), and nothing once every cell is cached."""
    import shutil

    from fpdm.studies.engine import eval_path

    root = tmp_path / "fashion"
    shutil.copytree(smoke, root)
    p = fashion.plan(FASHION_SMOKE, root)
    assert p["later_basis"] == "counted" and p["total_cpu_h"] == 0
    data = json.loads((root / "results.json").read_text())
    cells = fashion_cells.evaluation_cells(FASHION_SMOKE, data["selection"])
    for c in cells[:2]:
        eval_path(root, c, FASHION_SMOKE).unlink()
    p = fashion.plan(FASHION_SMOKE, root)
    assert p["later_basis"] == fashion.STAND_IN
    # the two cells, and at most the cells derived from the results (which the stand-ins may move)
    expected = sum(fashion_cells.cell_cost_s(c, FASHION_SMOKE.num_samples) for c in cells[:2])
    derived = sum(fashion_cells.cell_cost_s(c, FASHION_SMOKE.num_samples) for c in fashion.derived_cells(
        FASHION_SMOKE, data["selection"], data["cells"], cells))
    assert expected - 1e-9 <= p["later_cpu_h_estimate"] * 3600 <= expected + derived + 1e-9
    sel = replace(FASHION_SMOKE, num_samples=FASHION_SMOKE.select_samples)
    first = fashion_cells.pilot_cells(FASHION_SMOKE)[0]
    eval_path(root, first, sel).unlink()
    p = fashion.plan(FASHION_SMOKE, root)
    assert p["later_basis"] == fashion.STAND_IN and p["pilot_cells_left"] == 1


def test_cell_costs_count_what_the_full_run_measured():
    m = fashion_cells.models(FASHION_FULL)
    n = FASHION_FULL.train_steps
    fp = EvalSpec("fashion", m["fpdm"], n, 140, iters=3)
    dit = EvalSpec("fashion", m["dit28"], n, 140)
    # per sample and block: FPDM's injection MLP makes its blocks dearer; Anderson's solve ≈ doubles them
    assert fashion_cells.cell_cost_s(dit, 500) < fashion_cells.cell_cost_s(fp, 500) < \
        fashion_cells.cell_cost_s(replace(fp, solver="anderson"), 500)
    assert fashion_cells.cell_cost_s(replace(fp, iters=None, calibrated=True), 500) == \
        fashion_cells.cell_cost_s(fp, 500)  # an FPDM cell still, its schedule counted apart
    assert fashion_cells.calibration_cost_s(280) == 2 * fashion_cells.calibration_cost_s(140) > 0


def test_a_worker_passes_over_a_cell_whose_schedule_another_is_measuring(tmp_path):
    """The two seed blocks of a calibrated cell come side by side: the second must not start while the
    first measures their shared schedule (it would wait minutes on it), but may once it is stored."""
    m = fashion_cells.models(FASHION_SMOKE)
    first = EvalSpec("fashion", m["fpdm"], FASHION_SMOKE.train_steps, 56, calibrated=True)
    second, other = replace(first, seed_block=1), EvalSpec("fashion", m["fpdm"], FASHION_SMOKE.train_steps,
                                                           56, iters=3)
    path = schedule_path(tmp_path, first, FASHION_SMOKE)
    assert path == schedule_path(tmp_path, second, FASHION_SMOKE)
    waiting = [(1, second), (2, other)]
    everything = lambda c: True  # noqa: E731 -- every training finished
    assert pick_cell(waiting, everything, set(), tmp_path, FASHION_SMOKE) == 0
    assert pick_cell(waiting, everything, {path}, tmp_path, FASHION_SMOKE) == 1
    assert pick_cell([(1, second)], everything, {path}, tmp_path, FASHION_SMOKE) is None
    assert pick_cell(waiting, lambda c: c is not other, {path}, tmp_path, FASHION_SMOKE) is None
    path.parent.mkdir(parents=True)
    path.write_text("{}")  # measured: its cells need not wait
    assert pick_cell(waiting, everything, {path}, tmp_path, FASHION_SMOKE) == 0


def test_a_verdict_pair_within_two_standard_errors_earns_more_seed_blocks():
    """Table 3 on made-up FIDs: N = M = 3 − 12 hangs on less than 2 s.e. (both cells get blocks up to
    `max_seed_blocks`); 3 − 24 does not (neither gets any: N = 3's come from the close pair only)."""
    a = fashion_cells.ablations(FASHION_FULL)
    fids = {3: (100.0, 102.0), 6: (110.0, 111.0), 12: (101.0, 101.5), 24: (200.0, 201.0)}
    steps = FASHION_FULL.ablation_steps
    results = [{"settings": EvalSpec("fashion", a[f"sjfb-N{n}-M{n}"], steps, 280, iters=5,
                                     seed_block=b).settings(), "fashion_fid": fid}
               for n, pair in fids.items() for b, fid in enumerate(pair)]
    got = fashion.verdict_close_calls(FASHION_FULL, [], results)
    more = range(FASHION_FULL.sampling_seeds, FASHION_FULL.max_seed_blocks)
    assert more and sorted((c.train.name, c.seed_block) for c in got) == sorted(
        (f"sjfb-N{n}-M{n}", b) for n in (3, 12) for b in more)
    assert {c.iters for c in got} == {5} and {c.budget for c in got} == {280}
    # the extra blocks are the same cells: the settings they were made from, another seed block
    assert all(replace(c, seed_block=0).settings() == results[0 if c.train.name.endswith("N3-M3") else 4][
        "settings"] for c in got)
    results[4]["fashion_fid"], results[5]["fashion_fid"] = 150.0, 151.0  # 3 − 12 decisive too: nothing more
    assert fashion.verdict_close_calls(FASHION_FULL, [], results) == []


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_every_cached_cell_is_found_again_from_its_settings(smoke):
    """Close calls rebuild a cell from its result (then add seed blocks): the rebuilt cell must have the
    cache key the result is stored under, calibrated and matched cells included."""
    from fpdm.studies.engine import eval_path

    data = json.loads((smoke / "results.json").read_text())
    assert any(r["settings"].get("calibrated") for r in data["cells"])
    for r in data["cells"]:
        spec = fashion.spec_of(FASHION_SMOKE, r["settings"])
        assert eval_path(smoke, spec, FASHION_SMOKE).exists(), r["settings"]
    with pytest.raises(ValueError, match="do not come from one cell"):
        fashion.spec_of(FASHION_SMOKE, data["cells"][0]["settings"] | {"unknown": 1})


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_plan_counts_a_missing_schedule_once_for_all_its_cells(smoke, tmp_path):
    import shutil

    from fpdm.studies.engine import eval_path

    root = tmp_path / "fashion"
    shutil.copytree(smoke, root)
    data = json.loads((root / "results.json").read_text())
    cells = fashion_cells.evaluation_cells(FASHION_SMOKE, data["selection"])
    first = next(c for c in cells if c.calibrated)
    path = schedule_path(root, first, FASHION_SMOKE)
    mine = [c for c in cells if c.calibrated and schedule_path(root, c, FASHION_SMOKE) == path]
    assert len(mine) == FASHION_SMOKE.sampling_seeds and path.exists()
    for c in mine:
        eval_path(root, c, FASHION_SMOKE).unlink()
    before = fashion.plan(FASHION_SMOKE, root)["later_cpu_h_estimate"] * 3600
    path.unlink()
    after = fashion.plan(FASHION_SMOKE, root)["later_cpu_h_estimate"] * 3600
    assert after - before == pytest.approx(fashion_cells.calibration_cost_s(first.budget))


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_every_number_of_the_report_is_in_results_json(smoke):
    """Every decimal number the report prints, in every section, is in results.json as printed; the verdict
    table's in the verdicts themselves."""
    data = json.loads((smoke / "results.json").read_text())
    text = (smoke / "README.md").read_text()
    table = text.split("## Verdicts", 1)[1].split("## Side by side", 1)[0]
    verdicts = json.dumps(data["verdicts"], ensure_ascii=False)
    numbers = re.findall(r"[-+]?\d+\.\d+", table)
    assert len(numbers) > 10
    assert [n for n in numbers if n not in verdicts] == []
    stored = json.dumps(data, ensure_ascii=False)
    everywhere = re.findall(r"[-+]?\d+\.\d+", text)
    assert len(everywhere) > len(numbers) + 20
    assert [n for n in everywhere if n not in stored] == []


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_second_run_resumes_from_the_cache_without_new_work(smoke, capsys):
    before = sorted(p.name for p in (smoke / "eval").glob("*.json"))
    assert main(["reproduce", "--study", "fashion", "--scale", "smoke", "--out", str(smoke.parent),
                 "--workers", "1"]) == 0
    assert sorted(p.name for p in (smoke / "eval").glob("*.json")) == before
    assert "0 trainings to run" in capsys.readouterr().out
    data = json.loads((smoke / "results.json").read_text())
    assert len(data["invocations"]) == 2 and data["wall_s_total"] > data["wall_s"]  # both runs' wall time


def _result(spec, fid):
    s = spec.settings()
    fpdm = spec.iters is not None or s.get("calibrated") or spec.steps is not None
    return {"settings": s, "fashion_fid": fid, "steps": 1, "blocks": s["budget"], "iters_run": [1],
            "flops_per_sample": s["budget"] * (1.2 if fpdm else 1.0), "sample_wall_s": 0.5 if fpdm else 1.0,
            "task_wall_s": 0.1}


def _world(fpdm_gain, profile_gain, noise=0.0, scale=FASHION_SMOKE):
    """Synthetic results on every cell of `scale`: FPDM `fpdm_gain` lower than DiT-28 (± `noise` alternating
    over the blocks), the increasing profile `profile_gain` lower than constant, block b adding b / 10 to
    everything."""

    def fid(c):
        base = 60.0 if c.train.name == "dit28" else 60.0 - fpdm_gain + noise * (-1) ** c.seed_block
        base -= profile_gain * (c.profile == "increasing") - profile_gain * (c.profile == "decreasing")
        return base + 0.1 * c.seed_block + 0.01 * (c.iters or 0)

    pilot = [_result(c, fid(c)) for c in fashion_cells.pilot_cells(scale)]
    selected = pilot + [_result(c, fid(c)) for c in fashion_cells.grid_cells(scale, pilot)]
    cells = list(dict.fromkeys(fashion_cells.evaluation_cells(scale, selected)))
    results = [_result(c, fid(c)) for c in cells]
    matched = fashion_cells.matched_cells(scale, selected, results)
    results += [_result(c, fid(c)) for c in fashion_cells.matched_eval_cells(scale, matched)]
    return {v["key"]: v for v in fashion.verdicts(scale, selected, results)}


def test_wall_clock_matching_is_per_block_when_one_cell_has_more_blocks():
    # the full run: DiT-28 at 560 blocks had 2 seed blocks, FPDM's best 4 (close calls), and summed
    # wall-clocks matched FPDM to 250 blocks at half the DiT's per-block cost instead of ≈ 510
    scale = FASHION_SMOKE
    pilot = [_result(c, 50.0) for c in fashion_cells.pilot_cells(scale)]
    selected = pilot + [_result(c, 50.0) for c in fashion_cells.grid_cells(scale, pilot)]
    cells = list(dict.fromkeys(fashion_cells.evaluation_cells(scale, selected)))
    results = [_result(c, 50.0) for c in cells]
    budget = scale.budgets[0]
    name, config = fashion_cells.best_fpdm(selected, budget)
    mine = fashion_cells.config_rows(results, name, budget, config)
    results += [_result(replace(fashion.spec_of(scale, mine[0]["settings"]), seed_block=b), 50.0)
                for b in range(scale.sampling_seeds, scale.max_seed_blocks)]
    assert len(fashion_cells.config_rows(results, name, budget, config)) == scale.max_seed_blocks > len(mine)
    wall = next(e for e in fashion_cells.matched_cells(scale, selected, results)
                if e["kind"] == "wall" and e["budget"] == budget)
    assert wall["ratio"] == pytest.approx(2.0)  # 1.0 s a DiT-28 block against 0.5 s an FPDM one


def test_verdicts_follow_the_paired_differences_of_a_synthetic_world():
    good = _world(fpdm_gain=10.0, profile_gain=1.0)
    assert good["headline"]["class"] == "holds"
    assert "**-9.98 ± 0.00** (FPDM wins)" in good["headline"]["numbers"]
    assert good["table5"]["class"] == "holds"
    # 1.2x the FLOPs per block: within 56 / 1.2 = 46.7 blocks, whole k = 2 evaluations of 4 blocks: 44
    assert good["equal-flops"]["class"] == "holds"
    assert "at 44 blocks (cost ratio 0.833)" in good["equal-flops"]["numbers"]
    # half DiT-28's wall-clock: already cheaper, so re-run at the same 56 blocks, never above
    assert "at 56 blocks (cost ratio 2.000)" in good["equal-wall"]["numbers"]
    bad = _world(fpdm_gain=-10.0, profile_gain=-1.0)
    assert bad["headline"]["class"] == "fails" and "DiT wins" in bad["headline"]["numbers"]
    assert bad["table5"]["class"] == "fails"
    # the smallest k of the grid is best here (FID grows 0.01 per iteration): Fig. 4 fails (4-8 not best)
    assert good["fig4"]["class"] == "fails" and "best k = 2" in good["fig4"]["numbers"]
    # a gain smaller than twice its paired s.e. is a tie, and a tie is no win
    tie = _world(fpdm_gain=0.5, profile_gain=1.0, noise=1.0)
    assert tie["headline"]["class"] == "fails" and "(tie)" in tie["headline"]["numbers"]
    assert "**-0.48 ± 1.00**" in tie["headline"]["numbers"]


def test_the_report_says_how_much_picking_on_the_evaluation_seeds_would_have_flattered():
    """Selection seeds prefer FPDM's smallest k, the evaluation seeds its largest (0.5 FID per iteration):
    the selection pick costs 0.5 × (12 − 2) = 5 on the evaluation seeds, which picking there would hide;
    DiT-28 has no k and loses nothing."""
    scale = FASHION_SMOKE
    select = fashion_cells.SELECT_BLOCK

    def fid(c):
        k = c.iters or 0
        base = 60.0 + 0.1 * c.seed_block
        return base + 0.01 * k if c.seed_block == select else base - 0.5 * k

    pilot = [_result(c, fid(c)) for c in fashion_cells.pilot_cells(scale)]
    selected = pilot + [_result(c, fid(c)) for c in fashion_cells.grid_cells(scale, pilot)]
    results = [_result(c, fid(c)) for c in dict.fromkeys(fashion_cells.evaluation_cells(scale, selected))]
    effect = {(e["budget"], e["model"]): e for e in fashion.selection_effect(scale, selected, results)}
    budget = scale.budgets[0]
    ks = fashion_cells.feasible_ks(budget, "ddpm", scale.k_grid)
    fp = effect[(budget, "fpdm")]
    assert fp["selection_pick"].endswith(f"k={min(ks)}") and fp["evaluation_pick"].endswith(f"k={max(ks)}")
    assert fp["flattery"] == pytest.approx(0.5 * (max(ks) - min(ks)))
    assert effect[(budget, "dit28")]["flattery"] == 0.0
    gap = effect[(budget, "FPDM − DiT-28")]
    assert gap["selection_gap"] == pytest.approx(-0.5 * min(ks))
    assert gap["evaluation_gap"] == pytest.approx(-0.5 * max(ks))


def test_the_full_scales_later_stages_fit_the_cpu_budget_on_a_synthetic_world(tmp_path):
    """The stages after the pilot (k grid, evaluation blocks, equal-cost and close-call cells) at full scale,
    on synthetic results: they run, decide every verdict, with the trainings and the pilot their estimated
    cost stays within the issue's 30 CPU-hours, and the report and front page are written from them."""
    scale = FASHION_FULL

    def fid(c):
        return (60.0 if c.train.name == "dit28" else 55.0) + 0.1 * c.seed_block + 0.01 * (c.iters or 0)

    pilot_specs = fashion_cells.pilot_cells(scale)
    pilot = [_result(c, fid(c)) for c in pilot_specs]
    grid = [c for c in dict.fromkeys(fashion_cells.grid_cells(scale, pilot)) if c not in set(pilot_specs)]
    selected = pilot + [_result(c, fid(c)) for c in grid]
    cells = list(dict.fromkeys(fashion_cells.evaluation_cells(scale, selected)))
    results = [_result(c, fid(c)) for c in cells]
    extra = list(dict.fromkeys(
        fashion_cells.matched_eval_cells(scale, fashion_cells.matched_cells(scale, selected, results))
        + fashion_cells.close_calls(scale, selected, results)))
    results += [_result(c, fid(c)) for c in extra if c not in set(cells)]
    assert {v["class"] for v in fashion.verdicts(scale, selected, results)} <= {"holds", "partly", "fails"}

    def hours(specs, samples):
        return sum(fashion_cells.cell_cost_s(c, samples) for c in specs) / 3600

    p = fashion.plan(scale, Path("/nonexistent"))
    total = (p["train_cpu_h"] + hours(pilot_specs, scale.select_samples) + hours(grid, scale.select_samples)
             + hours(cells + extra, scale.num_samples))
    assert len(cells) > 100 and total <= 30, (len(cells), total)
    # the report and the front page at full scale (four budgets; the smoke run has one)
    summaries = [{"name": s.name, "step": n, "parameters": 1, "ms_per_step": 1.0, "builtin": s.builtin}
                 for s, n in fashion_cells.trainings(scale)]
    meta = {"commit": "c", "machine": "m", "wall_s": 1.0, "wall_s_total": 3600.0, "invocations": [{}],
            "plan": p}
    fashion.write_report(tmp_path, "full", scale, summaries, selected, results, meta)
    data = json.loads((tmp_path / "results.json").read_text())
    head = next(v for v in data["verdicts"] if v["key"] == "headline")
    assert [e["budget"] for e in head["per_budget"]] == list(scale.budgets)
    report = (tmp_path / "README.md").read_text()
    glance = report.split("## The headline at a glance")[1].split("## Verdicts")[0]
    assert all(publish.headline_row(e) in glance for e in head["per_budget"])  # the front page's rows
    assert all((tmp_path / plot).stat().st_size > 1000 for plot in data["plots"]) and len(data["plots"]) >= 4
    front = publish.front_page(data, "docs/results/fashion")
    assert front.count("| FPDM wins |") == len(scale.budgets)
    stored = json.dumps(data, ensure_ascii=False)  # the README's numbers too are results.json's
    assert [n for n in re.findall(r"[-+]?\d+\.\d+", front) if n not in stored] == []


# ------------------------------------------------------------------- publishing: docs and the front page


def _report(tmp_path, scale_name="full", drop_first_budget=False, old_code=False, no_why=False):
    """A finished study's report folder on the synthetic world (FPDM 10 FID better) at two budgets, and a
    README with the front-page markers."""
    scale = replace(FASHION_SMOKE, budgets=(56, 140))
    verdicts = list(_world(fpdm_gain=10.0, profile_gain=1.0, scale=scale).values())
    if drop_first_budget:
        verdicts[0]["per_budget"] = verdicts[0]["per_budget"][1:]
    if old_code:
        del verdicts[0]["per_budget"]
    for v in verdicts:
        v["why"] = f"because of {v['key']}"
    if no_why:
        verdicts[0]["why"] = ""  # fashion.WHY fills every row now: a report from before it had none
    src = tmp_path / "out" / "fashion"
    (src / "grids").mkdir(parents=True)
    plots = ["frontier.png", "smoothing.png"]
    for name in (*plots, "grids/dit28-ddpm.png", "README.md"):
        (src / name).write_bytes(f"bytes of {name}".encode())
    data = {"scale": scale_name, "settings": asdict(scale), "plots": plots, "verdicts": verdicts,
            "wall_s_total": 5 * 3600.0, "invocations": [{}, {}], "shown": {"wall_h_total": "5.00"}}
    (src / "results.json").write_text(json.dumps(data, ensure_ascii=False))
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n\n{publish.FRONT_START}\nold words\n{publish.FRONT_END}\n\n## next\n")
    return src, readme, data


def test_publishing_copies_the_report_and_writes_the_front_page_from_results_json(tmp_path):
    src, readme, data = _report(tmp_path)
    dst = tmp_path / "docs" / "results" / "fashion"
    dst.mkdir(parents=True)
    (dst / "training_curve.png").write_bytes(b"kept")  # the built-ins' curve lives there already
    written = publish.publish(src, dst, readme)
    assert (dst / "grids" / "dit28-ddpm.png").read_bytes() == b"bytes of grids/dit28-ddpm.png"
    assert (dst / "results.json").read_text() == (src / "results.json").read_text()
    assert (dst / "training_curve.png").read_bytes() == b"kept" and readme in written
    text = readme.read_text()
    assert text.startswith("# top\n\n") and text.endswith(f"{publish.FRONT_END}\n\n## next\n")
    section = text.split(publish.FRONT_START)[1].split(publish.FRONT_END)[0]
    assert "old words" not in section and "(docs/results/fashion/frontier.png)" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "blocks" not in line]
    assert [r.split(" ")[1] for r in rows] == ["56", "140"]  # one row per budget
    assert "**-9.98 ± 0.00** | FPDM wins |" in rows[0]
    numbers = re.findall(r"[-+−]?\d+\.\d+ ± \d+\.\d+", section)
    stored = json.dumps(data["verdicts"], ensure_ascii=False)
    assert len(numbers) >= 3 * 2 and [n for n in numbers if n not in stored] == []
    assert fashion.DIGITS["headline"][1] in section  # the digits study one link away
    assert "(5.00 h of wall time here, over 2 runs of it on 2 cores, each resuming the last)" in section


@pytest.mark.parametrize("case, message", [
    ("smoke", "plumbing check"), ("unfinished", "not finished"), ("old code", "written by older code"),
    ("no why", "no 'why' for headline:"), ("no markers", "exactly once"), ("swapped", "comes before")])
def test_publishing_refuses_before_writing_anything(tmp_path, case, message, capsys):
    src, readme, _ = _report(tmp_path, "smoke" if case == "smoke" else "full", case == "unfinished",
                             case == "old code", case == "no why")
    if case == "no markers":
        readme.write_text("# top\n")
    if case == "swapped":
        readme.write_text(f"{publish.FRONT_END}\n{publish.FRONT_START}\n")
    before = readme.read_text()
    tool = load_tool("publish_study")
    assert tool.main([str(src), "--to", str(tmp_path / "dst"), "--readme", str(readme)]) == 2
    assert message in capsys.readouterr().err
    assert readme.read_text() == before and not (tmp_path / "dst").exists()


@pytest.mark.skipif(not REAL.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_smoke_report_has_what_the_front_page_is_written_from(smoke, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.FRONT_START}\n{publish.FRONT_END}\n")
    publish.publish(smoke, tmp_path / "docs", readme, allow_smoke=True)
    assert readme.read_text().count("| ") >= len(FASHION_SMOKE.budgets) * 5


def test_the_readme_front_page_is_marked_and_is_the_published_study_once_there():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(publish.FRONT_START) == 1 and readme.count(publish.FRONT_END) == 1
    published = ROOT / "docs" / "results" / "fashion" / "results.json"
    if published.exists():  # then the section is the study's, word for word
        section = readme.split(publish.FRONT_START)[1].split(publish.FRONT_END)[0].strip("\n")
        assert section == publish.front_page(json.loads(published.read_text()), "docs/results/fashion")


def _later_cells(scale, prefer, flops_ratio):
    """The full-scale cells after the pilot on a synthetic world where `prefer` is every model's best
    sampler (so each ODE sampler gets its turn at the k grid, reuse, matched and close-call cells) and an
    FPDM block costs `flops_ratio` DiT blocks in FLOPs (which sets the FLOP-matched budgets)."""
    def fid(c):
        base = (60.0 if c.train.name == "dit28" else 55.0) + 0.1 * c.seed_block + 0.01 * (c.iters or 0)
        return base - 5.0 * (c.sampler == prefer)

    pilot = [_result(c, fid(c)) for c in fashion_cells.pilot_cells(scale)]
    grid = list(dict.fromkeys(fashion_cells.grid_cells(scale, pilot)))
    selected = pilot + [_result(c, fid(c)) for c in grid]
    cells = list(dict.fromkeys(fashion_cells.evaluation_cells(scale, selected)))
    results = [_result(c, fid(c)) for c in cells]
    for r in results:
        if r["settings"]["train"] != "dit28":
            r["flops_per_sample"] = r["settings"]["budget"] * flops_ratio
    matched = fashion_cells.matched_cells(scale, selected, results)
    return grid + cells + fashion_cells.matched_eval_cells(scale, matched) + \
        fashion_cells.close_calls(scale, selected, results)


def test_every_full_scale_cell_after_the_pilot_plans_and_samples_at_its_exact_budget():
    """The pilot's cells meet the sampler first thing in the real run; the later stages' come hours later.
    Every distinct later cell (whichever sampler wins) is planned here by the sampler's own functions on a
    random width-16 model of the study's depths, and one cell of each kind (sampler, spacing, profile, reuse,
    tolerance, solver, calibration) samples for real (1 sample) at its largest budget, or calibrates and
    samples at its smallest if calibrated: a cell the sampler refuses, or one that spends other than its
    budget, fails in the suite instead of mid-run."""
    import torch

    from fpdm.config import DiffusionConfig
    from fpdm.diffusion.gaussian import make_diffusion
    from fpdm.models.registry import create_model
    from fpdm.sampling.calibrate import calibrate, candidate_steps, check_schedule
    from fpdm.sampling.loop import SamplerSettings, chain_timesteps
    from fpdm.sampling.many import resolve_steps, sample_seeds
    from fpdm.studies.engine import IMAGE_SIZE, calibration_max_iters

    scale, built, kinds = FASHION_FULL, {}, {}
    later = [c for best in ("ddpm", "ddim", "dpm++2m", "unipc", "heun") for flops in (1.2, 1.1)
             for c in _later_cells(scale, best, flops)]
    distinct = {(c.train.model, c.train.overrides, c.budget, c.iters, c.steps, c.profile, c.sampler,
                 c.spacing, c.reuse, c.tol, c.solver, c.calibrated): c for c in later}
    for c in distinct.values():
        if (c.train.model, c.train.overrides) not in built:
            torch.manual_seed(0)
            over = dict(c.train.overrides) | {"hidden_size": 16, "num_heads": 2}
            model = create_model(c.train.model, input_size=IMAGE_SIZE["fashion-mnist"], in_channels=1,
                                 num_classes=10, **over).eval()
            diffusion = make_diffusion(DiffusionConfig(), model.config.learn_sigma)
            built[c.train.model, c.train.overrides] = model, diffusion
        model, diffusion = built[c.train.model, c.train.overrides]
        if c.calibrated:
            assert candidate_steps(model, c.budget, calibration_max_iters(scale), sampler=c.sampler)
        else:
            n, _ = resolve_steps(model, c.budget, c.steps, c.iters, c.profile, sampler=c.sampler)
            assert len(chain_timesteps(diffusion, n, c.spacing)) == n
        kind = (c.train.model, c.sampler, c.spacing, c.profile, c.reuse, c.tol, c.solver, c.calibrated)
        # the largest budget has the most steps; calibration (many candidates) runs at the smallest
        bigger = c.budget > kinds[kind].budget if kind in kinds else True
        if kind not in kinds or bigger != c.calibrated:
            kinds[kind] = c
    assert len(distinct) > 100 and len(kinds) >= 20 and any(c.calibrated for c in kinds.values())
    for c in kinds.values():
        model, diffusion = built[c.train.model, c.train.overrides]
        settings = SamplerSettings(sampler=c.sampler, spacing=c.spacing, reuse=c.reuse, tol=c.tol,
                                   solver=c.solver)
        schedule = None
        if c.calibrated:
            schedule = calibrate(model, diffusion, c.budget, seeds=[0, 1], settings=settings,
                                 max_iters=calibration_max_iters(scale), measure_samples=2,
                                 score=lambda x, labels: float(x.abs().mean()))
            check_schedule(schedule, model, settings, c.budget, source="the test's schedule")
        run = sample_seeds(model, diffusion, [0], budget=c.budget, iters=c.iters, steps=c.steps,
                           profile=c.profile, settings=settings, batch_size=1, schedule=schedule)
        if c.tol is None:  # a tolerance may stop early: it spends at most the budget
            assert run.record["blocks_counted"] == c.budget, c
        else:
            assert run.record["blocks_counted"] <= c.budget, c
