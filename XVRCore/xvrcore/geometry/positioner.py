"""DICOM C-arm positioner angles ↔ camera poses (nominal pose about an isocentre).

What the DICOM standard says (PS3.3 C.8.7.5.1.2, XA Positioner Module; the Enhanced XA X-Ray
Positioner Macro C.8.19.6.10 repeats it; PS3.17 FFF.2.1.3.1.2 explains it):

* The angles give the position of the **image intensifier / detector** about the patient, with
  respect to the **patient** (not the equipment). Zero degrees is "perpendicular to the
  patient's chest": at primary = secondary = 0 **the patient faces the detector**.
* **Positioner Primary Angle (0018,1510)** is like a longitude in the patient's transaxial
  plane: **+90° = detector at the patient's left (LAO)**, −90° = at the patient's right (RAO),
  range −180…+180°.
* **Positioner Secondary Angle (0018,1511)** is like a latitude in the sagittal plane:
  **+90° = detector toward the head (cranial, CRA)**, negative = caudal (CAU), range −90…+90°.
* In the XA SOP class "the image is assumed to be patient-oriented (i.e. heads-up display)"
  (PS3.17 FFF.2.1.3.1.2).

What this module does with it (world = patient RAS, mm; camera as in :mod:`xvrcore.conventions`):

* The detector direction (unit vector from the isocentre toward the detector) is
  ``d = Rz(primary) · Rx(secondary) · (0, 1, 0)`` in RAS: at zero angles ``d = +A`` (anterior,
  the patient faces the detector, source posterior — the usual under-table tube with a
  head-first supine patient); ``Rz(+90°)`` turns ``+A`` to ``−R`` = the patient's left
  (LAO 90 = left lateral view, source at the patient's right); ``Rx(+90°)`` turns ``+A`` to
  ``+S`` (CRA 90). Primary is applied first, secondary about the rotated left–right axis —
  exactly a longitude/latitude pair, and the mechanics of a C-arm whose propeller (LAO/RAO)
  axis is the patient's long axis and whose orbital (CRA/CAU) axis turns with it.
* The source is at ``isocentre − SOD · d`` and the camera +z (the beam) is ``d``.
* **In-plane orientation at zero angles**: image rows run toward the patient's **feet**
  (heads-up display) and the image is the detector-side view (``fx < 0``,
  :class:`~xvrcore.geometry.Detector` ``mirrored=True``), so image columns run toward the
  patient's **left** — the radiological display of a PA view (patient's right on the image
  left; DICOM Patient Orientation ``L\\F``, as in a PA chest radiograph). The camera axes at zero
  angles are ``x = +R``, ``y = −S`` (rows), ``z = +A`` (beam). The C-arm rotations carry these
  axes along, so image columns always stay in the patient's transaxial plane.
* **Patient position.** With ``angles="patient"`` (the default, the standard) the angles *and*
  the image orientation are patient-relative, so ``PatientPosition`` (HFS, FFS, HFP, FFP, HFDR,
  HFDL, FFDR, FFDL …) does not change the pose in the patient's RAS frame — it only describes
  how the patient lay on the table (a prone patient at 0°/0° has the detector *below* the table).
  Some systems store the gantry's own angles and the detector's own image orientation whatever
  the patient's position; ``angles="equipment"`` interprets the angles as for a head-first
  supine patient in the equipment frame and then places the patient as ``patient_position``
  says. HFS is identical in both modes; FFS then mirrors LAO↔RAO and CRA↔CAU with respect to
  the anatomy and the image comes out rotated by 180° (rows toward the head); HFP puts the
  0°/0° detector on the patient's back; decubitus positions turn the patient a quarter turn
  about the long axis.

Relation to the xvr paper's parameters (:func:`xvrcore.geometry.carm.carm_pose`): the pose of
``(primary, secondary, SOD)`` is exactly ``carm_pose([primary, secondary, 0, 0, −SOD, 0],
"PA", isocenter)`` (the xvr notes' derivation, verified numerically in
``Testing/core/test_positioner.py``), and equally ``carm_pose([primary − 180, −secondary, 0, 0,
+SOD, 0], "AP", isocenter)``; :func:`positioner_to_carm` returns the former.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .rotations import euler_to_matrix, make_rigid

__all__ = [
    "ANGLE_FRAMES",
    "PATIENT_POSITIONS",
    "PositionerAngles",
    "detector_direction",
    "nominal_rotation",
    "patient_orientation",
    "pose_from_positioner",
    "pose_from_xray",
    "positioner_from_pose",
    "positioner_to_carm",
]

#: PatientPosition defined terms (PS3.3 C.7.3.1.1.2).
PATIENT_POSITIONS = (
    "HFP",
    "HFS",
    "HFDR",
    "HFDL",
    "FFDR",
    "FFDL",
    "FFP",
    "FFS",
    "LFP",
    "LFS",
    "RFP",
    "RFS",
    "AFDR",
    "AFDL",
    "PFDR",
    "PFDL",
)

ANGLE_FRAMES = ("patient", "equipment")

# Camera axes (columns: x, y, z) in patient RAS at zero angles: x = +R, y = -S (rows), z = +A (beam).
_ZERO_CAMERA = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))

# Patient RAS axes expressed in the equipment frame E (E = the RAS frame of a head-first supine
# patient on the same table: +x toward that patient's right, +y up, +z toward the head end).
# Column j is where patient axis j (R, A, S) points in E.
_PATIENT_IN_EQUIPMENT = {
    "HFS": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "FFS": ((-1, 0, 0), (0, 1, 0), (0, 0, -1)),
    "HFP": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "FFP": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
    # decubitus right: right side down (R -> -up), anterior toward the table's right side
    "HFDR": ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
    "HFDL": ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),
    "FFDR": ((0, -1, 0), (-1, 0, 0), (0, 0, -1)),
    "FFDL": ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
}


class PositionerAngles(NamedTuple):
    """Nominal positioner parameters of a pose (degrees, mm)."""

    primary: float  # LAO + / RAO -
    secondary: float  # CRA + / CAU -
    sod: float  # source to isocentre along the beam
    roll: float  # in-plane rotation of the image about the beam relative to the nominal orientation
    offset: float  # distance of the isocentre from the central ray (0 for a nominal pose)


def _check_position(patient_position: str | None, angles: str) -> str:
    if angles not in ANGLE_FRAMES:
        raise ValueError(f"angles must be 'patient' or 'equipment', got {angles!r}")
    pos = "HFS" if patient_position in (None, "") else str(patient_position).strip().upper()
    if pos not in PATIENT_POSITIONS:
        raise ValueError(
            f"unknown PatientPosition {patient_position!r}; expected one of {', '.join(PATIENT_POSITIONS)}"
        )
    if angles == "equipment" and pos not in _PATIENT_IN_EQUIPMENT:
        raise ValueError(
            f"PatientPosition {pos} (patient across the table) is not supported with angles='equipment'; "
            f"supported: {', '.join(_PATIENT_IN_EQUIPMENT)}"
        )
    return pos


def _patient_in_equipment(pos: str, dtype, device) -> torch.Tensor:
    return torch.tensor(_PATIENT_IN_EQUIPMENT[pos], dtype=dtype, device=device).T


def _as_tensor(x, dtype, device=None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype, device=device) if not isinstance(x, torch.Tensor) else x.to(dtype)


def nominal_rotation(primary_deg, secondary_deg, dtype=torch.float64) -> torch.Tensor:
    """Camera-to-patient rotation ``Rz(primary) Rx(secondary) C0`` ``(..., 3, 3)`` (patient-relative angles)."""
    a = _as_tensor(primary_deg, dtype)
    b = _as_tensor(secondary_deg, dtype)
    a, b = torch.broadcast_tensors(a, b)
    angles = torch.deg2rad(torch.stack([a, b, torch.zeros_like(a)], -1))
    c0 = torch.tensor(_ZERO_CAMERA, dtype=dtype, device=angles.device)
    return euler_to_matrix(angles, "ZXY") @ c0


def detector_direction(primary_deg, secondary_deg, dtype=torch.float64) -> torch.Tensor:
    """Unit vector (patient RAS) from the isocentre toward the detector, ``(..., 3)``."""
    return nominal_rotation(primary_deg, secondary_deg, dtype)[..., :, 2]


def pose_from_positioner(
    primary_deg,
    secondary_deg,
    sod_mm,
    isocenter_ras=None,
    patient_position: str | None = "HFS",
    *,
    angles: str = "patient",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Proper ``camera_to_world`` ``(4, 4)`` (or ``(..., 4, 4)``) of the nominal C-arm pose.

    ``primary_deg`` (LAO +), ``secondary_deg`` (CRA +) and ``sod_mm`` (source to isocentre) as in
    the DICOM XA Positioner Module; ``isocenter_ras`` the RAS point (mm) the C-arm turns about
    (callers default to the volume centre); see the module docstring for ``angles`` and
    ``patient_position``. The image is the detector-side view: use it with a mirrored
    :class:`~xvrcore.geometry.Detector`.
    """
    pos = _check_position(patient_position, angles)
    sod = _as_tensor(sod_mm, dtype)
    if bool((sod <= 0).any()) or not bool(torch.isfinite(sod).all()):
        raise ValueError(f"source-to-isocentre distance must be positive, got {sod_mm}")
    rot = nominal_rotation(primary_deg, secondary_deg, dtype)
    if angles == "equipment":  # angles and image orientation given in the table frame E
        rot = _patient_in_equipment(pos, dtype, rot.device).T @ rot
    sod = sod.to(rot.device)
    source = -sod[..., None] * rot[..., :, 2]
    iso = torch.zeros(3, dtype=dtype) if isocenter_ras is None else _as_tensor(isocenter_ras, dtype)
    return make_rigid(rot, source + iso.to(rot.device))


