"""Turn model outputs in ``[-1, 1]`` into uint8 pixels and PNG sample grids (PIL only, no torchvision).

Mapping: clamp to ``[-1, 1]``, then ``round((x + 1) * 127.5)`` (round half to even), so ``-1 -> 0``,
``0 -> 128`` and ``1 -> 255``. Non-finite values (a diverged sampler) are drawn rather than raised on:
NaN as 0 (mid-grey), +inf as 1, -inf as -1, so a grid can still be inspected.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from fpdm.common.checkpoint import atomic_write

__all__ = ["grid_image", "grid_shape", "make_grid", "save_image_grid", "to_uint8"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` in ``[-1, 1]`` -> uint8 ``[N, H, W, C]`` (the layout PIL and NumPy expect)."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape [N, C, H, W], got {tuple(images.shape)}")
    x = images.detach().to(device="cpu", dtype=torch.float32)
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
    pixels = torch.round((x + 1.0) * 127.5).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def grid_shape(n: int, nrow: int | None = None) -> tuple[int, int]:
    """(rows, columns) of the grid; ``nrow`` is images per row (capped at n), default ``ceil(sqrt(n))``."""
    if n < 1:
        raise ValueError(f"need at least one image, got {n}")
    cols = math.isqrt(n - 1) + 1 if nrow is None else int(nrow)
    if cols < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    cols = min(cols, n)
    return math.ceil(n / cols), cols


def make_grid(
    images: torch.Tensor,
    nrow: int | None = None,
    upscale: int = 1,
    padding: int = 1,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile images into one uint8 ``[H', W', C]`` array, row-major.

    Each tile is enlarged ``upscale`` times by pixel repetition (nearest neighbour, so 8x8 digits stay
    crisp), and ``padding`` pixels of ``pad_value`` surround every tile, including the outer border:
    ``H' = rows * (H * upscale + padding) + padding`` and likewise for ``W'``. White padding is the
    default because the digits' background is black.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape [N, 1 or 3, H, W], got {tuple(images.shape)}")
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in 0..255, got {pad_value}")
    tiles = to_uint8(images)
    if upscale > 1:
        tiles = tiles.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, c = tiles.shape
    rows, cols = grid_shape(n, nrow)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top : top + h, left : left + w] = tiles[i]
    return grid


def save_image_grid(images: torch.Tensor, path: str | os.PathLike[str], **style: Any) -> None:
    """Write :func:`grid_image` (same keyword options) as a PNG (greyscale for C=1, RGB for C=3),
    atomically. The file is always PNG whatever the suffix; the parent directory is created."""
    image = grid_image(images, **style)
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def grid_image(
    images: torch.Tensor,
    nrow: int | None = None,
    upscale: int = 1,
    padding: int = 1,
    pad_value: int = 255,
    labels: Sequence[int] | torch.Tensor | None = None,
    caption: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Image.Image:
    """:func:`make_grid` as a PIL image. With `labels`, each tile gets its class in a corner, or, with
    `class_names` and one class per column, each column its class name above it; with `caption`, a line of
    text (the settings) above the grid — all make the image RGB."""
    grid = make_grid(images, nrow=nrow, upscale=upscale, padding=padding, pad_value=pad_value)
    image = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)  # uint8 2-D -> 'L', 3-D -> 'RGB'
    if labels is not None or caption:
        _, cols = grid_shape(len(images), nrow)
        tile = (images.shape[2] * upscale, images.shape[3] * upscale)
        image = _annotate(image, tile, cols, padding, labels, caption, class_names)
    return image


def _annotate(image: Image.Image, tile: tuple[int, int], cols: int, padding: int,
              labels: Sequence[int] | torch.Tensor | None, caption: str | None,
              class_names: Sequence[str] | None = None) -> Image.Image:
    from PIL import ImageDraw, ImageFont

    image = image.convert("RGB")
    try:
        font = ImageFont.load_default(size=11)  # Pillow's scalable font (needs FreeType)
    except (TypeError, ImportError, OSError):
        font = ImageFont.load_default()
    values = None if labels is None else \
        (labels.tolist() if isinstance(labels, torch.Tensor) else list(labels))
    named = class_names and list(class_names) != [str(i) for i in range(len(class_names))]  # not "0", "1", …
    if values and named and all(v == values[i % cols] for i, v in enumerate(values)):
        image = _column_names(image, [class_names[v] for v in values[:cols]], tile[1], padding, font)
        labels = None  # the header says it for every tile
    if labels is not None:
        draw = ImageDraw.Draw(image)
        for i, label in enumerate(labels.tolist() if isinstance(labels, torch.Tensor) else labels):
            top = padding + (i // cols) * (tile[0] + padding)
            left = padding + (i % cols) * (tile[1] + padding)
            draw.text((left + 1, top), str(label), fill=(255, 80, 80), font=font)
    if caption:
        strip = 15
        framed = Image.new("RGB", (image.width, image.height + strip), (255, 255, 255))
        framed.paste(image, (0, strip))
        draw = ImageDraw.Draw(framed)
        text = caption
        while len(text) > 4 and draw.textlength(text, font=font) > image.width - 4:
            text = text[:-2]  # one line: cut what does not fit
        draw.text((2, 1), text if text == caption else text[:-1] + "…", fill=(0, 0, 0), font=font)
        image = framed
    return image


def _column_names(image: Image.Image, names: Sequence[str], width: int, padding: int,
                  font: Any) -> Image.Image:
    """A white strip above the grid with each column's name, cut to the column's width."""
    from PIL import ImageDraw

    strip = 15
    framed = Image.new("RGB", (image.width, image.height + strip), (255, 255, 255))
    framed.paste(image, (0, strip))
    draw = ImageDraw.Draw(framed)
    for c, name in enumerate(names):
        text = name
        while len(text) > 1 and draw.textlength(text, font=font) > width:
            text = text[:-1]
        draw.text((padding + c * (width + padding), 1), text, fill=(0, 0, 0), font=font)
    return framed
