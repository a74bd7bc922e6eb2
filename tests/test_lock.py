import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fpdm.common.lock import LOCK_NAME, FolderInUse, hold


def test_a_held_folder_is_refused_naming_its_owner(tmp_path):
    with hold(tmp_path / "run", "run"):
        with pytest.raises(FolderInUse, match=rf"pid {os.getpid()} on .*delete .*{LOCK_NAME}"):
            with hold(tmp_path / "run", "run"):
                pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released


def test_released_on_error_and_stale_or_foreign_locks(tmp_path):
    with pytest.raises(KeyError):
        with hold(tmp_path, "run"):
            raise KeyError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with hold(tmp_path, "run"):  # its owner is gone: taken over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": "another-machine"}))
    with pytest.raises(FolderInUse, match="another-machine"):  # cannot tell if it lives: refused
        with hold(tmp_path, "run"):
            pass


def test_two_trainings_into_one_folder_then_a_stale_lock(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fpdm.cli", "train", "--model", "FPDM-T/2", "--hidden-size", "32",
           "--depth", "4", "--num-heads", "2", "--batch-size", "8", "--ckpt-every", "1", "--no-progress",
           "--threads", "1", "--out", str(out)]
    first = subprocess.Popen([*cmd, "--steps", "100000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "ckpt.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)  # while it runs
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"in use by another fpdm train (pid {first.pid}" in err[0], err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK_NAME).exists()  # kill -9 leaves the lock behind…
    step = subprocess.run([sys.executable, "-c", "import torch, sys; print(torch.load(sys.argv[1], "
                           "weights_only=True)['step'])", str(out / "ckpt.pt")],
                          capture_output=True, text=True)
    resumed = subprocess.run([*cmd, "--resume", "--steps", str(int(step.stdout) + 2)],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr  # …and the next run takes it over
    assert not (out / LOCK_NAME).exists()