def positioner_from_pose(
    camera_to_world,
    isocenter=None,
    patient_position: str | None = "HFS",
    *,
    angles: str = "patient",
) -> PositionerAngles:
    """Inverse of :func:`pose_from_positioner` for one pose: the positioner angles of its beam.

    ``primary``/``secondary`` describe the beam direction; ``sod`` is the distance from the
    source to the isocentre's foot on the central ray; ``roll`` (degrees) is the remaining
    rotation of the image about the beam (0 for a nominal pose) and ``offset`` (mm) the
    distance from the isocentre to the central ray (0 for a nominal pose).
    """
    pos = _check_position(patient_position, angles)
    pose = torch.as_tensor(camera_to_world, dtype=torch.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"expected one 4×4 camera_to_world, got shape {tuple(pose.shape)}")
    rot, source = pose[:3, :3], pose[:3, 3]
    if angles == "equipment":
        rot = _patient_in_equipment(pos, rot.dtype, rot.device) @ rot
        source = _patient_in_equipment(pos, rot.dtype, rot.device) @ source
        iso = (
            torch.zeros(3, dtype=torch.float64)
            if isocenter is None
            else torch.as_tensor(isocenter, dtype=torch.float64)
        )
        iso = _patient_in_equipment(pos, rot.dtype, rot.device) @ iso
    else:
        iso = (
            torch.zeros(3, dtype=torch.float64)
            if isocenter is None
            else torch.as_tensor(isocenter, dtype=torch.float64)
        )
    d = rot[:, 2]
    secondary = math.degrees(math.asin(max(-1.0, min(1.0, float(d[2])))))
    if math.hypot(float(d[0]), float(d[1])) > 1e-9:
        primary = math.degrees(math.atan2(-float(d[0]), float(d[1]))) + 0.0
    else:  # beam along the long axis: the longitude is the one that leaves no roll
        primary = math.degrees(math.atan2(float(rot[1, 0]), float(rot[0, 0])))
    if primary <= -180.0 + 1e-9:  # report the range (-180, 180]
        primary += 360.0
    nominal = nominal_rotation(primary, secondary)
    rel = nominal.T @ rot  # a rotation about the beam if the beam matches
    roll = math.degrees(math.atan2(float(rel[1, 0]), float(rel[0, 0])))
    to_iso = iso - source
    sod = float(to_iso @ d)
    offset = float(torch.linalg.vector_norm(to_iso - sod * d))
    return PositionerAngles(primary, secondary, sod, roll, offset)


