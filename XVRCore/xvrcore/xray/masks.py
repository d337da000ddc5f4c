"""The exposure mask of a DICOM X-ray: shutters, collimators, a round field of view, padding, blanking.

Exposure **mask** (True = exposed anatomy): the intersection of every shape in
``ShutterShape (0018,1600)`` (RECTANGULAR: ``ShutterLeft/RightVerticalEdge``,
``ShutterUpper/LowerHorizontalEdge``; CIRCULAR: ``CenterOfCircularShutter``,
``RadiusOfCircularShutter``; POLYGONAL: ``VerticesOfThePolygonalShutter``) and of
``CollimatorShape (0018,1700)`` with the matching Collimator tags (DICOM pixel coordinates,
first pixel = 1\\1, rows before columns); a ROUND ``FieldOfViewShape (0018,1147)`` (the inscribed
circle); ``PixelPaddingValue (0028,0120)``; and an automatically detected digitally blanked
surround (the border carries one exact value and the rest of the image is a disk or a rectangle,
e.g. the circular field of an image intensifier in a secondary capture). A shape that does not
fit the image (edges outside it, or < 2 % of it left) is ignored with a warning; a mask that
leaves < 2 % of the image is reset to the whole image (warned).

The region the shutter/collimator tags exclude is returned as well: with no primary photons it
is evidence of the image's polarity (:mod:`xvrcore.xray.polarity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from .pixels import DecodedPixels
from .tags import as_floats, as_list, code_string, header_value

__all__ = ["exposure_mask"]

#: (fits the image, exposed region (H, W), description for the warning), or None when tags are missing.
_Shape = tuple[bool, np.ndarray, str] | None


@dataclass
class _ShapeTags:
    """The shutter (``prefix="Shutter"``) or collimator (``"Collimator"``) tags on the image's pixel grid."""

    ds: Dataset
    prefix: str
    rows: int
    cols: int
    aspect: float  # row spacing / column spacing
    warnings: list[str]
    r: np.ndarray = field(init=False)  # (H, 1) DICOM row coordinates: first pixel = 1
    c: np.ndarray = field(init=False)  # (1, W) DICOM column coordinates

    def __post_init__(self) -> None:
        self.r = np.arange(self.rows, dtype=np.float64)[:, None] + 1.0
        self.c = np.arange(self.cols, dtype=np.float64)[None, :] + 1.0

    def floats(self, keyword: str) -> list[float] | None:
        return as_floats(header_value(self.ds, keyword))


def _rectangle(t: _ShapeTags) -> _Shape:
    p = t.prefix
    kws = [
        f"{p}LeftVerticalEdge",
        f"{p}RightVerticalEdge",
        f"{p}UpperHorizontalEdge",
        f"{p}LowerHorizontalEdge",
    ]
    vals = [(t.floats(k) or [None])[0] for k in kws]
    if None in vals:
        t.warnings.append(f"{p}Shape RECTANGULAR without all four edges; ignored")
        return None
    left, right, upper, lower = vals
    tol_c, tol_r = 0.02 * t.cols + 1, 0.02 * t.rows + 1
    ok = (1 - tol_c <= left < right <= t.cols + tol_c) and (1 - tol_r <= upper < lower <= t.rows + tol_r)
    m = (t.c >= left) & (t.c <= right) & (t.r >= upper) & (t.r <= lower)
    return ok, m, f"{p} edges left {left:g}, right {right:g}, upper {upper:g}, lower {lower:g}"


def _circle(t: _ShapeTags) -> _Shape:
    p = t.prefix
    centre, radius = t.floats(f"CenterOfCircular{p}"), t.floats(f"RadiusOfCircular{p}")
    if not centre or len(centre) != 2 or not radius:
        t.warnings.append(f"{p}Shape CIRCULAR without centre and radius; ignored")
        return None
    (r0, c0), rad = centre, radius[0]
    ok = rad > 0 and 0 <= r0 <= t.rows + 1 and 0 <= c0 <= t.cols + 1
    m = (t.c - c0) ** 2 + ((t.r - r0) * t.aspect) ** 2 <= rad**2
    return ok, m, f"circular {p.lower()} centre {r0:g}\\{c0:g}, radius {rad:g}"


def _polygon(t: _ShapeTags) -> _Shape:
    p = t.prefix
    verts = t.floats(f"VerticesOfThePolygonal{p}")
    if not verts or len(verts) < 6 or len(verts) % 2:
        t.warnings.append(f"{p}Shape POLYGONAL without at least three vertices; ignored")
        return None
    pts = np.asarray(verts).reshape(-1, 2)
    rows, cols = t.rows, t.cols
    ok = bool(
        np.all(
            (pts[:, 0] >= 1 - 0.02 * rows - 1)
            & (pts[:, 0] <= rows * 1.02 + 1)
            & (pts[:, 1] >= 1 - 0.02 * cols - 1)
            & (pts[:, 1] <= cols * 1.02 + 1)
        )
    )
    return ok, _polygon_mask(pts, t.r, t.c), f"polygonal {p.lower()} with {len(pts)} vertices"


_SHAPES: dict[str, Callable[[_ShapeTags], _Shape]] = {
    "RECTANGULAR": _rectangle,
    "CIRCULAR": _circle,
    "POLYGONAL": _polygon,
}


