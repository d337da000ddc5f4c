"""Reading X-ray / DSA DICOM images (XA, RF, DX, CR …) together with their C-arm geometry.

:func:`read_xray` returns an :class:`XrayImage`: a line-integral-like image (dense = high), the
image as stored (for display), a :class:`~xvrcore.geometry.Detector` (always the detector-side,
mirrored view, see :mod:`xvrcore.conventions`), the positioner angles, an exposure mask and a
record of every assumption made. Nothing that identifies the patient is read or reported.

The steps, each in the module that states its rules and DICOM references:

* :mod:`~xvrcore.xray.tags` — reading the file (not DICOM, truncated, no pixel data: refused) and
  looking up attributes (also in the per-frame and shared functional groups of enhanced
  multi-frame objects); :class:`XrayDicomError`.
* :mod:`~xvrcore.xray.pixel_layout` — the declared matrix checked against the pixel data's bytes
  and bounded in memory, before anything is decoded.
* :mod:`~xvrcore.xray.pixels` — choosing the frame(s) (validated before decoding), decoding the
  pixel data (pydicom, else SimpleITK), the modality LUT, combining frames and DSA subtraction.
* :mod:`~xvrcore.xray.geometry` and :mod:`~xvrcore.xray.angles` — pixel spacing, SID, SOD,
  principal point, positioner angles, patient position/orientation, in order of preference;
  :mod:`~xvrcore.xray.overrides` — :class:`GeometryOverrides`, which always win.
* :mod:`~xvrcore.xray.masks` — the exposure mask (shutters, collimators, round field of view,
  padding, blanked surround).
* :mod:`~xvrcore.xray.polarity` — where dense tissue is in the file's values, and the conversion
  to line integrals (raw or log-like).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..geometry.camera import Detector, Intrinsics
from .angles import check_orientation, header_angles, patient_orientation_of, patient_position_of
from .geometry import (
    GeometryLookup,
    HeaderGeometry,
    pixel_spacing,
    principal_offset,
    raise_geometry_problems,
    source_detector_distance,
    source_isocentre_distance,
)
from .masks import exposure_mask
from .overrides import OVERRIDE_HINTS, GeometryOverrides
from .pixel_layout import PixelLayout, check_pixel_layout
from .pixels import DecodedPixels, choose_frames, combine_frames, decode_pixels, display_map
from .polarity import (
    ImageEvidence,
    decide_polarity,
    intensity_conversion,
    polarity_summary,
    reference_image,
)
from .tags import PROJECTION_MODALITIES, XrayDicomError, code_string, read_dataset

__all__ = ["XrayImage", "read_xray"]


@dataclass(repr=False, eq=False)
class XrayImage:
    """An X-ray image with its C-arm geometry (every field's origin: the modules :mod:`.reader` names)."""

    pixels: np.ndarray  # float32 (H, W), line-integral-like: dense = high
    raw: np.ndarray  # float32 (H, W), after the modality LUT, MONOCHROME1 inverted: high = displayed bright
    detector: Detector
    mask: np.ndarray  # bool (H, W): True where anatomy was exposed
    sod: float | None
    primary_angle: float | None
    secondary_angle: float | None
    patient_position: str | None
    polarity: str
    source: str
    frame_info: str
    warnings: list[str]
    modality: str
    sop_class: str
    number_of_frames: int = 1
    patient_orientation: tuple[str, ...] | None = None
    intensity: str = "log"  # "exponential" (raw detector values, -log applied) or "log"
    dense_high_in_file: bool = True
    polarity_evidence: list[str] = field(default_factory=list)
    geometry_sources: dict[str, str] = field(default_factory=dict)

    @property
    def intrinsics(self) -> Intrinsics:
        return self.detector.intrinsics()

    @property
    def magnification(self) -> float | None:
        return None if self.sod is None else self.detector.sdd / self.sod

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class).name if self.sop_class else ""

    def __repr__(self) -> str:
        d = self.detector
        angles = (
            "angles=unknown"
            if self.primary_angle is None
            else f"primary={self.primary_angle:+.1f}°, secondary={self.secondary_angle:+.1f}°"
        )
        sod = "sod=unknown" if self.sod is None else f"sod={self.sod:g} mm"
        return (
            f"XrayImage({Path(self.source).name}: {self.modality} {d.rows}×{d.cols}, {self.frame_info}; "
            f"sdd={d.sdd:g} mm, spacing={d.row_spacing:g}×{d.col_spacing:g} mm, {sod}, {angles}; "
            f"{self.polarity}; {len(self.warnings)} warning(s))"
        )


@dataclass(frozen=True)
class _Header:
    """What the whole reading needs from the header before the pixels are decoded."""

    ds: Dataset
    name: str  # the file name: it starts every message (never a patient attribute)
    modality: str
    sop_class: str
    rows: int
    cols: int
    n_frames: int
    layout: PixelLayout


