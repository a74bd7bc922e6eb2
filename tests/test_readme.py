"""The README's Python equivalents of `fpdm train`, `fpdm sample` and `fpdm eval` (the marked blocks beside
each command, run in order) run as written (with 3 training steps instead of 3,000) and do what the
commands do."""

import json
import re
from pathlib import Path

import numpy as np
import torch

from fpdm.cli import main
from fpdm.common.checkpoint import load_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def _block() -> str:
    """The marked Python blocks, each beside its command in the README, joined in order."""
    text = README.read_text()
    marked = text.split("<!-- python-equivalents -->")[1:]
    blocks = [part.split("<!-- /python-equivalents -->")[0] for part in marked]
    return "\n".join(re.search(r"```python\n(.*?)```", block, re.S).group(1) for block in blocks)


def test_the_python_equivalents_run_and_match_the_commands(tmp_path, monkeypatch):
    code = _block()
    assert "steps=3000" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace("steps=3000", "steps=3"), "README.md", "exec"), scope)  # noqa: S102
    assert scope["summary"]["step"] == 3 and (tmp_path / "runs/fpdm/ckpt.pt").exists()
    assert scope["run"].record["blocks_counted"] == 120 and scope["run"].samples.shape == (100, 1, 8, 8)
    assert set(scope["metrics"]) >= {"digits_fid", "kid", "precision", "recall", "class_consistency"}
    # the command gives the same samples and the same metrics
    assert main(["sample", "--ckpt", "runs/fpdm/ckpt.pt", "--budget", "120", "--iters", "2", "--seeds",
                 "0-99", "--out", "cli", "--no-progress", "--eval"]) == 0
    assert np.array_equal(np.load("cli.npz")["samples"], np.load("runs/fpdm/b120.npz")["samples"])
    record = json.loads(Path("cli.json").read_text())
    assert record["eval"]["digits_fid"] == scope["metrics"]["digits_fid"]
    # and the command trains the same weights
    assert main(["train", "--data", "digits", "--model", "FPDM-T/2", "--out", "cli-run", "--steps", "3",
                 "--no-progress"]) == 0
    mine, theirs = (load_checkpoint(f"{d}/ckpt.pt")["ema"] for d in ("runs/fpdm", "cli-run"))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
