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
                                         ("fashion-dit", "fashion32-dit28-t4"),
                                         ("fashion-fpdm-n10m12", "fashion32-fpdm-t4-n10m12")])
def test_fashion_builtins_follow_their_recipe_files(name, preset):
    """The package's copy of a Fashion recipe (what `build-weights` trains) is configs/<preset>.json's."""
    from pathlib import Path

    spec = builtin.BUILTINS[name]
    file = json.loads((Path(__file__).parents[1] / "configs" / f"{preset}.json").read_text())
    assert {k: v for k, v in file.items() if not k.startswith("_")} == {"model": spec.model, **spec.recipe}
    assert spec.data == "fashion-mnist" and spec.dtype == "float16"


def test_float16_storage_samples_within_the_fids_noise(tmp_path):
    """The fashion built-ins are stored as float16. The same rounding of the digits FPDM's weights moves
    its digits-FID (budget 120, k = 2, seeds 0-99, paired noise) by less than the FID's own s.e."""
    from fpdm.evaluation.evaluate import digits_eval
    from fpdm.sampling.many import sample_seeds
    from fpdm.weights.export import load_exported, write_exported

    weights, config = load_exported(builtin.builtin_folder("digits-fpdm"))
    write_exported(tmp_path / "half", {k: v.half() for k, v in weights.items()}, config)
    fids = []
    for where in (builtin.builtin_folder("digits-fpdm"), tmp_path / "half"):
        model, diffusion, _ = load_model(where)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # computed in float32
        run = sample_seeds(model, diffusion, range(100), budget=120, iters=2, batch_size=100)
        m = digits_eval(run.samples, run.labels, model.config)
        fids.append((m["digits_fid"], m["digits_fid_se"]))
    (full, se), (half, _) = fids
    assert full != half and abs(full - half) < se, fids


def test_fashion_builtin_samples_and_scores_by_name(tmp_path, capsys):
    """`fpdm sample --ckpt fashion-fpdm --budget 140 --eval`: the budget alone picks k, the export says it
    was trained on Fashion-MNIST, so its samples get fashion-FID (the reference needs the Debian files)."""
    from fpdm.data.fashion import fashion_dir

    if not (fashion_dir() / "t10k-images-idx3-ubyte.gz").exists() and \
            not (fashion_dir() / "t10k-images-idx3-ubyte").exists():
        pytest.skip("Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)")
    assert main(["sample", "--ckpt", "fashion-fpdm", "--budget", "140", "--seeds", "0-19", "--eval",
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["blocks_counted"] == 140 and record["steps"] == 28  # k = 3: 28 × (1 + 3 + 1)
    assert record["eval"]["fashion_fid"] > 0 and 0 <= record["eval"]["class_consistency"] <= 1


def test_an_installed_package_is_not_written_into_by_default(tmp_path, monkeypatch):
    """build-weights and train-features regenerate the shipped files in a source checkout; in an installed
    package (site-packages) their default output is refused before any training, naming --out."""
    from fpdm.evaluation.evaluate import train_feature_net

    monkeypatch.setattr(builtin, "ASSETS", tmp_path / "lib" / "site-packages" / "fpdm" / "assets")
    with pytest.raises(ValueError, match="writes into the installed package .*pass --out"):
        build("digits-fpdm", steps=1, progress=False)
    import fpdm.evaluation.digits_features as df

    monkeypatch.setattr(df, "WEIGHTS", tmp_path / "site-packages" / "fpdm" / "assets" / "d.safetensors")
    with pytest.raises(ValueError, match="pass --out"):
        train_feature_net("digits", epochs=1)
    assert not (tmp_path / "lib").exists()


def test_a_resumed_runs_training_time_is_summed_over_its_log(tmp_path):
    """A run trained over several invocations (the Fashion study's, across sessions) has a summary that
    counts only its last one; the shipped weights state the whole training time, from the log."""
    from fpdm.weights.build import training_wall_s

    (tmp_path / "summary.json").write_text(json.dumps({"step": 150, "steps_this_run": 50, "wall_s": 9.0}))
    logs = [(10, 1000.0), (20, 1000.0), (20, 5000.0), (30, 2000.0)]  # step 20 logged again after a kill
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0, "ms_per_step": ms}) + "\n"
                                                for s, ms in logs))
    assert training_wall_s(tmp_path) == 10 + 10 + 20
    (tmp_path / "summary.json").write_text(json.dumps({"step": 150, "steps_this_run": 150, "wall_s": 9.0}))
    assert training_wall_s(tmp_path) == 9.0  # trained in one go: the summary's own clock
