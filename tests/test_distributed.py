"""torchrun with 2 CPU processes (gloo) against 1 process: same weights, same plans, same samples."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fpdm.cli.app import main
from fpdm.common.distributed import World

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed next to this python")
TRAIN = ["train", "--model", "FPDM-T/2", "--hidden-size", "32", "--depth", "4", "--num-heads", "2",
         "--steps", "4", "--batch-size", "8", "--log-every", "1", "--no-progress", "--threads", "1"]


def _torchrun(args: list[str]) -> None:
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "fpdm.cli", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    assert main([*TRAIN, "--out", str(root / "one")]) == 0
    _torchrun([*TRAIN, "--out", str(root / "two")])
    return root


def test_two_processes_train_like_one_on_the_global_batch(runs):
    a, b = (torch.load(runs / n / "ckpt.pt", weights_only=True) for n in ("one", "two"))
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        for k in a[key]:  # equal up to the order of the gradient all-reduce's sums
            torch.testing.assert_close(a[key][k], b[key][k], rtol=1e-5, atol=1e-6)
    logs = [[json.loads(line) for line in (runs / n / "log.jsonl").read_text().splitlines()]
            for n in ("one", "two")]
    assert [r["iters"] for r in logs[0]] == [r["iters"] for r in logs[1]]  # the same S-JFB plans
    for ra, rb in zip(*logs, strict=True):  # the logged loss is the mean over both processes' rows
        assert abs(ra["loss"] - rb["loss"]) < 1e-5 * ra["loss"]


def test_sharded_sampling_equals_one_process(runs, tmp_path):
    args = ["sample", "--ckpt", str(runs / "one" / "ckpt.pt"), "--steps", "3", "--seeds", "0-8",
            "--batch-size", "2", "--no-progress", "--threads", "1", "--out"]
    assert main([*args, str(tmp_path / "one")]) == 0
    _torchrun([*args, str(tmp_path / "two")])
    a, b = (np.load(tmp_path / f"{n}.npz") for n in ("one", "two"))
    assert np.array_equal(a["samples"], b["samples"]) and np.array_equal(a["labels"], b["labels"])
    assert not (tmp_path / "two.parts").exists()


def test_world_shard():
    assert World(rank=1, size=2).shard(8) == slice(4, 8)
    with pytest.raises(ValueError, match="global batch size 9 is not divisible by the 2 processes"):
        World(rank=0, size=2).shard(9)


def test_a_torchrun_worker_exits_without_running_cpp_destructors(monkeypatch):
    """Under torchrun the command leaves through os._exit (interpreter-exit destructors made a finished gloo
    worker abort now and then); a plain run exits normally, with the same code."""
    from fpdm.cli import app

    monkeypatch.setattr(app, "main", lambda: 3)

    class Left(Exception):
        pass

    def leave(code: int) -> None:
        raise Left(code)

    monkeypatch.setattr(app.os, "_exit", leave)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Left, match="3"):
        app.entry()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit) as e:
        app.entry()
    assert e.value.code == 3
