import json

import pytest

from fpdm.studies import engine
from fpdm.studies.ratio import link_section, run
from fpdm.studies.ratio_cells import (
    RATIO_FULL,
    RATIO_QUICK,
    RATIO_TINY,
    best_fpdm,
    derived_experiments,
    equal_cost_budgets,
    experiments,
    feasible_iters,
    models,
    trainings,
)


def test_feasible_iters_closed_form():
    assert feasible_iters(56, 26) == [2, 5, 6, 12, 26]  # 1 + k + 1 divides 56
    assert feasible_iters(560, 26) == [2, 3, 5, 6, 8, 12, 14, 18, 26]
    assert feasible_iters(24, 26) == [1, 2, 4, 6, 10, 22]


@pytest.mark.parametrize("scale", [RATIO_TINY, RATIO_QUICK, RATIO_FULL])
def test_cells_spend_their_budgets_in_the_papers_ratio(scale):
    cells = experiments(scale)
    assert {c.experiment for c in cells} == {"smoothing", "training_seeds", "convergence", "allocation",
                                             "adaptive"} | ({"calibrated"} if scale != RATIO_QUICK else set())
    assert {(c.train.name, c.budget, c.seed_block) for c in cells if c.calibrated} == \
        {(n, b, s) for n in ("fpdm", "fpdm-N10M12")
         for b in (() if scale == RATIO_QUICK else scale.budgets + scale.small_budgets)
         for s in range(scale.sampling_seeds)}
    deep = [c for c in cells if c.train.name == "dit28"]
    assert deep and all(dict(c.train.overrides)["depth"] == 28 and c.budget % 28 == 0 for c in deep)
    assert {c.budget for c in deep if c.experiment == "smoothing"} == set(scale.budgets)
    shallow = [c for c in cells if c.train.name == "dit12"]
    assert {c.budget for c in shallow} == set(scale.small_budgets)
    assert all(c.budget % 12 == 0 for c in shallow)
    for c in cells:
        if c.iters is not None:
            assert c.budget % (2 + c.iters) == 0 and 1 <= c.iters <= scale.max_iters
    # every feasible k of every budget, for both FPDMs (DDPM, no reuse)
    for name in ("fpdm", "fpdm-N10M12"):
        for budget in scale.budgets + scale.small_budgets:
            ks = {c.iters for c in cells if c.train.name == name and c.budget == budget
                  and c.sampler == "ddpm" and c.experiment == "smoothing" and not c.reuse}
            assert ks == set(feasible_iters(budget, scale.max_iters))
    assert {c.seed_block for c in cells} == set(range(scale.sampling_seeds))
    assert all(c.snapshot == scale.snapshot_steps for c in cells if c.experiment == "convergence")
    assert len(cells) == len(set(cells))  # no cell twice


def test_models_and_training_order():
    m = models(RATIO_FULL)
    assert dict(m["fpdm-N10M12"].train)["fp_max_no_grad"] == 10 and dict(m["fpdm-N10M12"].train)[
        "fp_max_with_grad"] == 12
    assert all(dict(s.train)["keep_every"] == RATIO_FULL.snapshot_steps for s in m.values())
    assert dict(m["dit28-seed1"].train)["seed"] == 1 and "seed" not in dict(m["dit28"].train)
    names = [s.name for s, _ in trainings(RATIO_FULL)]
    assert names[:2] == ["dit28", "dit28-seed1"] and len(names) == len(m)


def _cell(train, budget, sampler, iters, fid, block, flops=1e9, wall=1.0):
    return {"settings": {"experiment": "smoothing", "train": train, "budget": budget, "sampler": sampler,
                         "iters": iters, "reuse": False, "seed_block": block},
            "digits_fid": fid, "flops_per_sample": flops, "sample_wall_s": wall}


def test_best_k_and_equal_cost_budgets_closed_form():
    results = []
    for b in range(2):
        results += [_cell("dit28", 140, "ddpm", None, 30.0, b, flops=0.8e9, wall=2.0),
                    _cell("fpdm", 140, "ddpm", 5, 20.0 + b, b, flops=1.0e9, wall=4.0),
                    _cell("fpdm", 140, "ddpm", 2, 22.0, b, flops=1.0e9, wall=4.0),
                    _cell("fpdm-N10M12", 140, "ddpm", 12, 19.0 + 3 * b, b, flops=1.0e9, wall=4.0)]
    assert best_fpdm(results, 140, "ddpm") == ("fpdm", 5)  # mean 20.5 beats 21.0 and 22.0
    assert best_fpdm(results, 140, "ddim") is None
    scale = RATIO_FULL
    got = {e["kind"]: e for e in equal_cost_budgets(results, scale)}
    # FLOPs: 0.8 of FPDM's -> 112 blocks = 16 steps of 1 + 5 + 1; wall: 0.5 -> 70 blocks = 10 steps
    assert (got["flops"]["equal_budget"], got["flops"]["steps"]) == (112, 16)
    assert (got["wall"]["equal_budget"], got["wall"]["steps"]) == (70, 10)
    assert got["flops"]["ratio"] == pytest.approx(0.8) and got["wall"]["ratio"] == pytest.approx(0.5)


