"""The C-arm geometry of a DICOM X-ray from its header, and the user's overrides of it.

Geometry, in order of preference (the source of every value is kept in
``XrayImage.geometry_sources``; each fallback adds a warning). A value given in
:class:`~xvrcore.xray.overrides.GeometryOverrides` always wins over the header (the warning then
names the header value it replaced). The frames and the mirrored detector-side view are those of
:mod:`xvrcore.conventions`.

* **Detector pixel spacing** (row, column mm at the detector):
  ``ImagerPixelSpacing (0018,1164)`` ("physical distance measured at the front plane of the
  image receptor housing") → ``PixelSpacing (0028,0030)`` ("physical distance in the patient";
  equal to ImagerPixelSpacing unless calibrated — if ``PixelSpacingCalibrationType (0028,0A02)``
  says GEOMETRY/FIDUCIAL it is multiplied by the magnification
  ``EstimatedRadiographicMagnificationFactor (0018,1114)`` or SID/SOD, else used as is with a
  warning that it may be calibrated at the isocentre) → ``FieldOfViewDimensions (0018,1149)``
  divided by Rows/Columns (image-intensifier systems such as the GE Innova files: 200 mm / 512)
  → error. Values that are not positive, not finite or outside 0.005–10 mm count as missing.
  Non-square pixels are kept as they are (the Detector has separate row/column spacings).
* **SID** ``DistanceSourceToDetector (0018,1110)`` (100–5000 mm) → error.
* **SOD** (source to isocentre) ``DistanceSourceToIsocenter (0018,9402)`` →
  ``DistanceSourceToPatient (0018,1111)`` (for DX/CR/MG it is measured to the patient-side
  surface of the table/bucky, not to an isocentre: warned) → SID / ERMF → None (0 counts as
  absent). A negative header value, or one not shorter than the SID, is an error unless ``--sod``
  overrides it: the header contradicts itself, so the SID may be the wrong value.
* **Angles and patient position**: see :mod:`xvrcore.xray.angles`.
* **Principal point**: at the image centre unless ``GeometryOverrides.principal_offset`` is
  given, or the full DX detector description is present — ``DetectorElementSpacing
  (0018,7022)``, ``DetectorActiveOrigin (0018,7028)``, ``DetectorActiveDimensions (0018,7026)``,
  ``FieldOfViewOrigin (0018,7030)``, ``FieldOfViewDimensions (0018,1149)`` (with
  ``FieldOfViewRotation (0018,7032)`` and ``FieldOfViewHorizontalFlip (0018,7034)``) — in which
  case the principal point is taken at the centre of the active detector area (where SID is
  measured). ``DetectorActiveOrigin`` alone is *not* a principal point (xvr's converter
  repurposes it that way; the standard does not): it is reported and ignored.
* Enhanced multi-frame objects: each of these attributes is also looked up in the per-frame
  and shared functional groups (:func:`xvrcore.xray.tags.header_value`).

A SID or pixel spacing that is neither in the header nor overridden is an
:class:`~xvrcore.xray.tags.XrayDicomError` naming every missing value and its override
(:data:`~xvrcore.xray.overrides.OVERRIDE_HINTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..geometry.camera import Detector
from .overrides import OVERRIDE_HINTS, GeometryOverrides, spacing_in_range
from .pixels import FrameChoice
from .tags import XrayDicomError, as_floats, code_string, describe, dicom_text, header_value, tag_label

__all__ = [
    "GeometryLookup",
    "HeaderGeometry",
    "pixel_spacing",
    "principal_offset",
    "raise_geometry_problems",
    "source_detector_distance",
    "source_isocentre_distance",
]

_SURFACE_SOD_MODALITIES = {"DX", "CR", "RG", "MG", "IO", "PX"}  # DistanceSourceToPatient ends at the table
_SID_RANGE = (100.0, 5000.0)  # mm


# ---- what the geometry steps share --------------------------------------------------------------------


@dataclass
class GeometryLookup:
    """What the geometry steps share: the header of the chosen frame, the overrides, and what they found."""

    ds: Dataset
    overrides: GeometryOverrides
    modality: str
    rows: int
    cols: int
    frames: FrameChoice
    warnings: list[str]
    sources: dict[str, str] = field(default_factory=dict)  # where each value came from
    problems: list[str] = field(default_factory=list)  # missing values: the file cannot be used without them

    @property
    def frame(self) -> int:
        return self.frames.index

    def value(self, keyword: str) -> Any:
        return header_value(self.ds, keyword, self.frame)

    def floats(self, keyword: str) -> list[float] | None:
        return as_floats(self.value(keyword))

    def first(self, keyword: str) -> float | None:
        return (self.floats(keyword) or [None])[0]


@dataclass
class HeaderGeometry:
    """The geometry of one frame (see the module docstrings of :mod:`.geometry` and :mod:`.angles`)."""

    spacing: tuple[float, float]  # (row, column) mm at the detector
    sdd: float
    sod: float | None
    primary: float | None  # degrees, LAO +
    secondary: float | None  # degrees, CRA +
    patient_position: str | None
    patient_orientation: tuple[str, ...] | None
    principal_offset: tuple[float, float]  # (column, row) mm from the image centre
    sources: dict[str, str]

    def detector(self, rows: int, cols: int) -> Detector:
        """The detector of a ``rows`` × ``cols`` image, in the mirrored detector-side view."""
        return Detector(
            sdd=self.sdd,
            rows=rows,
            cols=cols,
            row_spacing=self.spacing[0],
            col_spacing=self.spacing[1],
            principal_offset=self.principal_offset,
            mirrored=True,
        )


def raise_geometry_problems(g: GeometryLookup, name: str) -> None:
    """One :class:`XrayDicomError` naming every value that is missing, if any is."""
    if not g.problems:
        return
    kind = UID(str(g.ds.get("SOPClassUID", ""))).name if g.ds.get("SOPClassUID") else "unknown SOP class"
    raise XrayDicomError(
        f"{name} ({g.modality or 'no modality'}, {kind}): cannot build the C-arm geometry: "
        + "; ".join(g.problems)
    )


# ---- distances ----------------------------------------------------------------------------------------


def source_detector_distance(g: GeometryLookup) -> float | None:
    """SID (mm): the override, else ``DistanceSourceToDetector`` within 100–5000 mm, else a problem."""
    sid_raw = g.value("DistanceSourceToDetector")
    sid_vals = as_floats(sid_raw)
    sid = sid_vals[0] if sid_vals and _SID_RANGE[0] <= sid_vals[0] <= _SID_RANGE[1] else None
    override = g.overrides.sdd
    if override is not None:
        if sid is not None and abs(sid - override) > 1e-6:
            g.warnings.append(
                f"source-detector distance {override:g} mm from the override replaces DistanceSourceToDetector {sid:g}"
            )
        g.sources["sdd"] = "override"
        return override
    if sid is not None:
        g.sources["sdd"] = tag_label("DistanceSourceToDetector")
    else:
        if sid_raw is None:
            bad = ""
        elif sid_vals is None:
            bad = " (not a number)"
        else:
            bad = f" (outside {_SID_RANGE[0]:g}–{_SID_RANGE[1]:g} mm)"
        g.problems.append(
            f"{describe('DistanceSourceToDetector', sid_raw)}{bad}; give the source-detector distance with "
            f"{OVERRIDE_HINTS['sdd']}"
        )
    return sid


def _measured_sod(g: GeometryLookup, sid: float | None) -> tuple[float | None, str | None]:
    """SOD from ``DistanceSourceToIsocenter``, else ``DistanceSourceToPatient`` (0 counts as absent).

    A negative distance, or one not shorter than the SID, contradicts the header: a problem (the file
    cannot be used as it is) unless the SOD is overridden, since either it or the SID is wrong.
    """
    for kw in ("DistanceSourceToIsocenter", "DistanceSourceToPatient"):
        vals = g.floats(kw)
        if not vals or vals[0] == 0:
            continue
        wrong = None
        if vals[0] < 0:
            wrong = f"{describe(kw, g.value(kw))} mm: a distance cannot be negative"
        elif sid is not None and vals[0] >= sid:
            relation = "exceeds" if vals[0] > sid else "equals"
            what = "source-to-isocentre" if kw == "DistanceSourceToIsocenter" else "source-to-patient"
            wrong = (f"the {what} distance {tag_label(kw)} {vals[0]:g} mm {relation} the source-to-detector "
                     f"distance {sid:g} mm; the patient must lie between the source and the detector")
        if wrong is None:
            return vals[0], tag_label(kw)
        if g.overrides.sod is None:
            remedy = f"give the right distance with {OVERRIDE_HINTS['sod']}"
            if vals[0] > 0:  # either distance may be the wrong one
                remedy += f", or the right source-detector distance with {OVERRIDE_HINTS['sdd']}"
            g.problems.append(f"{wrong}; {remedy}")
        return None, None
    return None, None


def _header_sod(g: GeometryLookup, sid: float | None) -> tuple[float | None, str | None]:
    """SOD from the header (isocentre, patient, SID / magnification) and the attribute it came from."""
    sod, src = _measured_sod(g, sid)
    ermf = g.first("EstimatedRadiographicMagnificationFactor")
    if sod is None and ermf and sid and ermf >= 1.0:
        sod = sid / ermf
        src = f"{tag_label('DistanceSourceToDetector')} / {tag_label('EstimatedRadiographicMagnificationFactor')}"
        g.warnings.append(
            f"source-isocentre distance {sod:.1f} mm derived from SID / EstimatedRadiographicMagnificationFactor"
        )
        if not sod < sid:  # a magnification of exactly 1: no usable distance
            g.warnings.append(f"EstimatedRadiographicMagnificationFactor {ermf:g} gives no source-isocentre distance; ignored")
            sod, src = None, None
    if sod is not None and sid is not None and ermf and abs(sid / sod - ermf) > 0.02 * ermf:
        g.warnings.append(
            f"SID/SOD = {sid / sod:.4f} disagrees with EstimatedRadiographicMagnificationFactor {ermf:g}"
        )
    if (
        sod is not None
        and src == tag_label("DistanceSourceToPatient")
        and g.modality in _SURFACE_SOD_MODALITIES
    ):
        g.warnings.append(
            f"DistanceSourceToPatient ({sod:g} mm) of a {g.modality} image is measured to the patient-side surface "
            "of the table/bucky, not to an isocentre"
        )
    return sod, src


def source_isocentre_distance(g: GeometryLookup, sid: float | None) -> float | None:
    """SOD (mm): the override, else the header's (see the module docstring), else None."""
    sod, src = _header_sod(g, sid)
    override = g.overrides.sod
    if override is not None:
        if sod is not None and abs(sod - override) > 1e-6:
            g.warnings.append(
                f"source-isocentre distance {override:g} mm from the override replaces {sod:g} mm"
            )
        sod, src = override, "override"
        if sid is not None and sod >= sid:
            g.problems.append(
                f"the source-isocentre distance {sod:g} mm must be smaller than the source-detector distance {sid:g} mm"
            )
    if src:
        g.sources["sod"] = src
    return sod


