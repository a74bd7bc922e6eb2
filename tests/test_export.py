import json

import pytest
import torch

from fpdm.cli.app import main
from fpdm.sampling.loop import sample
from fpdm.weights.export import export_weights, load_exported
from fpdm.weights.loading import load_model

TINY = ["--hidden-size", "32", "--depth", "4", "--num-heads", "2"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--model", "FPDM-T/2", *TINY, "--steps", "3", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    return run / "ckpt.pt"


def test_export_round_trip_gives_identical_samples(ckpt, tmp_path):
    cfg = export_weights(ckpt, tmp_path / "exp")
    assert cfg["weights"] == "ema" and cfg["step"] == 3
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["model_config"]["arch"] == "fpdm"
    a, diff_a, _ = load_model(ckpt)
    for path in (tmp_path / "exp", tmp_path / "exp" / "model.safetensors"):
        b, diff_b, meta = load_model(path)
        assert meta["step"] == 3
        xa, _ = sample(a, diff_a, torch.tensor([1, 2]), [0, 1], steps=3)
        xb, _ = sample(b, diff_b, torch.tensor([1, 2]), [0, 1], steps=3)
        assert torch.equal(xa, xb)


def test_export_cli_and_raw_weights(ckpt, tmp_path, capsys):
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "raw"), "--no-ema"]) == 0
    assert "model weights, step 3" in capsys.readouterr().out
    state, cfg = load_exported(tmp_path / "raw")
    raw = torch.load(ckpt, weights_only=True)["model"]
    assert cfg["weights"] == "model" and all(torch.equal(state[k], raw[k]) for k in raw)


def test_exported_folder_errors(ckpt, tmp_path):
    export_weights(ckpt, tmp_path / "e")
    (tmp_path / "e" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_exported(tmp_path / "e")
    export_weights(ckpt, tmp_path / "e", overwrite=True)
    (tmp_path / "e" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="model.safetensors is not a valid safetensors file"):
        load_exported(tmp_path / "e")
    (tmp_path / "e" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_exported(tmp_path / "e")


def test_an_export_is_never_replaced_silently(ckpt, tmp_path):
    """A second export into the same folder is refused (naming the step it holds) unless overwrite; a
    built-in or an export given as the checkpoint says what it is."""
    export_weights(ckpt, tmp_path / "e")
    before = (tmp_path / "e" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match=r"already holds an export \(step \d+\); pass --overwrite"):
        export_weights(ckpt, tmp_path / "e", use_ema=False)
    assert (tmp_path / "e" / "model.safetensors").read_bytes() == before
    assert export_weights(ckpt, tmp_path / "e", use_ema=False, overwrite=True)["weights"] == "model"
    with pytest.raises(ValueError, match="digits-fpdm is a built-in, already exported"):
        export_weights("digits-fpdm", tmp_path / "b")
    with pytest.raises(ValueError, match="is already an export"):
        export_weights(tmp_path / "e", tmp_path / "c")