def _polygon_mask(pts: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Even–odd rule for pixel centres; ``pts`` rows are (row, column)."""
    inside = np.zeros(np.broadcast_shapes(r.shape, c.shape), bool)
    n = len(pts)
    for i in range(n):
        (y1, x1), (y2, x2) = pts[i], pts[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > r) != (y2 > r)
        x_at = x1 + (x2 - x1) * (r - y1) / (y2 - y1)
        inside ^= crosses & (c < x_at)
    return inside


def _shape_masks(t: _ShapeTags) -> np.ndarray | None:
    """Exposed region (H, W) of every shape the tags name (their intersection); None if none fits."""
    shapes = [
        str(s).strip().upper() for s in as_list(header_value(t.ds, f"{t.prefix}Shape")) if str(s).strip()
    ]
    if not shapes:
        return None
    total = np.ones((t.rows, t.cols), bool)
    used = False
    for shape in shapes:
        make = _SHAPES.get(shape)
        if make is None:
            t.warnings.append(f"{t.prefix}Shape {shape} is not a defined term; ignored")
            continue
        found = make(t)
        if found is None:
            continue
        ok, m, desc = found
        if not ok or m.mean() < 0.02:
            t.warnings.append(f"{desc} do not fit the {t.rows}×{t.cols} image; {t.prefix.lower()} ignored")
            continue
        total &= m
        used = True
    return total if used else None


def _blanked_surround(stored: np.ndarray) -> tuple[np.ndarray, str] | None:
    """A digitally blanked surround: one exact value on the border, the rest a disk or a rectangle."""
    rows, cols = stored.shape
    ring = np.concatenate([stored[0], stored[-1], stored[:, 0], stored[:, -1]])
    values, counts = np.unique(ring, return_counts=True)
    if counts.max() < 0.5 * ring.size:
        return None
    blank_value = values[counts.argmax()]
    exposed = stored != blank_value
    frac = exposed.mean()
    if not 0.2 < frac < 0.995:
        return None
    rr, cc = np.nonzero(exposed)
    r0, c0 = rr.mean(), cc.mean()
    radius = math.sqrt(exposed.sum() / math.pi)
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    disk = (r - r0) ** 2 + (c - c0) ** 2 <= radius**2
    if (disk & exposed).sum() / (disk | exposed).sum() >= 0.95:
        return (r - r0) ** 2 + (c - c0) ** 2 <= (
            radius - 1.5
        ) ** 2, f"circular field (radius {radius:.0f} px)"
    row_any = exposed.mean(1) > 0.05
    col_any = exposed.mean(0) > 0.05
    r_lo, r_hi = np.argmax(row_any), rows - np.argmax(row_any[::-1])
    c_lo, c_hi = np.argmax(col_any), cols - np.argmax(col_any[::-1])
    box = np.zeros_like(exposed)
    box[r_lo:r_hi, c_lo:c_hi] = True
    if (box & exposed).sum() / (box | exposed).sum() >= 0.95:
        return box & exposed, f"rectangle rows {r_lo}–{r_hi - 1}, columns {c_lo}–{c_hi - 1}"
    return None


def _round_field_of_view(ds: Dataset, rows: int, cols: int, spacing: tuple[float, float]) -> np.ndarray:
    """The circle inscribed in the image (or of ``FieldOfViewDimensions`` if smaller), centred."""
    aspect = spacing[0] / spacing[1]
    diameter = min(rows, cols)
    fov = as_floats(header_value(ds, "FieldOfViewDimensions"))
    if fov:
        diameter = min(diameter, fov[0] / spacing[1])
    r = np.arange(rows)[:, None] - (rows - 1) / 2
    c = np.arange(cols)[None, :] - (cols - 1) / 2
    return c**2 + (r * aspect) ** 2 <= (diameter / 2) ** 2


def exposure_mask(
    ds: Dataset, px: DecodedPixels, spacing: tuple[float, float], warnings: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Exposed-pixel mask (H, W) and the region that the collimator/shutter tags exclude (None if none)."""
    _, rows, cols = px.frames.shape
    aspect = spacing[0] / spacing[1]
    tagged = np.ones((rows, cols), bool)
    for prefix in ("Shutter", "Collimator"):
        m = _shape_masks(_ShapeTags(ds, prefix, rows, cols, aspect, warnings))
        if m is not None:
            tagged &= m
    mask = tagged.copy()
    if code_string(header_value(ds, "FieldOfViewShape")) == "ROUND":
        mask &= _round_field_of_view(ds, rows, cols, spacing)
    padding = as_floats(ds.get("PixelPaddingValue"))
    if padding is not None:
        mask &= px.stored_first != padding[0]
    blank = _blanked_surround(px.stored_first) if px.stored_first.ndim == 2 else None
    if blank is not None:
        mask &= blank[0]
        warnings.append(f"blanked surround detected (one exact value outside a {blank[1]}); masked")
    if mask.mean() < 0.02:
        warnings.append("the exposure mask left almost nothing; it was reset to the whole image")
        mask[:] = True
    excluded = ~tagged
    return mask, (excluded if excluded.any() else None)
