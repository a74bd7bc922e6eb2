"""Tests for fpdm.data.datasets: the fixed digits split and the torchvision-free image-folder loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits as sk_load_digits

from fpdm.data.datasets import ImageDataset, center_crop_resize, load_dataset

TRAIN_PER_CLASS = [149, 152, 148, 153, 151, 152, 151, 149, 145, 150]
TEST_PER_CLASS = [29, 30, 29, 30, 30, 30, 30, 30, 29, 30]


# ----------------------------------------------------------------------------------------- digits


@pytest.mark.parametrize(
    ("split", "size", "per_class"),
    [
        ("train", 1500, TRAIN_PER_CLASS),
        ("test", 297, TEST_PER_CLASS),
        ("all", 1797, [a + b for a, b in zip(TRAIN_PER_CLASS, TEST_PER_CLASS, strict=True)]),
    ],
)
def test_digits_split_sizes_and_class_counts(split, size, per_class):
    ds = load_dataset("digits", split=split)
    assert isinstance(ds, torch.utils.data.Dataset) and isinstance(ds, ImageDataset)
    assert len(ds) == size
    assert ds.images.shape == (size, 1, 8, 8) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (size,) and ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels, minlength=10).tolist() == per_class
    assert (ds.num_classes, ds.image_size, ds.channels, ds.name, ds.split) == (10, 8, 1, "digits", split)


def test_digits_default_split_is_train():
    assert len(load_dataset("digits")) == 1500


def test_digits_split_disjoint_covering_and_deterministic():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    tr, te = set(train.indices.tolist()), set(test.indices.tolist())
    assert not tr & te
    assert tr | te == set(range(1797))
    again = load_dataset("digits", split="test")
    assert torch.equal(again.indices, test.indices)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    # Pin the partition itself so a scikit-learn change to the splitter cannot pass silently.
    assert test.indices[:5].tolist() == [21, 24, 28, 34, 35]
    assert int(test.indices.sum()) == 275657


def test_digits_values_match_sklearn_scaled_to_unit_range():
    ds = load_dataset("digits", split="all")
    raw = sk_load_digits()
    expected = torch.from_numpy(raw.data.reshape(-1, 1, 8, 8).astype(np.float32) / 8 - 1)
    assert torch.equal(ds.images, expected)
    assert torch.equal(ds.labels, torch.from_numpy(raw.target.astype(np.int64)))
    assert ds.images.min() == -1 and ds.images.max() == 1


def test_digits_getitem_returns_image_and_label_tensor():
    ds = load_dataset("digits", split="test")
    image, label = ds[3]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.ndim == 0
    assert torch.equal(image, ds.images[3]) and label == ds.labels[3]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 1, 8, 8) and batch[1].shape == (4,)


def test_digits_accepts_matching_size_and_channels():
    ds = load_dataset("digits", split="test", image_size=8, channels=1)
    assert ds.images.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize(("kwargs", "match"), [({"image_size": 16}, "8x8"), ({"channels": 3}, "greyscale")])
def test_digits_rejects_other_sizes_and_channels(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)


def test_invalid_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", split="val")


# ---------------------------------------------------------------------------------- image folders


def _save(path, size=(12, 12), color=(255, 0, 0), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_class_folder_sorted_classes_and_labels(tmp_path):
    _save(tmp_path / "zebra" / "a.png", color=(0, 0, 255))
    _save(tmp_path / "cat" / "b.jpg", color=(255, 255, 255))
    _save(tmp_path / "cat" / "nested" / "c.PNG", color=(0, 0, 0))
    _save(tmp_path / "dog" / "d.bmp", color=(0, 255, 0))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    ds = load_dataset(str(tmp_path), image_size=8)
    assert ds.class_names == ["cat", "dog", "zebra"] and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 1, 2]
    assert ds.images.shape == (4, 3, 8, 8) and ds.images.dtype == torch.float32
    assert ds.channels == 3 and ds.image_size == 8 and ds.name == str(tmp_path)
    assert [f.rsplit("/", 1)[-1] for f in ds.files] == ["b.jpg", "c.PNG", "d.bmp", "a.png"]
    assert torch.allclose(ds.images[3], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 8, 8))
    assert torch.equal(ds.images[1], torch.full((3, 8, 8), -1.0))
    assert ds.images.min() >= -1 and ds.images.max() <= 1


def test_flat_folder_is_unconditional(tmp_path):
    _save(tmp_path / "x.png")
    _save(tmp_path / "y.webp")
    ds = load_dataset(str(tmp_path), split="all", image_size=12)
    assert ds.num_classes == 0 and ds.class_names == []
    assert ds.labels.tolist() == [0, 0] and ds.labels.dtype == torch.int64
    image, label = ds[0]
    assert image.shape == (3, 12, 12) and label.item() == 0


def test_folder_channels_inferred_and_forced(tmp_path):
    _save(tmp_path / "g.png", color=128, mode="L")
    grey = load_dataset(str(tmp_path), image_size=12)
    assert grey.channels == 1 and grey.images.shape == (1, 1, 12, 12)
    assert torch.allclose(grey.images, torch.full_like(grey.images, 128 / 127.5 - 1), atol=1e-6)
    rgb = load_dataset(str(tmp_path), image_size=12, channels=3)
    assert rgb.images.shape == (1, 3, 12, 12)
    _save(tmp_path / "c.png", color=(255, 0, 0))
    assert load_dataset(str(tmp_path)).channels == 3
    red_as_grey = load_dataset(str(tmp_path), channels=1)
    assert red_as_grey.images.shape == (2, 1, 12, 12)


def test_folder_default_image_size_is_smallest_short_side(tmp_path):
    _save(tmp_path / "a.png", size=(20, 10))
    _save(tmp_path / "b.png", size=(16, 16))
    assert load_dataset(str(tmp_path)).image_size == 10


def test_centre_crop_keeps_the_middle(tmp_path):
    # 24x8 image: left third red, middle green, right blue; an 8x8 centre crop is all green.
    arr = np.zeros((8, 24, 3), np.uint8)
    arr[:, :8, 0] = arr[:, 8:16, 1] = arr[:, 16:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "stripes.png")
    ds = load_dataset(str(tmp_path), image_size=8)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 8, 8)
    assert torch.allclose(ds.images[0], green)


def test_center_crop_resize_box_then_bicubic_sizes():
    image = Image.new("RGB", (100, 40), (10, 20, 30))
    out = center_crop_resize(image, 8)  # 100x40 -> box 50x20 -> bicubic 20x8 -> crop 8x8
    assert out.size == (8, 8)
    assert np.asarray(out).reshape(-1, 3).tolist() == [[10, 20, 30]] * 64


def test_folder_test_split_is_an_error(tmp_path):
    _save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="no test split"):
        load_dataset(str(tmp_path), split="test")


def test_missing_path_error_names_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_dataset(str(missing))
    assert str(missing) in str(info.value)


def test_file_instead_of_directory_is_an_error(tmp_path):
    _save(tmp_path / "a.png")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        load_dataset(str(tmp_path / "a.png"))


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found") as info:
        load_dataset(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_empty_class_folder_is_an_error(tmp_path):
    _save(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(str(tmp_path))


def test_mixed_files_and_class_folders_is_an_error(tmp_path):
    _save(tmp_path / "a" / "x.png")
    _save(tmp_path / "stray.png")
    with pytest.raises(ValueError, match="mixes image files"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("image_size", [None, 8])
def test_unreadable_image_names_the_file(tmp_path, image_size):
    _save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot read image file") as info:
        load_dataset(str(tmp_path), image_size=image_size, channels=3)
    assert "broken.png" in str(info.value)


def test_folder_rejects_bad_channels(tmp_path):
    _save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="channels"):
        load_dataset(str(tmp_path), channels=4)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32896, np.uint16)  # 128 * 257: mid-grey in 16 bits
    arr[0, 0] = 65535
    Image.fromarray(arr).save(tmp_path / "deep.png")
    ds = load_dataset(str(tmp_path), image_size=8)
    assert ds.channels == 1
    assert ds.images[0, 0, 0, 0].item() == 1.0
    assert abs(ds.images[0, 0, 4, 4].item() - (128 / 127.5 - 1)) < 1e-6