# ---- detector pixel spacing ---------------------------------------------------------------------------


def _valid_spacing(value: Any) -> tuple[float, float] | None:
    vals = as_floats(value)
    if vals is None or len(vals) not in (1, 2):
        return None
    if len(vals) == 1:
        vals = vals * 2
    if not spacing_in_range(vals):
        return None
    return vals[0], vals[1]


def _patient_plane_spacing(
    g: GeometryLookup, ps: tuple[float, float], ps_raw: Any, sdd: float | None, sod: float | None
) -> tuple[tuple[float, float], str]:
    """``PixelSpacing`` as detector spacing: × magnification if calibrated to the patient, else as is."""
    cal = code_string(g.ds.get("PixelSpacingCalibrationType"))
    ermf = g.first("EstimatedRadiographicMagnificationFactor")
    if ermf is None and sdd and sod:
        ermf = sdd / sod
    if cal in ("GEOMETRY", "FIDUCIAL") and ermf and 1.0 <= ermf <= 5.0:
        g.warnings.append(
            f"PixelSpacing {dicom_text(ps_raw)} used because ImagerPixelSpacing is absent; it is calibrated "
            f"({cal}) to the patient, so it was multiplied by the magnification {ermf:.4g} to get the "
            "detector spacing"
        )
        return (ps[0] * ermf, ps[1] * ermf), f"{tag_label('PixelSpacing')} × magnification"
    extra = f" (PixelSpacingCalibrationType {cal}, magnification unknown)" if cal else ""
    g.warnings.append(
        f"PixelSpacing {dicom_text(ps_raw)} used because ImagerPixelSpacing is absent{extra}; for projection "
        "images it may be calibrated at the isocentre/patient rather than the detector, which would "
        f"scale the geometry — check it, or give the detector spacing with {OVERRIDE_HINTS['pixel_spacing']}"
    )
    return ps, tag_label("PixelSpacing")


