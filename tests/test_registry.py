import json
from pathlib import Path

import pytest
import torch

import fpdm
from fpdm.models.registry import MODEL_NAMES, model_config

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "official_state_dict_manifest.json").read_text())["models"]
OFFICIAL_ARGS = dict(input_size=32, in_channels=4, num_classes=1000, learn_sigma=True)


def _meta_model(name: str, **kw):
    with torch.device("meta"):  # XL sizes without allocating 2.7 GB
        return fpdm.create_model(name, **kw)


@pytest.mark.parametrize("entry", list(MANIFEST))
def test_state_dict_matches_official_manifest(entry):
    name, *extra = entry.split()
    kw = dict(OFFICIAL_ARGS)
    if extra == ["pre2/post2"]:
        kw.update(pre_depth=2, post_depth=2)
    model = _meta_model(name, **kw)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    want = list(MANIFEST[entry]["state_dict"].items())
    assert got == [(k, v) for k, v in want]  # same keys, same order, same shapes
    assert model.num_parameters == MANIFEST[entry]["parameters"]


def test_published_parameter_counts():
    assert _meta_model("FPDM-XL/2", **OFFICIAL_ARGS).num_parameters == 86_500_256
    assert _meta_model("DiT-XL/2", **OFFICIAL_ARGS).num_parameters == 674_834_720
    assert "pos_embed" not in dict(_meta_model("DiT-S/2").named_parameters())


def test_strict_load_of_official_keys():
    model = fpdm.create_model("FPDM-S/2", **OFFICIAL_ARGS)
    sd = {k: torch.randn(v) for k, v in MANIFEST["FPDM-S/2"]["state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.block_pre_projection.weight, sd["block_pre_projection.weight"])


def test_every_size_is_registered():
    assert len(MODEL_NAMES) == 2 * 5 * 3
    cfg = model_config("DiT-L/4")
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (24, 1024, 16, 4)
    cfg = model_config("FPDM-T/2", input_size=8, in_channels=1, num_classes=10)
    assert (cfg.arch, cfg.depth, cfg.hidden_size, cfg.num_heads) == ("fpdm", 6, 128, 4)


@pytest.mark.parametrize("bad", ["DiT-XXL/2", "DiT-S/3", "UNet-S/2", "FPDM"])
def test_unknown_name_is_named_in_error(bad):
    with pytest.raises(ValueError, match="unknown model"):
        model_config(bad)


def test_bad_override_is_reported():
    with pytest.raises(ValueError, match="bad override"):
        model_config("DiT-S/2", not_a_field=3)
    with pytest.raises(ValueError, match="divisible"):
        model_config("DiT-S/2", input_size=31)


@pytest.mark.parametrize("name", ["DiT-S/2", "FPDM-S/2"])
def test_small_models_run_on_cpu(name):
    torch.manual_seed(0)
    model = fpdm.create_model(name, input_size=32, in_channels=4, num_classes=1000).eval()
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        out = model(x, torch.tensor([1, 999]), torch.tensor([3, 1000]))  # 1000 = null class
    assert out.shape == (2, 8, 32, 32) and torch.isfinite(out).all()
