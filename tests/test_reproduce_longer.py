import json

import pytest

from fpdm.studies.engine import run_tasks
from fpdm.studies.longer import FACTOR, K_SET, cells, run, seed_cells, seed_folder
from fpdm.studies.ratio_cells import RATIO_FULL, RATIO_TINY, experiments, models


def test_cells_are_the_ratio_studys_headline_cells_at_each_length():
    short = cells(RATIO_FULL, RATIO_FULL.train_steps)
    assert set(short) <= set(experiments(RATIO_FULL))  # same keys: read from the study's cache
    for budget in RATIO_FULL.budgets:
        at = [c for c in short if c.budget == budget and c.seed_block == 0]
        assert [c.train.name for c in at if c.iters is None] == ["dit28"]
        for name in ("fpdm", "fpdm-N10M12"):
            assert {c.iters for c in at if c.train.name == name} == {
                k for k in K_SET if budget % (2 + k) == 0}
    assert {c.iters for c in short if c.budget == 560} == {None, 2, 3, 5, 6, 8, 12}  # closed form
    long = cells(RATIO_FULL, 2 * RATIO_FULL.train_steps)
    assert len(long) == len(short) == 3 * (4 + 2 * (4 + 5 + 6 + 6)) and not set(long) & set(short)
    assert {c.train_steps for c in long} == {6000}
    seeds = seed_cells(RATIO_FULL, 6000)  # DiT-28 and both FPDMs at k = 2 and 5 (feasible everywhere)
    assert len(seeds) == 3 * 4 * (1 + 2 * 2) and {c.train.name for c in seeds} == {
        "dit28-seed1", "fpdm-seed1", "fpdm-N10M12-seed1"}
    assert all(dict(c.train.train)["seed"] == 1 for c in seeds)


def test_needs_the_studys_trainings(tmp_path):
    with pytest.raises(FileNotFoundError, match="fpdm reproduce --study ratio --scale tiny --out"):
        seed_folder(tmp_path / "ratio", models(RATIO_TINY)["dit28"], RATIO_TINY, 8, "tiny")
    assert not (tmp_path / "ratio").exists()


def test_tiny_run_trains_on_from_the_shorter_runs_and_pairs_their_cells(tmp_path):
    root = tmp_path / "ratio"
    m = models(RATIO_TINY)
    steps = RATIO_TINY.train_steps
    names = ("dit28", "fpdm", "fpdm-N10M12", "dit28-seed1", "fpdm-seed1", "fpdm-N10M12-seed1")
    run_tasks([(m[n], steps) for n in names], [], RATIO_TINY, root, 2, lambda s: None)
    short_ckpt = root / "train" / m["dit28"].key(RATIO_TINY, steps) / "ckpt.pt"
    before = short_ckpt.stat().st_mtime_ns
    out = run("tiny", root, workers=2, log=lambda s: None)
    assert short_ckpt.stat().st_mtime_ns == before  # the shorter run is left as it was
    assert {s["name"] for s in out["trainings"]} == set(names)
    for s in out["trainings"]:
        assert s["step"] == FACTOR * steps  # resumed to the longer key's steps, not the copied run's
        log = [json.loads(line) for line in (root / "train" / m[s["name"]].key(RATIO_TINY, FACTOR * steps)
                                             / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, FACTOR * steps + 1))  # one continuous curve
    assert len(out["cells"]) == 2 * len(cells(RATIO_TINY, steps)) + len(seed_cells(RATIO_TINY, 2 * steps))
    readme = (root / "longer" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 56 | "))
    assert row.count(" ± ") == 7, row  # DiT at both lengths, its change, best FPDMs, both FPDM − DiT
    seeds = readme[readme.index("## Training-seed repeat"):readme.index("on the second training seed")]
    assert sum(line.startswith("| 56 | ") for line in seeds.splitlines()) == 5  # DiT-28, 2 FPDMs × k = 2, 5
    replica = readme[readme.index("on the second training seed"):readme.index("## Every cell")]
    row = next(line for line in replica.splitlines() if line.startswith("| 56 | "))
    assert "-seed1, " in row and row.count(" ± ") == 3, row  # the verdict on seed 1, paired
    assert (root / "longer" / "headline.png").exists() and (root / "longer" / "training.png").exists()