def _field_of_view_spacing(g: GeometryLookup) -> tuple[float, float] | None:
    """``FieldOfViewDimensions`` over the matrix (image-intensifier systems), if that is a valid spacing."""
    fov_raw = g.value("FieldOfViewDimensions")
    fov = as_floats(fov_raw)
    shape = code_string(g.value("FieldOfViewShape"))
    if not (fov and all(v > 0 for v in fov)):
        return None
    if len(fov) >= 2 and shape not in ("ROUND", "HEXAGONAL"):
        spacing = (fov[0] / g.rows, fov[1] / g.cols)
    else:
        spacing = (fov[0] / min(g.rows, g.cols),) * 2
    if _valid_spacing(spacing) is None:
        return None
    g.warnings.append(
        f"detector spacing {spacing[0]:.6g}×{spacing[1]:.6g} mm derived from FieldOfViewDimensions "
        f"{dicom_text(fov_raw)} mm over {g.rows}×{g.cols} pixels because ImagerPixelSpacing and PixelSpacing are "
        "absent (assumes the field of view fills the image matrix, as on image-intensifier systems)"
    )
    return spacing


def _header_spacing(
    g: GeometryLookup, sdd: float | None, sod: float | None
) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """Detector spacing from the header, the attribute it came from, and why others failed."""
    ips_raw, ps_raw = g.value("ImagerPixelSpacing"), g.value("PixelSpacing")
    ips, ps = _valid_spacing(ips_raw), _valid_spacing(ps_raw)
    if ips is not None:
        if ps is not None and max(abs(a / b - 1) for a, b in zip(ps, ips, strict=True)) > 0.01:
            g.warnings.append(
                f"PixelSpacing {dicom_text(ps_raw)} differs from ImagerPixelSpacing {dicom_text(ips_raw)} (calibrated "
                "to the patient plane); the detector spacing ImagerPixelSpacing is used"
            )
        return ips, tag_label("ImagerPixelSpacing"), []
    failed = [describe("ImagerPixelSpacing", ips_raw)]
    if ps is not None:
        return *_patient_plane_spacing(g, ps, ps_raw, sdd, sod), failed
    failed.append(describe("PixelSpacing", ps_raw) + (" (not a valid spacing)" if ps_raw is not None else ""))
    spacing = _field_of_view_spacing(g)
    if spacing is not None:
        return spacing, f"{tag_label('FieldOfViewDimensions')} / matrix", failed
    failed.append(describe("FieldOfViewDimensions", g.value("FieldOfViewDimensions")))
    return None, None, failed


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def pixel_spacing(g: GeometryLookup, sdd: float | None, sod: float | None) -> tuple[float, float] | None:
    """(row, column) mm at the detector: the override, else the header's (see the module docstring)."""
    spacing, spacing_src, failed = _header_spacing(g, sdd, sod)
    override = g.overrides.pixel_spacing
    if override is not None:
        if spacing is not None and max(abs(a / b - 1) for a, b in zip(override, spacing, strict=True)) > 1e-6:
            g.warnings.append(
                f"pixel spacing {override} mm from the override replaces {spacing} from {spacing_src}"
            )
        spacing, spacing_src = override, "override"
    elif spacing is None:
        g.problems.append(
            f"{_join(failed)}; give the detector pixel spacing with {OVERRIDE_HINTS['pixel_spacing']}"
        )
    if spacing is not None:
        g.sources["pixel_spacing"] = spacing_src
        if abs(spacing[0] / spacing[1] - 1) > 0.01:
            g.warnings.append(
                f"non-square pixels {spacing[0]:g}×{spacing[1]:g} mm (row×column) kept as they are"
            )
    return spacing


