"""Reading a CT localizer (scout, topogram) with its line-scan geometry in the CT's world frame.

A CT scout is a line scan (:mod:`xvrcore.geometry.linescan`): the gantry is parked and the table
moves, so each image row has its own source position and the fan spreads across the columns. The
DICOM CT image module gives everything the camera needs, in the patient frame (LPS) the study's
axial series shares, so the pose comes out directly in the CT's world frame (RAS,
:mod:`xvrcore.conventions`):

* ``ImageOrientationPatient (0020,0037)``: the row direction ``r`` (along which columns increase —
  the fan) and the column direction ``c`` (along which rows increase — the table). ``c`` must lie
  along the table axis (the patient frame's z axis, within 1°); otherwise the file is refused.
* ``ImagePositionPatient (0020,0032)``: the centre of the first pixel; with ``PixelSpacing
  (0028,0030)`` (row spacing = table travel per row, column spacing across the fan) it places
  the image plane, in which the column spacing holds.
* ``DistanceSourceToPatient (0018,1111)``: source to the scanner's rotation axis, which a CT
  scanner's patient frame puts at x = y = 0 (the axial images' reconstruction centres are offsets
  from it). The central ray is the column where the image plane meets that axis.
* **Source side**: the image is shown as seen from the detector, like every DICOM projection, so
  the source is on the side ``r × c`` points to. Measured on the head study's two scouts
  (README, "Real projection images"): the other side scores lower at the header pose
  (0.37 vs 0.54 and 0.52 vs 0.57), as does a fan uniform in angle instead of across the plane.
* ``DistanceSourceToDetector (0018,1110)`` is recorded; the rays do not need it.

The pixels are CT-scout projection values, shown like radiographs (attenuation bright). The generic
evidence of :mod:`xvrcore.xray.polarity` is weighed and recorded, but a CT localizer's convention
decides (a disagreement is warned about), unless ``dense=`` forces it; the values are then converted
to a line-integral-like image by the same module.
Nothing that identifies the patient is read or reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset

from ..conventions import LPS_TO_RAS
from ..geometry.linescan import LineScanCamera
from ..geometry.rotations import make_rigid
from .masks import exposure_mask
from .pixels import decode_pixels
from .polarity import (
    ImageEvidence,
    PolarityDecision,
    decide_polarity,
    intensity_conversion,
    polarity_summary,
    reference_image,
)
from .tags import XrayDicomError, as_floats, code_string, header_value, read_dataset, tag_label

__all__ = ["Localizer", "localizer_geometry", "read_localizer"]

#: Largest angle (degrees) between the image's column direction and the table axis.
TABLE_AXIS_TOLERANCE_DEG = 1.0


@dataclass(repr=False, eq=False)
class Localizer:
    """A CT scout: line-integral-like pixels, the line-scan camera and its header pose (RAS)."""

    pixels: np.ndarray  # float32 (H, W), dense = high, ≈ 0 at the least attenuated pixels
    raw: np.ndarray  # float32 (H, W) after the modality LUT
    camera: LineScanCamera
    camera_to_world: torch.Tensor  # (4, 4) float64, proper; the frame of :mod:`xvrcore.geometry.linescan`
    mask: np.ndarray  # bool (H, W): exposed
    beam: str  # the beam's direction in patient terms, e.g. "posterior → anterior"
    polarity: str
    source: str
    warnings: list[str] = field(default_factory=list)
    polarity_evidence: list[str] = field(default_factory=list)
    dense_high_in_file: bool = True

    def __repr__(self) -> str:
        c = self.camera
        return (
            f"Localizer({Path(self.source).name}: {c.height}×{c.width}, beam {self.beam}, "
            f"spacing {c.row_spacing:g}×{c.col_spacing:g} mm, source–axis {c.plane_distance:g} mm; {self.polarity})"
        )


def _required(ds: Dataset, keyword: str, count: int, name: str) -> np.ndarray:
    values = as_floats(header_value(ds, keyword))
    if values is None or len(values) != count:
        raise XrayDicomError(
            f"{name}: {tag_label(keyword)} is missing or not {count} numbers; a CT localizer needs it for its geometry"
        )
    return np.asarray(values, dtype=np.float64)


def _orientation(ds: Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit row and column directions (LPS), checked orthogonal and the columns along the table."""
    iop = _required(ds, "ImageOrientationPatient", 6, name)
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise XrayDicomError(f"{name}: {tag_label('ImageOrientationPatient')} is not two orthogonal unit vectors")
    if abs(c[2]) < math.cos(math.radians(TABLE_AXIS_TOLERANCE_DEG)):
        raise XrayDicomError(
            f"{name}: the image's rows do not follow the table axis ({tag_label('ImageOrientationPatient')} "
            f"column direction {np.round(c, 4).tolist()}); not a CT line scan"
        )
    return r / np.linalg.norm(r), c / np.linalg.norm(c)


def _positive(ds: Dataset, keyword: str, name: str) -> float:
    value = as_floats(header_value(ds, keyword))
    if not value or not value[0] > 0:
        raise XrayDicomError(f"{name}: {tag_label(keyword)} is missing or not positive; a CT localizer needs it")
    return value[0]