def positioner_to_carm(primary_deg, secondary_deg, sod_mm, dtype=torch.float64) -> torch.Tensor:
    """The xvr paper's ``(α, β, γ, x, y, z)`` for :func:`xvrcore.geometry.carm.carm_pose` with ``orientation="PA"``.

    ``carm_pose(positioner_to_carm(p, s, sod), "PA", iso)`` equals
    ``pose_from_positioner(p, s, sod, iso)`` (patient-relative angles).
    """
    a = _as_tensor(primary_deg, dtype)
    b = _as_tensor(secondary_deg, dtype)
    d = _as_tensor(sod_mm, dtype)
    a, b, d = torch.broadcast_tensors(a, b, d)
    zero = torch.zeros_like(a)
    return torch.stack([a, b, zero, zero, -d, zero], -1)


def patient_orientation(camera_to_world, mirrored: bool = True, tolerance: float = 0.25) -> tuple[str, str]:
    """DICOM Patient Orientation ``(column direction, row direction)`` of an image, e.g. ``("L", "F")``.

    The first value is the anatomical direction of increasing column index, the second of
    increasing row index (PS3.3 C.7.6.1.1.1): letters R/L, A/P, H/F, principal first, plus the
    components larger than ``tolerance``. ``mirrored`` is True for the detector-side view.
    """
    pose = torch.as_tensor(camera_to_world, dtype=torch.float64)
    col_dir = pose[:3, 0] * (-1.0 if mirrored else 1.0)
    row_dir = pose[:3, 1]
    return _letters(col_dir, tolerance), _letters(row_dir, tolerance)


def _letters(v: torch.Tensor, tolerance: float) -> str:
    names = (("R", "L"), ("A", "P"), ("H", "F"))
    order = sorted(range(3), key=lambda i: -abs(float(v[i])))
    out = ""
    for rank, i in enumerate(order):
        if rank == 0 or abs(float(v[i])) > tolerance:
            out += names[i][0] if float(v[i]) > 0 else names[i][1]
    return out


def pose_from_xray(xray, isocenter_ras=None, *, angles: str = "patient", dtype=torch.float64) -> torch.Tensor:
    """Nominal pose of an :class:`xvrcore.xray.reader.XrayImage` from its positioner tags."""
    missing = [n for n in ("primary_angle", "secondary_angle", "sod") if getattr(xray, n, None) is None]
    if missing:
        raise ValueError(
            f"{getattr(xray, 'source', 'image')}: no nominal pose, missing {', '.join(missing)} "
            "(give them as overrides when reading the image)"
        )
    return pose_from_positioner(
        xray.primary_angle,
        xray.secondary_angle,
        xray.sod,
        isocenter_ras,
        xray.patient_position or "HFS",
        angles=angles,
        dtype=dtype,
    )
