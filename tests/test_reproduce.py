import json

from fpdm.studies.digits import FULL, QUICK, TINY, experiments, run


def test_experiment_grid_covers_every_finding():
    for scale in (TINY, QUICK, FULL):
        cells = experiments(scale)
        assert {c.experiment for c in cells} == {"smoothing", "allocation", "adaptive", "table3", "table4",
                                                 "training_seeds", "calibrated"}
        calibrated = [c for c in cells if c.calibrated]
        assert {(c.budget, c.seed_block) for c in calibrated} == \
            {(b, s) for b in scale.budgets for s in range(scale.sampling_seeds)}
        assert {c.seed_block for c in cells} == set(range(scale.sampling_seeds))
        assert all(c.budget % (2 + c.iters) == 0 for c in cells if c.iters)  # every k spends the budget
    full = experiments(FULL)
    assert {c.train.name for c in full if c.experiment == "smoothing"} == {"fpdm", "dit", "dit-depth3"}
    assert {c.profile for c in full if c.experiment == "allocation"} == {"constant", "increasing",
                                                                          "decreasing", "released"}


def test_tiny_run_end_to_end_and_cached(tmp_path):
    out = run("tiny", tmp_path, workers=1, log=lambda s: None)
    eq_wall = [c for c in out["cells"] if c["settings"]["train"] == "dit-eqwall"]
    assert len(out["cells"]) == len(experiments(TINY)) + len(eq_wall) and eq_wall
    assert {t["name"] for t in out["trainings"]} >= {"fpdm", "dit", "dit-depth3", "dit-eqwall"}
    assert all(c["blocks"] == c["settings"]["budget"] for c in out["cells"])  # exact budgets
    readme = (tmp_path / "README.md").read_text()
    assert "Scale tiny: a plumbing check, not a result" in readme.splitlines()[2]
    for section in ("Smoothing", "Headline", "Table 3", "Table 4", "Table 5", "Adaptive", "Fig. 5",
                    "seed 0 vs 1", "(paired)", "dit-eqwall", "− constant (paired)",
                    "− S-JFB at the same N (paired)", "− S-JFB N = M = 3 (paired)", "Calibrated schedules"):
        assert section in readme
    section = readme[readme.index("## Calibrated schedules"):]
    cal = next(line for line in section.splitlines() if line.startswith("| fpdm | 12 | "))
    assert "k = 2" in cal and cal.count(" ± ") >= 3  # calibrated FID, − best cell, − the seed's k (paired)
    for row in ("| 12 | increasing |", "| jfb-N2-M4 | 12 |", "| sjfb-N1-M1 | 12 |", "| fpdm-seed1 | 12 |"):
        line = next(line for line in readme.splitlines() if line.startswith(row))
        assert line.rstrip(" |").split("|")[-1].strip()[0] in "+-", line  # a paired difference, not '–'

    assert (tmp_path / "smoothing.png").stat().st_size > 1000 and (tmp_path / "training.png").exists()
    before = {p: p.stat().st_mtime for p in (tmp_path / "eval").glob("*.json")}
    again = run("tiny", tmp_path, workers=1, log=lambda s: None)  # everything cached: nothing recomputed
    assert {p: p.stat().st_mtime for p in (tmp_path / "eval").glob("*.json")} == before
    assert json.dumps(again["cells"], sort_keys=True) == json.dumps(out["cells"], sort_keys=True)
