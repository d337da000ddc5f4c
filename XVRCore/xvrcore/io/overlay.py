"""Quality-assurance pictures of a registration (PIL only): edge overlay and checkerboard.

* :func:`overlay_picture`: the X-ray (windowed on its exposed pixels, dense = bright) with the
  registered DRR's edges blended in colour, the outlines of reprojected structures labelled with
  their names or ids, a legend and the similarity/quality text. A good registration puts the
  coloured edges on the X-ray's own edges.
* :func:`checkerboard_picture`: tiles taken alternately from the X-ray and the DRR; at a good
  pose anatomy runs straight across the tile borders.

Edges are the DRR's gradient-magnitude ridges (non-maximum suppression across the edge, as in
Canny, without hysteresis) above a fraction of the strongest. A structure's outline is the
boundary of its silhouette: the pixels whose ray crosses the structure (exact Siddon path length
through its voxels > 0) and that touch a pixel whose ray misses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .images import to_uint8

__all__ = [
    "EDGE_COLOR",
    "checkerboard_picture",
    "drr_edges",
    "gradient_magnitude",
    "outline",
    "overlay_picture",
    "structure_colors",
]

EDGE_COLOR = (0, 255, 64)
# Distinct, saturated colours that stand out on grey (edges keep green).
_PALETTE = (
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (255, 64, 255), (0, 230, 230), (255, 128, 0),
    (160, 96, 255), (255, 160, 160), (128, 255, 128), (200, 200, 255),
)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with replicated borders."""
    if sigma <= 0:
        return image
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def gradient_magnitude(image, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column and row derivatives (central differences of the σ-smoothed image) and their magnitude."""
    smooth = _smooth(np.asarray(image, dtype=np.float64), sigma)
    gy, gx = np.gradient(smooth)
    return gx, gy, np.hypot(gx, gy)


def drr_edges(drr, sigma: float = 1.0, relative_threshold: float = 0.15) -> np.ndarray:
    """Bool edge map: gradient-magnitude maxima across the edge, ≥ ``relative_threshold`` × the strongest."""
    gx, gy, mag = gradient_magnitude(drr, sigma)
    # Quantise the gradient direction to 0/45/90/135° and compare with the two neighbours along it.
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = ((angle + 22.5) // 45).astype(int) % 4
    steps = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}  # (row, column) step along the gradient
    padded = np.pad(mag, 1, mode="constant", constant_values=np.inf)  # borders never count as maxima
    h, w = mag.shape
    keep = np.zeros_like(mag, dtype=bool)
    for s, (dr, dc) in steps.items():
        ahead = padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        behind = padded[1 - dr : 1 - dr + h, 1 - dc : 1 - dc + w]
        keep |= (sector == s) & (mag >= ahead) & (mag > behind)
    top = float(mag.max())
    return keep & (mag >= relative_threshold * top) if top > 0 else np.zeros_like(keep)


def outline(mask) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it.

    The image border is not a boundary: a structure cut off by the field of view gets no line there.
    """
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, mode="edge")
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def structure_colors(labels: Sequence[int], colors: Mapping[int, tuple[int, int, int]] | None = None) -> dict:
    """A colour per label: the given one, else the palette in order."""
    colors = colors or {}
    return {label: tuple(colors.get(label, _PALETTE[i % len(_PALETTE)])) for i, label in enumerate(labels)}


def _grey(image, mask) -> np.ndarray:
    return to_uint8(image, mask=mask if mask is not None and np.any(mask) else None)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _shadowed(draw: ImageDraw.ImageDraw, xy, text: str, fill, font) -> None:
    x, y = xy
    draw.text((x + 1, y + 1), text, fill=(0, 0, 0), font=font)
    draw.text((x, y), text, fill=fill, font=font)


def _label_anchor(mask: np.ndarray) -> tuple[int, int] | None:
    """A point inside the structure near its centre (the mask pixel nearest the centroid)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    i = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(cols[i]), int(rows[i])


def _legend(draw, font, entries: list[tuple[tuple[int, int, int] | None, str]], height: int) -> None:
    line = 12
    fit = max(1, (height - 4) // line)
    if len(entries) > fit:
        entries = entries[: fit - 1] + [(None, f"... {len(entries) - fit + 1} more")]
    width = max(draw.textlength(text, font=font) for _, text in entries) + 18
    draw.rectangle([0, 0, int(width) + 4, len(entries) * line + 4], fill=(0, 0, 0, 150))
    for i, (color, text) in enumerate(entries):
        y = 2 + i * line
        if color is not None:
            draw.rectangle([3, y + 3, 11, y + 9], fill=color + (255,))
        draw.text((15, y), text, fill=(255, 255, 255, 255), font=font)


def overlay_picture(
    xray,
    drr,
    *,
    mask=None,
    structures: Mapping[int, np.ndarray] | None = None,
    names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    text: Sequence[str] = (),
    edge_alpha: float = 0.8,
) -> Image.Image:
    """The QA overlay (RGB, the X-ray's size); see the module docstring.

    ``xray`` and ``drr``: ``(H, W)`` line-integral images (dense = high); ``mask``: exposed pixels;
    ``structures``: silhouettes from :func:`xvrcore.drr.structure_masks`; ``names``: label → name.
    """
    x = np.asarray(xray, dtype=np.float64)
    d = np.asarray(drr, dtype=np.float64)
    if x.shape != d.shape:
        raise ValueError(f"X-ray {x.shape} and DRR {d.shape} differ in size")
    rgb = np.repeat(_grey(x, mask)[..., None], 3, axis=2).astype(np.float64)
    edges = drr_edges(d)
    if mask is not None:
        edges &= np.asarray(mask, dtype=bool)
    rgb[edges] = (1 - edge_alpha) * rgb[edges] + edge_alpha * np.array(EDGE_COLOR)
    structures = dict(structures or {})
    palette = structure_colors(list(structures), colors)
    for label, silhouette in structures.items():
        rgb[outline(silhouette)] = palette[label]
    picture = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    font = _font()
    draw = ImageDraw.Draw(picture)
    names = names or {}
    for label, silhouette in structures.items():
        anchor = _label_anchor(silhouette)
        if anchor is not None:
            _shadowed(draw, anchor, names.get(label, str(label)), palette[label], font)
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    entries = [(EDGE_COLOR, "DRR edges")]
    entries += [(palette[label], f"{label} {names[label]}" if label in names else f"label {label}") for label in structures]
    entries += [(None, line) for line in text]
    _legend(ImageDraw.Draw(layer), font, entries, picture.height)
    return Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")


def checkerboard_picture(xray, drr, *, mask=None, tiles: int = 8) -> Image.Image:
    """Grey checkerboard (the X-ray's size): even tiles from the X-ray, odd tiles from the DRR."""
    x = np.asarray(xray, dtype=np.float64)
    d = np.asarray(drr, dtype=np.float64)
    if x.shape != d.shape:
        raise ValueError(f"X-ray {x.shape} and DRR {d.shape} differ in size")
    size = max(1, math.ceil(min(x.shape) / max(1, tiles)))
    rows, cols = np.indices(x.shape)
    use_drr = ((rows // size + cols // size) % 2).astype(bool)
    return Image.fromarray(np.where(use_drr, _grey(d, mask), _grey(x, mask)), "L")
