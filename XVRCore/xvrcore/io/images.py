"""Turning DRRs and X-rays into pictures people look at (PNG), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_write_bytes

__all__ = ["labelled_panel", "png_bytes", "save_png", "to_uint8"]


def to_uint8(image, low_percentile: float = 0.5, high_percentile: float = 99.5, mask=None) -> np.ndarray:
    """Window an image to 8 bits between two percentiles (of the masked pixels, if given)."""
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    values = arr[np.asarray(mask, dtype=bool)] if mask is not None else arr
    lo, hi = np.percentile(values, [low_percentile, high_percentile]) if values.size else (0.0, 1.0)
    scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, image) -> Path:
    """Save a uint8 array or a PIL image as PNG, atomically."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return atomic_write_bytes(path, png_bytes(pil))


def labelled_panel(images: list[np.ndarray], titles: list[str], scale: int = 1) -> Image.Image:
    """Side-by-side grey-scale panels with a caption above each."""
    tiles = [Image.fromarray(img).convert("RGB") for img in images]
    if scale != 1:
        tiles = [t.resize((t.width * scale, t.height * scale), Image.NEAREST) for t in tiles]
    caption = 18
    width = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    height = max(t.height for t in tiles) + caption
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, title in zip(tiles, titles, strict=True):
        canvas.paste(tile, (x, caption))
        draw.text((x + 4, 3), title, fill=(255, 255, 255))
        x += tile.width + 4
    return canvas
