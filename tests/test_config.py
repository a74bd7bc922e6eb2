import pytest

from fpdm.config import DiffusionConfig, ModelConfig, TrainConfig


@pytest.mark.parametrize("cfg", [ModelConfig(arch="dit", depth=3), DiffusionConfig(prediction="v"),
                                 TrainConfig(steps=7, fp_mode="jfb")])
def test_dict_round_trip(cfg):
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})


@pytest.mark.parametrize("bad, match", [
    (lambda: ModelConfig(arch="unet"), "arch"),
    (lambda: ModelConfig(hidden_size=30, num_heads=4), "divisible"),
    (lambda: TrainConfig(lr=0), "--lr"),
    (lambda: TrainConfig(ema_decay=1.0), "--ema-decay"),
    (lambda: TrainConfig(batch_size=0), "--batch-size"),
])
def test_validation_names_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