def _read_header(path: Path, name: str, warnings: list[str]) -> _Header:
    """The dataset, refused unless it is a projection X-ray of at least 2×2 pixels whose pixel data hold
    the sizes its header declares."""
    ds = read_dataset(path, name)
    modality = code_string(ds.get("Modality"))
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality and modality not in PROJECTION_MODALITIES and modality != "OT":
        raise XrayDicomError(
            f"{name}: Modality {modality} is not a projection X-ray (expected one of "
            f"{', '.join(sorted(PROJECTION_MODALITIES))})"
        )
    if modality in ("", "OT"):
        warnings.append(f"Modality {modality or 'absent'}: treated as an X-ray projection")
    layout = check_pixel_layout(ds, name)
    rows, cols = layout.rows, layout.cols
    if rows < 2 or cols < 2:
        raise XrayDicomError(f"{name}: the image is {rows}×{cols} pixels; an X-ray needs at least 2×2")
    return _Header(ds, name, modality, sop_class, rows, cols, layout.frames, layout)


def _header_geometry(g: GeometryLookup, name: str) -> HeaderGeometry:
    """Every geometry value in the order its warnings are reported; an error if SID or spacing is missing."""
    sid = source_detector_distance(g)
    sod = source_isocentre_distance(g, sid)
    spacing = pixel_spacing(g, sid, sod)
    raise_geometry_problems(g, name)
    primary, secondary = header_angles(g)
    if sod is None:
        g.warnings.append(f"no source-isocentre distance; give it with {OVERRIDE_HINTS['sod']}")
    position = patient_position_of(g)
    orientation = patient_orientation_of(g)
    offset = principal_offset(g)
    return HeaderGeometry(spacing, sid, sod, primary, secondary, position, orientation, offset, g.sources)


def _check_modes(intensity: str, dense: str) -> None:
    if intensity not in ("auto", "lin", "log"):
        raise ValueError(f"intensity must be 'auto', 'lin' or 'log', got {intensity!r}")
    if dense not in ("auto", "high", "low"):
        raise ValueError(f"dense must be 'auto', 'high' or 'low', got {dense!r}")


def _decode_checked(h: _Header, path: Path, warnings: list[str]) -> DecodedPixels:
    """The decoded frames, which must match the header's frame count and matrix."""
    px = decode_pixels(h.ds, path, h.name, warnings, h.layout)
    if px.frames.shape[1:] != (h.rows, h.cols) or px.frames.shape[0] != h.n_frames:
        raise XrayDicomError(
            f"{h.name}: decoded pixel data {px.frames.shape} do not match {h.n_frames} frames of {h.rows}×{h.cols}"
        )
    return px


def read_xray(
    path,
    frame: int | str | None = None,
    mask_frame: int | None = None,
    overrides: GeometryOverrides | None = None,
    *,
    intensity: str = "auto",
    dense: str = "auto",
) -> XrayImage:
    """Read an X-ray/DSA DICOM file with its geometry (see the module docstring).

    ``frame``: None, an index, or ``"max"``/``"min"``/``"mean"`` over frames (line-integral
    domain); ``mask_frame``: a frame whose line integrals are subtracted (DSA);
    ``overrides``: values to use instead of missing or wrong header values;
    ``intensity``: ``"auto"``, ``"lin"`` (raw detector values, take −log) or ``"log"``;
    ``dense``: ``"auto"``, ``"high"`` or ``"low"`` (where dense tissue is in the file's values).
    Raises :class:`XrayDicomError` with a message naming the file and the remedy.
    """
    _check_modes(intensity, dense)
    path = Path(path)
    warnings: list[str] = []
    h = _read_header(path, path.name, warnings)
    frames = choose_frames(frame, mask_frame, h.n_frames, h.name)
    lookup = GeometryLookup(
        h.ds, overrides or GeometryOverrides(), h.modality, h.rows, h.cols, frames, warnings
    )
    geo = _header_geometry(lookup, h.name)
    px = _decode_checked(h, path, warnings)
    mask, excluded = exposure_mask(h.ds, px, geo.spacing, warnings)
    evidence = ImageEvidence(h.ds, px, h.modality, mask, excluded, reference_image(px.frames))
    decision = decide_polarity(evidence, dense, warnings)
    conversion = intensity_conversion(evidence, decision.dense_high, intensity, warnings)
    pixels, raw, info = combine_frames(px.frames, frames, conversion.convert, display_map(px))
    detector = geo.detector(h.rows, h.cols)
    check_orientation(geo, warnings)
    return XrayImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        raw=np.ascontiguousarray(raw, dtype=np.float32),
        detector=detector,
        mask=mask,
        sod=geo.sod,
        primary_angle=geo.primary,
        secondary_angle=geo.secondary,
        patient_position=geo.patient_position,
        polarity=polarity_summary(px, decision, conversion),
        source=str(path),
        frame_info=info,
        warnings=warnings,
        modality=h.modality,
        sop_class=h.sop_class,
        number_of_frames=h.n_frames,
        patient_orientation=geo.patient_orientation,
        intensity="exponential" if conversion.exponential else "log",
        dense_high_in_file=decision.dense_high,
        polarity_evidence=decision.evidence,
        geometry_sources=geo.sources,
    )
