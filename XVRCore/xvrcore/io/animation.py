"""The frames of a registration's animation and its GIF file (PIL only).

A frame (:func:`animation_frame`) is a caption strip over two panels of the X-ray's shape:

* left, the X-ray (windowed on its exposed pixels, dense = bright) with the DRR's edges in green, as in
  the QA overlay (:func:`xvrcore.io.overlay.drr_edges`);
* right, a colour fusion: the X-ray in magenta (red and blue), the DRR in green. Where the two agree
  the picture is grey; a misplaced DRR shows green and magenta fringes.

The caption (:data:`CAPTION_HEIGHT` pixels) says which stage and iteration the pose is from and its
similarity. :func:`save_gif` writes the frames atomically, holding the first and last ones longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_write
from .images import to_uint8
from .overlay import EDGE_COLOR, drr_edges

__all__ = ["CAPTION_HEIGHT", "animation_frame", "panel_size", "save_gif"]

CAPTION_HEIGHT = 28  # two lines of the default font
_HOLD_S = 1.5  # the start and the result stay this long on screen


def panel_size(width: int, height: int, longer_side: int) -> tuple[int, int]:
    """``(width, height)`` of a panel showing a ``width × height`` image with its longer side ``longer_side``."""
    scale = longer_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _windowed(image, mask) -> np.ndarray:
    return to_uint8(image, mask=mask if mask is not None and np.any(mask) else None)


def animation_frame(xray, drr, *, mask=None, caption: Sequence[str] = (), longer_side: int = 256) -> Image.Image:
    """One frame (RGB): the caption over the edge overlay and the fusion of ``xray`` and ``drr`` ``(H, W)``.

    Each panel is the image scaled so its longer side has ``longer_side`` pixels.
    """
    x, d = np.asarray(xray, dtype=np.float64), np.asarray(drr, dtype=np.float64)
    if x.shape != d.shape:
        raise ValueError(f"X-ray {x.shape} and DRR {d.shape} differ in size")
    grey_x, grey_d = _windowed(x, mask), _windowed(d, mask)
    edges = drr_edges(d)
    if mask is not None:  # the collimated border is no part of the comparison: black
        exposed = np.asarray(mask, dtype=bool)
        edges &= exposed
        grey_x, grey_d = grey_x * exposed, grey_d * exposed
    overlay = np.repeat(grey_x[..., None], 3, axis=2)
    overlay[edges] = EDGE_COLOR
    fusion = np.stack([grey_x, grey_d, grey_x], axis=2)
    size = panel_size(x.shape[1], x.shape[0], longer_side)
    frame = Image.new("RGB", (2 * size[0], CAPTION_HEIGHT + size[1]))
    for column, panel in enumerate((overlay, fusion)):
        picture = Image.fromarray(panel, "RGB").resize(size, Image.Resampling.NEAREST)  # crisp edges
        frame.paste(picture, (column * size[0], CAPTION_HEIGHT))
    draw, font = ImageDraw.Draw(frame), ImageFont.load_default()
    for line, text in enumerate(caption[:2]):
        draw.text((4, 2 + 12 * line), text, fill=(255, 255, 255), font=font)
    return frame


def _shared_palette(frames: Sequence[Image.Image], samples: int = 4) -> Image.Image:
    """One 256-colour palette for all frames, from a few of them (first to last): one global GIF palette,
    mapped to without a per-frame quantisation (10× faster) or dithering (which compresses badly)."""
    picks = sorted({round(i * (len(frames) - 1) / max(1, samples - 1)) for i in range(samples)})
    width, height = frames[0].size
    montage = Image.new("RGB", (width, height * len(picks)))
    for row, index in enumerate(picks):
        montage.paste(frames[index].convert("RGB"), (0, row * height))
    return montage.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def save_gif(path: str | Path, frames: Sequence[Image.Image], fps: float = 10.0) -> Path:
    """Write ``frames`` as a looping GIF at ``fps`` frames per second, atomically; returns the path."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    step_ms = 1000.0 / fps
    durations = [round(step_ms)] * len(frames)
    for end in {0, len(frames) - 1}:
        durations[end] = max(durations[end], round(1000 * _HOLD_S))

    palette = _shared_palette(frames)
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]

    def write(tmp: Path) -> None:
        indexed[0].save(tmp, format="GIF", save_all=True, append_images=indexed[1:], duration=durations, loop=0,
                        disposal=1)

    return atomic_write(path, write)
