import numpy as np
import pytest
import torch

from fpdm.data.datasets import load_dataset
from fpdm.evaluation.digits_features import (
    FeatureTrainConfig,
    digits_features,
    load_feature_net,
    reference_features,
    save_feature_net,
    train_digits_net,
)


def test_shipped_net_classifies_held_out_digits():
    test = load_dataset("digits", split="test")
    _, pred = digits_features(test.images)
    assert (torch.from_numpy(pred) == test.labels).float().mean() > 0.97


def test_stored_reference_is_the_held_out_features():
    test = load_dataset("digits", split="test")
    feats, _ = digits_features(test.images)
    assert reference_features().shape == (297, 128)
    np.testing.assert_allclose(feats, reference_features(), rtol=1e-5, atol=1e-5)  # float32 features


def test_training_is_deterministic(tmp_path):
    cfg = FeatureTrainConfig(epochs=1)
    paths = []
    for i in range(2):
        net, acc = train_digits_net(cfg)
        save_feature_net(net, acc, cfg, tmp_path / f"{i}.safetensors")
        paths.append(tmp_path / f"{i}.safetensors")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert acc > 0.5  # one epoch already learns something
    net = load_feature_net(paths[0])
    assert net.fc2.out_features == 10


def test_bad_input_named():
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digits_features(torch.zeros(2, 3, 8, 8))
    with pytest.raises(FileNotFoundError, match="fpdm train-features"):
        load_feature_net("/nonexistent/weights.safetensors")
