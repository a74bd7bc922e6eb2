import json

import pytest

from fpdm.reproduce import _run_tasks
from fpdm.reproduce_longer import FACTOR, K_SET, cells, run, seed_folder
from fpdm.reproduce_ratio import RATIO_FULL, RATIO_TINY, experiments, models


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


def test_needs_the_studys_trainings(tmp_path):
    with pytest.raises(FileNotFoundError, match="fpdm reproduce --study ratio"):
        seed_folder(tmp_path / "ratio", models(RATIO_TINY)["dit28"], RATIO_TINY, 8)


def test_tiny_run_trains_on_from_the_shorter_runs_and_pairs_their_cells(tmp_path):
    root = tmp_path / "ratio"
    m = models(RATIO_TINY)
    steps = RATIO_TINY.train_steps
    _run_tasks([(m[n], steps) for n in ("dit28", "fpdm", "fpdm-N10M12")], [], RATIO_TINY, root, 2,
               lambda s: None)
    short_ckpt = root / "train" / m["dit28"].key(RATIO_TINY, steps) / "ckpt.pt"
    before = short_ckpt.stat().st_mtime_ns
    out = run("tiny", root, workers=2, log=lambda s: None)
    assert short_ckpt.stat().st_mtime_ns == before  # the shorter run is left as it was
    for s in out["trainings"]:
        assert s["step"] == FACTOR * steps  # resumed to the longer key's steps, not the copied run's
        log = [json.loads(line) for line in (root / "train" / m[s["name"]].key(RATIO_TINY, FACTOR * steps)
                                             / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, FACTOR * steps + 1))  # one continuous curve
    assert len(out["cells"]) == 2 * len(cells(RATIO_TINY, steps))
    readme = (root / "longer" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 56 | "))
    assert row.count(" ± ") == 7, row  # DiT at both lengths, its change, best FPDMs, both FPDM − DiT
    assert (root / "longer" / "headline.png").exists() and (root / "longer" / "training.png").exists()