def test_flops_and_wall_matching_one_budget_derive_one_cell():
    # DiT at 0.8 of FPDM's FLOPs and of its wall-clock: both match 112 blocks, the same cell (once listed
    # twice, two workers ran it at once and the study's results held two wall-clocks of one cached cell)
    results = []
    for b in range(2):
        results += [_cell("dit28", 140, "ddpm", None, 30.0, b, flops=0.8e9, wall=3.2),
                    _cell("fpdm", 140, "ddpm", 5, 20.0, b, flops=1.0e9, wall=4.0)]
    assert {e["equal_budget"] for e in equal_cost_budgets(results, RATIO_FULL)} == {112}
    cells = derived_experiments(results, RATIO_FULL)
    assert len(cells) == len(set(cells)) == RATIO_FULL.sampling_seeds


def test_run_tasks_runs_a_cell_listed_twice_once(monkeypatch, tmp_path):
    calls = []

    def fake(args):
        calls.append(args[0])
        return {"n": len(calls)}

    monkeypatch.setattr(engine, "eval_task", fake)
    cells = experiments(RATIO_TINY)[:2]
    _, results = engine.run_tasks([], [cells[0], cells[1], cells[0]], RATIO_TINY, tmp_path, 1,
                                  lambda s: None)
    assert calls == cells and results == [{"n": 1}, {"n": 2}, {"n": 1}]


def test_link_section_replaces_its_own_section_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# first study\n\nits tables\n")
    link_section(readme, ["## ratio", "a"])
    link_section(readme, ["## ratio", "b"])
    text = readme.read_text()
    assert text.startswith("# first study\n\nits tables\n") and text.count("## ratio") == 1
    assert "\nb\n" in text and "\na\n" not in text


def test_tiny_study_end_to_end_and_cached(tmp_path):
    (tmp_path / "README.md").write_text("# the first study\n")  # the ratio study runs in <out>/ratio
    tmp_path = tmp_path / "ratio"
    out = run("tiny", tmp_path, workers=2, log=lambda s: None)
    cells = out["cells"]
    grid = [c for c in cells if c["settings"]["experiment"] != "equal_cost"]
    assert len(grid) == len(experiments(RATIO_TINY))
    assert all(c["blocks"] == c["settings"]["budget"] for c in cells)  # instrumented count = budget
    assert [c for c in cells if c["settings"]["experiment"] == "equal_cost"]
    assert {t["name"] for t in out["trainings"]} == set(models(RATIO_TINY))
    readme = (tmp_path / "README.md").read_text()
    for section in ("## Headline", "Equal FLOPs", "Fig. 4", "optimum k", "Table 5", "Adaptive", "Convergence",
                    "seed 1 − seed 0", "Fig. 5", "## Calibrated schedules", "What the calibration measured"):
        assert section in readme, section
    calibrated = readme[readme.index("## Calibrated schedules"):]
    for name in ("fpdm", "fpdm-N10M12"):
        row = next(line for line in calibrated.splitlines() if line.startswith(f"| {name} | 56 | "))
        assert row.count(" ± ") >= 3, row  # its FID, and paired differences to the best cell and the seed's k
    head = next(line for line in readme.splitlines() if line.startswith("| 56 | dit28 | ddpm |"))
    assert head.split("|")[7].strip()[0] in "+-"  # a paired FPDM − DiT difference
    assert (tmp_path / "smoothing.png").stat().st_size > 1000 and (tmp_path / "training.png").exists()
    grids = {p.name for p in (tmp_path / "grids").glob("*.png")}
    assert "dit28.png" in grids and "fpdm-k2.png" in grids and not any("None" in g for g in grids), grids
    parent = (tmp_path.parent / "README.md").read_text()
    assert parent.startswith("# the first study") and "| 56 | dit28 | ddpm |" in parent
    before = {p: p.stat().st_mtime for p in (tmp_path / "eval").glob("*.json")}
    again = run("tiny", tmp_path, workers=1, log=lambda s: None)  # everything cached: nothing recomputed
    assert {p: p.stat().st_mtime for p in (tmp_path / "eval").glob("*.json")} == before
    assert json.dumps(again["cells"], sort_keys=True) == json.dumps(cells, sort_keys=True)
    # an adaptive cell: no derived cell reads its measured wall-clock (a recomputed DiT or best-FPDM cell
    # may move the wall-clock-matched budget, and with it which cells exist)
    damaged = next(p for p in sorted((tmp_path / "eval").glob("*.json"))
                   if json.loads(p.read_text())["settings"]["experiment"] == "adaptive")
    damaged.write_bytes(damaged.read_bytes()[:40] + b"\xff\x00")  # a torn or flipped cache entry
    with pytest.warns(UserWarning, match="is damaged: .*; running its task again"):
        third = run("tiny", tmp_path, workers=1, log=lambda s: None)
    def timeless(rows):  # the recomputed cell's wall-clock differs, nothing else may
        return json.dumps([{k: v for k, v in r.items() if k not in ("sample_wall_s", "task_wall_s")}
                           for r in rows],
                          sort_keys=True)

    assert timeless(third["cells"]) == timeless(cells)
