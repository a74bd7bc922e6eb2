import json

import pytest
import torch
from safetensors.torch import load_file

from fpdm.cli.app import main
from fpdm.common.digest import tensor_hash
from fpdm.weights import builtin
from fpdm.weights.build import build
from fpdm.weights.loading import load_model


def test_a_missing_builtin_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)
    with pytest.raises(FileNotFoundError, match="fpdm build-weights digits-dit"):
        load_model("digits-dit")
    assert main(["sample", "--ckpt", "digits-dit", "--steps", "2", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "build-weights digits-dit" in err


def test_build_is_reproducible_and_loads_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "ASSETS", tmp_path)
    cfg = build("digits-fpdm", steps=3, progress=False)  # the recipe, shortened
    again = build("digits-fpdm", tmp_path / "again", steps=3, progress=False)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("digits-fpdm", "again"))
    assert list(a) == list(b) and all(tensor_hash(a[k]) == tensor_hash(b[k]) for k in a)  # bit for bit
    # (the files' bytes differ only in the config digest, since the config records the training wall time)
    assert cfg["recipe"]["steps"] == 3 and cfg["recipe"]["model"] == "FPDM-T/2"
    assert cfg["command"] == "fpdm build-weights digits-fpdm"
    stated = json.loads((tmp_path / "digits-fpdm" / "config.json").read_text())["digits_eval"]
    assert stated["budget"] == 120 and stated["digits_fid"] == again["digits_eval"]["digits_fid"]
    model, _, _ = load_model("digits-fpdm")  # by name
    assert model.config.arch == "fpdm" and model.config.hidden_size == 128


def test_bf16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    from fpdm.config import TrainConfig
    from fpdm.models.registry import model_config
    from fpdm.training.loop import train
    from fpdm.weights.export import export_weights

    mc = model_config("DiT-T/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=2,
                      num_heads=2)
    train(TrainConfig(out_dir=str(tmp_path / "run"), steps=1, batch_size=4), mc, progress=False)
    export_weights(tmp_path / "run" / "ckpt.pt", tmp_path / "full")
    export_weights(tmp_path / "run" / "ckpt.pt", tmp_path / "half", dtype=torch.bfloat16)
    full, half = ((tmp_path / d / "model.safetensors").stat().st_size for d in ("full", "half"))
    assert half < 0.55 * full
    model, _, _ = load_model(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name,preset", [("fashion-fpdm", "fashion32-fpdm-t4"),
                                         ("fashion-dit", "fashion32-dit28-t4")])
def test_fashion_builtins_follow_their_recipe_files(name, preset):
    """The package's copy of a Fashion recipe (what `build-weights` trains) is configs/<preset>.json's."""
    from pathlib import Path

    spec = builtin.BUILTINS[name]
    file = json.loads((Path(__file__).parents[1] / "configs" / f"{preset}.json").read_text())
    assert {k: v for k, v in file.items() if not k.startswith("_")} == {"model": spec.model, **spec.recipe}
    assert spec.data == "fashion-mnist" and spec.dtype == "float16"
