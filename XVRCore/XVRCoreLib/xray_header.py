"""What an X-ray DICOM's header says before its pixels are read: whether it is a projection X-ray, and
whether :func:`xvrcore.xray.read_xray` can build its C-arm geometry.

Slicer's DICOM browser examines every file of the series a user selects, so the XVR DICOM plugin
(``XVRRegistration/DICOMXVRPlugin.py``) cannot decode pixels there. :func:`is_xray` decides from the
two tags the DICOM database holds anyway (Modality, SOP Class UID); :func:`xray_geometry_check` reads
the header only (the pixel data stay on disk) and runs the geometry steps of the reader
(:mod:`xvrcore.xray.geometry`: source–detector distance, source–isocentre distance, detector pixel
spacing) on the frame the panel's import uses, so that the check and the full reading agree on which
files have a geometry and name the same missing tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SECONDARY_CAPTURE_SOP_CLASSES", "XRAY_MODALITIES", "XRAY_SOP_CLASSES", "GeometryCheck",
           "is_xray", "xray_geometry_check"]

#: Projection X-ray storage SOP classes (PS3.4 B.5) and the modality each holds.
XRAY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.1.1": "XA",  # Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.12.2.1": "RF",  # Enhanced XRF Image
    "1.2.840.10008.5.1.4.1.1.1": "CR",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",  # Digital X-Ray Image - For Processing
}
#: Secondary captures (single- and multi-frame): taken as X-rays only when their Modality says so.
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(f"1.2.840.10008.5.1.4.1.1.7{tail}" for tail in ("", ".1", ".2", ".3", ".4"))
XRAY_MODALITIES = ("XA", "RF", "DX", "CR")


def is_xray(modality: str, sop_class: str) -> bool:
    """A projection X-ray: an X-ray SOP class, or a secondary capture whose Modality is XA, RF, DX or CR.

    Other SOP classes with an X-ray Modality (3D angiography volumes, presentation states) are not.
    """
    modality, sop_class = (modality or "").strip().upper(), (sop_class or "").strip()
    return sop_class in XRAY_SOP_CLASSES or (sop_class in SECONDARY_CAPTURE_SOP_CLASSES and modality in XRAY_MODALITIES)


@dataclass(frozen=True)
class GeometryCheck:
    """The header's C-arm geometry, as far as it goes: ``problems`` name each missing or invalid tag
    (empty when :func:`xvrcore.xray.read_xray` can compute the intrinsics)."""

    modality: str
    rows: int
    cols: int
    n_frames: int
    problems: tuple[str, ...]
    sdd: float | None = None  # mm
    sod: float | None = None  # mm
    spacing: tuple[float, float] | None = None  # (row, column) mm at the detector

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """``"XA 512×512, 14 frames; SID 860 mm, detector pixel 0.39×0.39 mm, SOD 720 mm"`` (for tooltips)."""
        frames = f", {self.n_frames} frames" if self.n_frames > 1 else ""
        text = f"{self.modality or 'X-ray'} {self.rows}×{self.cols}{frames}"
        if self.ok:
            text += f"; SID {self.sdd:g} mm, detector pixel {self.spacing[0]:.3g}×{self.spacing[1]:.3g} mm"
            text += f", SOD {self.sod:g} mm" if self.sod is not None else ", no SOD"
        return text


def _matrix(ds) -> tuple[int, int, int]:
    """Rows, columns and frames as declared (0 where absent or not a number); the pixel data are not read."""
    def number(keyword: str, default: int) -> int:
        try:
            return int(ds.get(keyword, default) or default)
        except (TypeError, ValueError):
            return 0
    return number("Rows", 0), number("Columns", 0), number("NumberOfFrames", 1)


def xray_geometry_check(path: str | Path, frame: int | str | None = "max") -> GeometryCheck:
    """The geometry :func:`xvrcore.xray.read_xray` finds for ``frame`` of ``path``, from the header only.

    An unreadable file, or one that is not a projection X-ray, is a single problem naming the file. The
    warnings of the geometry steps are not kept: the full reading reports them at import.
    """
    from xvrcore.xray import GeometryOverrides, XrayDicomError
    from xvrcore.xray.geometry import (
        GeometryLookup,
        pixel_spacing,
        source_detector_distance,
        source_isocentre_distance,
    )
    from xvrcore.xray.pixels import choose_frames
    from xvrcore.xray.tags import PROJECTION_MODALITIES, code_string, read_dataset

    path = Path(path)
    try:
        ds = read_dataset(path, path.name)  # values over 64 KB (the pixel data) stay on disk
        modality = code_string(ds.get("Modality"))
        if modality and modality not in PROJECTION_MODALITIES and modality != "OT":
            raise XrayDicomError(f"{path.name}: Modality {modality} is not a projection X-ray")
        rows, cols, n_frames = _matrix(ds)
        if rows < 2 or cols < 2 or n_frames < 1:
            raise XrayDicomError(f"{path.name}: Rows/Columns/NumberOfFrames declare {rows}×{cols}×{n_frames} pixels")
        frames = choose_frames(frame, None, n_frames, path.name)
    except (XrayDicomError, ValueError, OSError) as exc:
        return GeometryCheck("", 0, 0, 0, (str(exc),))
    lookup = GeometryLookup(ds, GeometryOverrides(), modality, rows, cols, frames, [])
    sdd = source_detector_distance(lookup)
    sod = source_isocentre_distance(lookup, sdd)
    spacing = pixel_spacing(lookup, sdd, sod)
    return GeometryCheck(modality, rows, cols, n_frames, tuple(lookup.problems), sdd, sod, spacing)
