"""Files written by the flat layout before the redesign (commit 1f7ba70: `fpdm/sample.py`, `fpdm/train.py`, …)
still load: a training checkpoint (sampled and resumed), an export, a calibrated schedule, a sampling parts
folder (resumed) and a `reproduce` cache entry, all in tests/data/old_layout (written by that commit's code
from a tiny FPDM: width 16, depth 3, 2 training steps)."""

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from batch_dependent import BATCH_TOL

import fpdm
from fpdm.sampling import loop
from fpdm.sampling.calibrate import check_schedule, read_schedule
from fpdm.sampling.many import count_parts
from fpdm.studies.engine import cached_result
from fpdm.training.loop import resume

OLD = Path(__file__).parent / "data" / "old_layout"


def test_checkpoint_and_export_load_to_the_same_weights():
    model, diffusion, ckpt = fpdm.load_model(OLD / "run" / "ckpt.pt")
    exported, _, meta = fpdm.load_model(OLD / "export")
    assert ckpt["step"] == 2 and meta["weights"] == "ema" and model.config.hidden_size == 16
    for (k, a), (_, b) in zip(model.state_dict().items(), exported.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert diffusion.num_timesteps == 1000


def test_an_old_run_resumes(tmp_path):
    shutil.copytree(OLD / "run", tmp_path / "run")
    summary = resume(tmp_path / "run", steps=3, progress=False)
    assert summary["step"] == 3 and summary["steps_this_run"] == 1
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert state["train_config"]["lr_schedule"] == "constant"  # a setting the old run did not know of


def test_an_old_schedule_is_accepted_for_its_weights():
    model, _, _ = fpdm.load_model(OLD / "run" / "ckpt.pt")
    schedule = read_schedule(OLD / "schedule.json")
    check_schedule(schedule, model, fpdm.SamplerSettings(), 12)
    assert sum(schedule["iters"]) + 2 * schedule["steps"] == 12


def test_old_sampling_parts_resume_to_the_samples_of_a_straight_run(tmp_path, monkeypatch):
    model, diffusion, _ = fpdm.load_model(OLD / "run" / "ckpt.pt")
    parts = tmp_path / "samples.parts"
    shutil.copytree(OLD / "samples.parts", parts)
    assert count_parts(parts) == 1
    calls = []
    real = loop.sample
    monkeypatch.setattr(loop, "sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = fpdm.sample_seeds(model, diffusion, range(4), budget=12, iters=2, batch_size=2, parts=parts,
                            identity={"ckpt": "old"})
    assert len(calls) == 1  # the kept batch is loaded, the missing one sampled
    expected = torch.load(OLD / "expected_samples.pt", weights_only=True)["samples"]
    torch.testing.assert_close(run.samples, expected, atol=BATCH_TOL, rtol=0)  # old code, other kernels


def test_an_old_reproduce_cache_entry_is_read():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # damaged would warn and return None
        entry = cached_result(OLD / "cache_entry.json")
    assert entry["digits_fid"] == pytest.approx(12.5) and entry["settings"]["budget"] == 12
