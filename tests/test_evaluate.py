import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fpdm.data.datasets import load_dataset
from fpdm.evaluation.evaluate import as_digits, digits_metrics, load_samples

TRAIN = load_dataset("digits", split="train")


def test_real_digits_score_well_and_noise_badly():
    real = digits_metrics(TRAIN.images[:600], TRAIN.labels[:600], bootstrap=10, kid_subsets=20)
    g = torch.Generator().manual_seed(0)
    noise = digits_metrics(torch.rand(600, 1, 8, 8, generator=g) * 2 - 1, bootstrap=10, kid_subsets=20)
    blurred = F.avg_pool2d(TRAIN.images[:600], 3, stride=1, padding=1, count_include_pad=False)
    blur = digits_metrics(blurred, bootstrap=10, kid_subsets=20)
    assert real["digits_fid"] < blur["digits_fid"] < noise["digits_fid"]
    assert real["class_consistency"] > 0.97 and "class_consistency" not in noise
    assert real["precision"] > 0.8 and noise["precision"] < 0.1 and noise["recall"] < 0.1
    assert abs(real["kid"]) < 0.05 < noise["kid"]
    assert real["reference"] == "digits" and real["reference_size"] == 297 and real["num_samples"] == 600


def test_load_samples_formats(tmp_path):
    x = TRAIN.images[:4]
    np.savez(tmp_path / "fpdm.npz", samples=x.numpy(), labels=np.arange(4))
    got, labels = load_samples(tmp_path / "fpdm.npz")
    assert torch.equal(got, x) and labels.tolist() == [0, 1, 2, 3]
    u8 = np.round((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8).repeat(3, axis=3)
    np.savez(tmp_path / "adm.npz", arr_0=u8)
    got, labels = load_samples(tmp_path / "adm.npz")
    assert labels is None and as_digits(got).shape == (4, 1, 8, 8)
    assert (as_digits(got) - x).abs().max() < 1 / 127
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(u8[i, :, :, 0]).save(tmp_path / "imgs" / f"{i}.png")
    got, _ = load_samples(tmp_path / "imgs")
    assert got.shape == (3, 1, 8, 8)


def test_load_samples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no samples"):
        load_samples(tmp_path / "missing.npz")
    np.savez(tmp_path / "x.npz", foo=np.zeros(2))
    with pytest.raises(ValueError, match="'samples'.*'arr_0'"):
        load_samples(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="8×8 greyscale"):
        as_digits(torch.zeros(2, 3, 16, 16))
