import json

import numpy as np
import torch

from fpdm.data import load_dataset
from fpdm.registry import model_config
from fpdm.sweep import frechet_distance, placeholder_metric, write_table


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2 + 1  # N(1, 4I): FD = 3·1 + 3·(1 + 4 - 2·2) = 6
    assert abs(frechet_distance(a, b) - 6.0) < 0.15
    assert frechet_distance(a, a) < 1e-6


def test_placeholder_metric_on_real_digits_and_noise():
    cfg = model_config("FPDM-T/2", input_size=8, in_channels=1, num_classes=10)
    train = load_dataset("digits", split="train")
    real = placeholder_metric(train.images[:300], train.labels[:300], cfg)
    noise = placeholder_metric(torch.rand(300, 1, 8, 8) * 2 - 1, train.labels[:300], cfg)
    assert real["class_consistency"] > 0.97 and noise["class_consistency"] < 0.3
    assert real["pixel_fd"] < 0.2 * noise["pixel_fd"] and 0 < real["pixel_fd_se"] < real["pixel_fd"]
    assert placeholder_metric(train.images[:2], train.labels[:2], model_config("DiT-S/2")) == {}


def test_write_table(tmp_path):
    write_table([{"iters": 1, "q": 0.5}, {"iters": 2, "q": 0.25}], tmp_path / "t", {"budget": 24})
    assert json.loads((tmp_path / "t.json").read_text())["rows"][1]["q"] == 0.25
    assert "| 2 | 0.25 |" in (tmp_path / "t.md").read_text()