def localizer_geometry(ds: Dataset, name: str, warnings: list[str] | None = None) -> tuple[LineScanCamera, torch.Tensor]:
    """The scout's :class:`LineScanCamera` and header ``camera_to_world`` (RAS) (see the module docstring)."""
    warnings = [] if warnings is None else warnings
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 2 or cols < 2:
        raise XrayDicomError(f"{name}: the image is {rows}×{cols} pixels; a localizer needs at least 2×2")
    r, c = _orientation(ds, name)
    first = _required(ds, "ImagePositionPatient", 3, name)
    row_spacing, col_spacing = _required(ds, "PixelSpacing", 2, name)
    if not (row_spacing > 0 and col_spacing > 0):
        raise XrayDicomError(f"{name}: {tag_label('PixelSpacing')} must be positive, got {row_spacing:g}, {col_spacing:g}")
    sod = _positive(ds, "DistanceSourceToPatient", name)
    sdd = (as_floats(header_value(ds, "DistanceSourceToDetector")) or [None])[0]
    toward_source = np.cross(r, c)
    offset = np.array([first[0], first[1], 0.0])  # the rotation axis is x = y = 0
    cu = -float(offset @ r) / col_spacing
    plane_distance = sod - float(offset @ toward_source)
    if not 0 <= cu <= cols - 1:
        warnings.append(f"the central ray (column {cu:.1f}) lies outside the image")
    cv = (rows - 1) / 2
    centre = first + cu * col_spacing * r + cv * row_spacing * c
    source = centre + plane_distance * toward_source
    z_axis = -toward_source
    x_axis = np.cross(c, z_axis)
    camera = LineScanCamera(cols, rows, col_spacing, row_spacing, plane_distance, cu, cv,
                            mirrored=bool(x_axis @ r < 0), sdd=sdd)
    flip = torch.tensor(LPS_TO_RAS, dtype=torch.float64)
    axes = torch.tensor(np.stack([x_axis, c, z_axis], 1), dtype=torch.float64)
    pose = make_rigid(flip[:, None] * axes, flip * torch.tensor(source, dtype=torch.float64))
    return camera, pose


def _beam(pose: torch.Tensor) -> str:
    """The beam's dominant direction in patient terms (RAS pose)."""
    z = pose[:3, 2]
    axis = int(z.abs().argmax())
    names = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))[axis]
    return f"{names[0]} → {names[1]}" if z[axis] > 0 else f"{names[1]} → {names[0]}"


def _scout_convention(generic: PolarityDecision, photometric: str, warnings: list[str]) -> PolarityDecision:
    """A CT scout's values rise with attenuation (shown bright unless MONOCHROME1); this decides.

    The generic evidence is kept, and a disagreement warned about: on the head scouts the ridge vote
    over the whole image calls dense *low* (dark lines where head and air meet), while inside the head
    alone it calls dense high, as the DRR confirms (README, "Real projection images").
    """
    dense_high = photometric != "MONOCHROME1"
    reason = f"CT localizer convention (attenuation shown bright, {photometric})"
    if generic.dense_high != dense_high:
        warnings.append(
            f"the generic polarity evidence ({generic.reason}) says dense = {'high' if generic.dense_high else 'low'}; "
            f"a CT localizer's convention decides dense = {'high' if dense_high else 'low'}"
        )
    vote = f"dense {'high' if dense_high else 'low'} [decides]: {reason}"
    return PolarityDecision(dense_high, [*generic.evidence, vote], reason)


def read_localizer(path, *, dense: str = "auto", intensity: str = "auto") -> Localizer:
    """Read a CT localizer DICOM file (see the module docstring).

    ``dense``/``intensity`` force the polarity decisions as in :func:`xvrcore.xray.read_xray`.
    Raises :class:`XrayDicomError` naming the file and the problem.
    """
    path = Path(path)
    name = path.name
    warnings: list[str] = []
    ds = read_dataset(path, name)
    image_type = [code_string(v) for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" not in image_type:
        warnings.append("ImageType does not say LOCALIZER; read as a CT line scan anyway")
    camera, pose = localizer_geometry(ds, name, warnings)
    px = decode_pixels(ds, path, name, warnings)
    if px.frames.shape != (1, camera.height, camera.width):
        raise XrayDicomError(f"{name}: decoded pixel data {px.frames.shape} do not match one {camera.height}×{camera.width} frame")
    mask, excluded = exposure_mask(ds, px, (camera.row_spacing, camera.col_spacing), warnings)
    evidence = ImageEvidence(ds, px, code_string(ds.get("Modality")) or "CT", mask, excluded, reference_image(px.frames))
    decision = decide_polarity(evidence, dense, warnings)
    if dense == "auto":
        decision = _scout_convention(decision, px.photometric, warnings)
    conversion = intensity_conversion(evidence, decision.dense_high, intensity, warnings)
    return Localizer(
        pixels=np.ascontiguousarray(conversion.convert(px.frames[0]), dtype=np.float32),
        raw=np.ascontiguousarray(px.frames[0], dtype=np.float32),
        camera=camera,
        camera_to_world=pose,
        mask=mask,
        beam=_beam(pose),
        polarity=polarity_summary(px, decision, conversion),
        source=str(path),
        warnings=warnings,
        polarity_evidence=decision.evidence,
        dense_high_in_file=decision.dense_high,
    )