# ---- principal point ----------------------------------------------------------------------------------


def _pair(values: list[float]) -> list[float]:
    return values * 2 if len(values) == 1 else values


def principal_offset(g: GeometryLookup) -> tuple[float, float]:
    """(column, row) mm of the principal point from the image centre (see the module docstring)."""
    if g.overrides.principal_offset is not None:
        g.sources["principal_offset"] = "override"
        return g.overrides.principal_offset
    elem, a_org, a_dim = (
        g.floats(k) for k in ("DetectorElementSpacing", "DetectorActiveOrigin", "DetectorActiveDimensions")
    )
    f_org, f_dim = g.floats("FieldOfViewOrigin"), g.floats("FieldOfViewDimensions")
    if elem and a_org and a_dim and f_org and f_dim and len(a_org) == 2 and len(f_org) == 2:
        elem, a_dim, f_dim = _pair(elem), _pair(a_dim), _pair(f_dim)
        active_centre = (a_org[0] + a_dim[0] / 2, a_org[1] + a_dim[1] / 2)  # (row, col) mm on the detector
        fov_centre = (f_org[0] * elem[0] + f_dim[0] / 2, f_org[1] * elem[1] + f_dim[1] / 2)
        dr, dc = active_centre[0] - fov_centre[0], active_centre[1] - fov_centre[1]
        rotation = g.first("FieldOfViewRotation") or 0.0
        for _ in range(round(rotation / 90.0) % 4):  # clockwise quarter turns: right -> down, down -> left
            dr, dc = dc, -dr
        if code_string(g.value("FieldOfViewHorizontalFlip")) == "YES":
            dc = -dc
        g.sources["principal_offset"] = (
            "centre of the active detector area (DetectorActiveOrigin/Dimensions, FieldOfViewOrigin/Dimensions)"
        )
        return (dc, dr)
    if a_org:
        g.warnings.append(
            f"DetectorActiveOrigin {dicom_text(g.value('DetectorActiveOrigin'))} is not a principal point in the "
            "DICOM standard and is ignored (principal point at the image centre)"
        )
    return (0.0, 0.0)
