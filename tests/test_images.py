"""Tests for fpdm.common.images: exact [-1, 1] -> uint8 mapping and PNG grid layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fpdm.common.images import grid_shape, make_grid, save_image_grid, to_uint8


def _read(path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def test_to_uint8_exact_values_and_layout():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 3.0, 0.5, -0.5, float("nan")]).view(1, 1, 2, 4)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 4, 1)
    # 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64; clamped extremes; NaN drawn as mid-grey.
    assert out[0, :, :, 0].tolist() == [[0, 255, 128, 0], [255, 191, 64, 128]]


def test_to_uint8_channels_last_for_rgb():
    x = torch.stack([torch.full((2, 3), -1.0), torch.zeros(2, 3), torch.ones(2, 3)]).unsqueeze(0)
    out = to_uint8(x)
    assert out.shape == (1, 2, 3, 3)
    assert (out[0] == np.array([0, 128, 255], np.uint8)).all()


def test_to_uint8_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        to_uint8(torch.zeros(1, 8, 8))


@pytest.mark.parametrize(
    ("n", "nrow", "expected"),
    [
        (1, None, (1, 1)),
        (4, None, (2, 2)),
        (5, None, (2, 3)),
        (10, None, (3, 4)),
        (7, 2, (4, 2)),
        (3, 8, (1, 3)),
    ],
)
def test_grid_shape(n, nrow, expected):
    assert grid_shape(n, nrow) == expected


def test_grid_shape_rejects_bad_input():
    with pytest.raises(ValueError):
        grid_shape(0)
    with pytest.raises(ValueError):
        grid_shape(3, 0)


def test_make_grid_size_arithmetic_and_placement():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # N=3, H=2, W=3
    grid = make_grid(images, nrow=2, upscale=2, padding=1, pad_value=200)
    # rows=2, cols=2, tile 4x6: H' = 2*(4+1)+1 = 11, W' = 2*(6+1)+1 = 15
    assert grid.shape == (11, 15, 1)
    g = grid[:, :, 0]
    assert (g[1:5, 1:7] == 0).all()  # image 0, top-left
    assert (g[1:5, 8:14] == 128).all()  # image 1, top-right
    assert (g[6:10, 1:7] == 255).all()  # image 2, bottom-left
    assert (g[6:10, 8:14] == 200).all()  # empty cell stays padding
    assert (g[0] == 200).all() and (g[:, 7] == 200).all() and (g[5] == 200).all() and (g[-1] == 200).all()


def test_make_grid_upscale_is_nearest_neighbour():
    x = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).view(1, 1, 2, 2)
    grid = make_grid(x, upscale=3, padding=0)[:, :, 0]
    expected = np.kron(np.array([[0, 255], [255, 0]]), np.ones((3, 3), int))
    assert grid.tolist() == expected.tolist()


@pytest.mark.parametrize(("kwargs", "match"), [({"upscale": 0}, "upscale"), ({"padding": -1}, "padding")])
def test_make_grid_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_grid(torch.zeros(1, 1, 2, 2), **kwargs)


def test_make_grid_rejects_unsupported_channels():
    with pytest.raises(ValueError, match="1 or 3"):
        make_grid(torch.zeros(2, 2, 4, 4))


def test_save_greyscale_png(tmp_path):
    images = torch.linspace(-1, 1, 10 * 64).view(10, 1, 8, 8)
    path = tmp_path / "out" / "samples.png"
    save_image_grid(images, path, upscale=4)
    mode, arr = _read(path)
    assert mode == "L"
    # default nrow = ceil(sqrt(10)) = 4 -> 3 rows x 4 cols of 32x32 tiles with 1px padding
    assert arr.shape == (3 * 33 + 1, 4 * 33 + 1)
    assert np.array_equal(arr, make_grid(images, upscale=4)[:, :, 0])
    assert [p.name for p in path.parent.iterdir()] == ["samples.png"]  # no temp file left behind


def test_save_rgb_png_exact_pixels(tmp_path):
    images = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    path = tmp_path / "rgb.png"
    save_image_grid(images, path, nrow=1, padding=0)
    mode, arr = _read(path)
    assert mode == "RGB" and arr.shape == (4, 2, 3)
    assert (arr == np.array([0, 128, 255], np.uint8)).all()


def test_save_overwrites_existing_file(tmp_path):
    path = tmp_path / "grid.png"
    save_image_grid(torch.full((1, 1, 2, 2), -1.0), path, padding=0)
    save_image_grid(torch.full((1, 1, 2, 2), 1.0), path, padding=0)
    assert (_read(path)[1] == 255).all()


def test_grid_with_labels_and_caption(tmp_path):
    images = -torch.ones(4, 1, 8, 8)  # black tiles: any coloured pixel is an annotation
    save_image_grid(images, tmp_path / "plain.png", nrow=2, upscale=4, padding=2)
    save_image_grid(images, tmp_path / "note.png", nrow=2, upscale=4, padding=2, labels=[3, 1, 4, 1],
                    caption="fpdm: ddpm 30 steps")
    plain, note = Image.open(tmp_path / "plain.png"), np.asarray(Image.open(tmp_path / "note.png"))
    assert plain.mode == "L" and note.ndim == 3 and note.shape[0] == plain.height + 15  # the caption strip
    tiles = note[15:]
    for i in range(4):  # each tile has red label pixels in its top-left corner, none elsewhere in it
        top, left = 2 + (i // 2) * 34, 2 + (i % 2) * 34
        corner = tiles[top:top + 14, left:left + 10].astype(int)
        assert ((corner[..., 0] - corner[..., 1]) > 80).any()
        assert (tiles[top + 20:top + 32, left:left + 32] == 0).all()
    assert (note[:15] < 128).any() and (note[:15] == 255).any()  # dark caption text on white


def test_columns_of_one_class_are_named_above(tmp_path):
    """Class names label the columns when each column holds one class (a strip above the grid); digits'
    names ("0", "1", …) and mixed columns keep the corner labels."""
    from fpdm.common.images import grid_image

    images = torch.full((6, 1, 8, 8), -1.0)
    names = ["T-shirt/top", "Trouser", "Pullover"]
    plain = grid_image(images, nrow=3, upscale=4, padding=2)
    named = grid_image(images, nrow=3, upscale=4, padding=2, labels=[0, 1, 2, 0, 1, 2], class_names=names)
    assert named.height == plain.height + 15 and named.width == plain.width
    header = np.asarray(named)[:15]
    assert (header < 128).any() and (np.asarray(named)[15:] == np.asarray(plain.convert("RGB"))).all()
    corner = grid_image(images, nrow=3, upscale=4, padding=2, labels=[0, 1, 2, 1, 1, 2], class_names=names)
    digits = grid_image(images, nrow=3, upscale=4, padding=2, labels=[0, 1, 2, 0, 1, 2],
                        class_names=["0", "1", "2"])
    assert corner.height == digits.height == plain.height
