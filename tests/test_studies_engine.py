"""The studies engine's bookkeeping for runs that span sessions: where a training stands, and the wall time
summed over a study's invocations."""

import json

from fpdm.studies import engine
from fpdm.studies.engine import (
    TrainSpec,
    invocations_wall_s,
    read_invocations,
    start_invocation,
    training_progress,
)
from fpdm.studies.fashion_cells import FASHION_SCALES


def test_training_progress_reads_the_last_complete_line_of_the_log(tmp_path):
    scale = FASHION_SCALES["full"]
    spec = TrainSpec("fpdm-N10M12", "FPDM-T/4", data="fashion-mnist")
    assert training_progress(tmp_path, spec, scale, 10_000) == "fpdm-N10M12 starting"
    log = tmp_path / "train" / spec.key(scale, 10_000) / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"step": 500, "ms_per_step": 900.0}) + "\n"
                   + json.dumps({"step": 1000, "ms_per_step": 600.0}) + "\n" + '{"step": 10')  # being written
    # 9,000 steps left at 600 ms: 90 min
    said = training_progress(tmp_path, spec, scale, 10_000)
    assert said == "fpdm-N10M12 step 1,000/10,000 (10 %, ≈ 90 min left)"


def test_wall_time_sums_every_invocation_to_its_last_heartbeat(tmp_path, monkeypatch):
    clock = iter([100.0, 100.0, 160.0, 1000.0, 1000.0, 1030.0, 1045.0])
    monkeypatch.setattr(engine.time, "time", lambda: next(clock))
    beat = start_invocation(tmp_path, {"commit": "a"})  # starts at 100, beats at 100
    beat()  # 160; then killed: the next run starts afresh
    beat = start_invocation(tmp_path, {"commit": "b"})  # 1000
    beat()
    beat()  # 1045
    runs = read_invocations(tmp_path)
    assert [r["commit"] for r in runs] == ["a", "b"]
    assert invocations_wall_s(runs) == 60.0 + 45.0
