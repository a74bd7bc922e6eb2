"""Official DiT/FPDM files, laid out as the official code writes them (built from the recorded official
fixture at tiny size), load through `fpdm sample`'s loader and `fpdm import` and reproduce the recorded
official outputs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fpdm.cli.app import main
from fpdm.weights.loading import load_model
from fpdm.weights.official import infer_config

REF = load_file(str(Path(__file__).parent / "data" / "official_outputs.safetensors"))
X, T, Y = REF["input.x"], REF["input.t"], REF["input.y"]


def _sd(prefix):
    return {k[len(prefix):]: v.clone() for k, v in REF.items() if k.startswith(prefix)}


def _forward(model, **kw):
    with torch.no_grad():
        return model(X, T, Y, **kw)


def test_bare_dit_state_dict_pt_and_safetensors(tmp_path):
    torch.save(_sd("dit."), tmp_path / "DiT-tiny.pt")
    save_file(_sd("dit."), str(tmp_path / "DiT-tiny.safetensors"))
    for name in ("DiT-tiny.pt", "DiT-tiny.safetensors"):
        model, _, ckpt = load_model(tmp_path / name, num_heads=2)
        cfg = model.config
        assert (cfg.arch, cfg.depth, cfg.hidden_size, cfg.input_size, cfg.in_channels, cfg.num_classes,
                cfg.learn_sigma) == ("dit", 4, 32, 8, 4, 10, True)
        assert ckpt["official"]["kind"] == "bare state dict"
        torch.testing.assert_close(_forward(model), REF["out.dit"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pptc", [False, True])
def test_fpdm_trainer_checkpoint_with_args_json_uses_ema_and_args(tmp_path, pptc):
    # the official trainer: <run>/args.json and <run>/checkpoints/0005000.pt = {model, ema, opt, args, steps}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    args = {"model": "DiT-S/2", "fixed_point": True, "fixed_point_pre_depth": 1, "fixed_point_post_depth": 1,
            "fixed_point_pre_post_timestep_conditioning": pptc, "num_classes": 10, "image_size": 64}
    (run / "args.json").write_text(json.dumps(args))
    raw = {k: v + 1.0 for k, v in _sd("fpdm.").items()}  # the raw weights differ: the EMA must be used
    torch.save({"model": raw, "ema": _sd("fpdm."), "opt": {}, "args": args, "train_steps": 5000},
               run / "checkpoints" / "0005000.pt")
    model, _, ckpt = load_model(run / "checkpoints" / "0005000.pt", num_heads=2)
    assert model.config.pre_post_timestep_conditioning is pptc and ckpt["step"] == 5000
    torch.testing.assert_close(_forward(model, iters=3), REF[f"out.fpdm.iters3.pptc{int(pptc)}"], atol=1e-5,
                               rtol=0)
    # fpdm import writes our format; it loads back to the same function
    assert main(["import", str(run / "checkpoints" / "0005000.pt"), "--out", str(tmp_path / "imp"),
                 "--num-heads", "2"]) == 0
    imported, _, cfg = load_model(tmp_path / "imp")
    assert cfg["provenance"]["kind"] == "official trainer checkpoint (ema weights)"
    torch.testing.assert_close(_forward(imported, iters=7), REF[f"out.fpdm.iters7.pptc{int(pptc)}"],
                               atol=1e-5, rtol=0)


def test_released_conditioning_default_and_flag(tmp_path):
    torch.save(_sd("fpdm."), tmp_path / "fpdm.pt")  # bare: nothing says how pre/post are conditioned
    model, _, _ = load_model(tmp_path / "fpdm.pt", num_heads=2)
    assert not model.config.pre_post_timestep_conditioning  # the released default
    torch.testing.assert_close(_forward(model, iters=1), REF["out.fpdm.iters1.pptc0"], atol=1e-5, rtol=0)
    model, _, _ = load_model(tmp_path / "fpdm.pt", num_heads=2, pre_post_timestep_conditioning=True)
    torch.testing.assert_close(_forward(model, iters=1), REF["out.fpdm.iters1.pptc1"], atol=1e-5, rtol=0)


def test_unknown_and_ambiguous_files_are_one_line_errors(tmp_path, capsys):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "unknown.pt")
    torch.save(_sd("dit."), tmp_path / "tiny.pt")
    both = {**_sd("dit."), **{k: v for k, v in _sd("fpdm.").items() if k.startswith("block_fixed_point")}}
    torch.save(both, tmp_path / "both.pt")
    cases = [("unknown.pt", "neither an fpdm checkpoint nor an official DiT/FPDM one"),
             ("tiny.pt", "number of attention heads is unknown; pass --num-heads"),
             ("both.pt", "cannot tell DiT from FPDM")]
    for name, message in cases:
        assert main(["import", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and name in err, err
        assert not (tmp_path / "o").exists()


def test_public_dit_xl_layout_infers_its_size():
    # the public DiT-XL/2 256 file: width 1152 tells XL (28 blocks, 16 heads), 256 tokens of patch 2 = 32²
    meta = json.loads((Path(__file__).parent / "data" / "official_state_dict_manifest.json").read_text())
    state = {k: torch.empty(v, device="meta") for k, v in meta["models"]["DiT-XL/2"]["state_dict"].items()}
    cfg, diffusion = infer_config(state)
    assert (cfg.arch, cfg.depth, cfg.num_heads, cfg.hidden_size, cfg.input_size, cfg.patch_size,
            cfg.num_classes, cfg.learn_sigma) == ("dit", 28, 16, 1152, 32, 2, 1000, True)
    state = {k: torch.empty(v, device="meta") for k, v in meta["models"]["FPDM-XL/2 pre2/post2"]["state_dict"]
             .items()}
    cfg, _ = infer_config(state)
    assert (cfg.arch, cfg.pre_depth, cfg.post_depth, cfg.depth, cfg.num_heads) == ("fpdm", 2, 2, 28, 16)
    assert diffusion.prediction == "eps"


def test_a_pickle_of_objects_is_refused_not_unpickled(tmp_path, capsys):
    import argparse

    torch.save({"model": _sd("dit."), "args": argparse.Namespace(model="DiT-S/2")}, tmp_path / "old.pt")
    assert main(["import", str(tmp_path / "old.pt"), "--out", str(tmp_path / "o"), "--num-heads", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights_only=True" in err and "old.pt" in err, err
