"""The C-arm angles and the patient's position and orientation from a DICOM X-ray header.

* **Angles** ``PositionerPrimaryAngle (0018,1510)`` / ``PositionerSecondaryAngle (0018,1511)``
  (patient-relative, LAO +/CRA +, see :mod:`xvrcore.geometry.positioner`), plus the per-frame
  ``PositionerPrimary/SecondaryAngleIncrement (0018,1520/1521)`` of DYNAMIC runs; ignored when
  ``PositionerType (0018,1508)`` is present and not CARM. For CR/DX without angles the
  nominal angles of ``ViewPosition (0018,5101)`` PA (0°), AP (180°), LL (+90°), RL (−90°) are
  used (warned). Angles given in :class:`~xvrcore.xray.overrides.GeometryOverrides` win (a
  missing one of the two is then the header's, or 0°). A primary angle outside ±180° is wrapped;
  a secondary angle outside ±90° is warned about.
* ``PatientPosition (0018,5100)`` (a defined term, e.g. HFS) and ``PatientOrientation
  (0020,0020)`` (the directions of the columns and rows) are kept; the orientation is compared
  with the heads-up orientation the angles imply (:func:`check_orientation`), which reveals a
  mirrored or upside-down image.
"""

from __future__ import annotations

from ..geometry.positioner import PATIENT_POSITIONS, patient_orientation, pose_from_positioner
from .geometry import GeometryLookup, HeaderGeometry
from .overrides import OVERRIDE_HINTS
from .tags import RADIOGRAPHIC_MODALITIES, as_floats, as_list, code_string, tag_label

__all__ = ["check_orientation", "header_angles", "patient_orientation_of", "patient_position_of"]

_VIEW_ANGLES = {"PA": (0.0, 0.0), "AP": (180.0, 0.0), "LL": (90.0, 0.0), "RL": (-90.0, 0.0)}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}

Angles = tuple[float | None, float | None]  # (primary, secondary) degrees


def _with_increments(g: GeometryLookup, primary: float, secondary: float) -> tuple[float, float]:
    """The angles of frame ``g.frame`` of a run: the start angles plus that frame's increments."""
    if g.frame > 0:
        for kw, i in (("PositionerPrimaryAngleIncrement", 0), ("PositionerSecondaryAngleIncrement", 1)):
            inc = as_floats(g.ds.get(kw))
            if inc and len(inc) > g.frame:
                if i == 0:
                    primary += inc[g.frame]
                else:
                    secondary += inc[g.frame]
                g.sources["angles"] += f" + {kw} of frame {g.frame}"
    return primary, secondary


def _positioner_angles(g: GeometryLookup) -> Angles:
    """The positioner angles of the chosen frame, if the header has both and they are C-arm angles."""
    ptype = code_string(g.ds.get("PositionerType"))
    if ptype and ptype != "CARM":
        g.warnings.append(
            f"PositionerType {ptype}: the positioner angles are not C-arm angles and are ignored"
        )
        return None, None
    primary = secondary = None
    p, s = g.floats("PositionerPrimaryAngle"), g.floats("PositionerSecondaryAngle")
    if p and s:
        g.sources["angles"] = (
            f"{tag_label('PositionerPrimaryAngle')}, {tag_label('PositionerSecondaryAngle')}"
        )
        primary, secondary = _with_increments(g, p[0], s[0])
    elif p or s:
        g.warnings.append(
            "only one of PositionerPrimaryAngle/PositionerSecondaryAngle is present; angles ignored"
        )
    motion = code_string(g.ds.get("PositionerMotion"))
    if motion == "DYNAMIC" and g.frames.reducing and g.frames.n_frames > 1:
        g.warnings.append(
            "the C-arm moved during this run (PositionerMotion DYNAMIC) but frames were combined; "
            "the angles are those of frame 0"
        )
    return primary, secondary


def _view_position_angles(g: GeometryLookup) -> Angles:
    """Nominal angles of a radiograph's ``ViewPosition`` (PA, AP, LL, RL), if it has one."""
    view = code_string(g.ds.get("ViewPosition"))
    if g.modality not in RADIOGRAPHIC_MODALITIES or view not in _VIEW_ANGLES:
        return None, None
    primary, secondary = _VIEW_ANGLES[view]
    g.sources["angles"] = f"{tag_label('ViewPosition')} {view} (nominal)"
    g.warnings.append(
        f"no positioner angles; nominal angles {primary:g}°/{secondary:g}° taken from ViewPosition {view}"
    )
    return primary, secondary


def header_angles(g: GeometryLookup) -> Angles:
    """(primary, secondary) degrees: the overrides, else the header's (see the module docstring), else None."""
    primary, secondary = _positioner_angles(g)
    if primary is None:
        primary, secondary = _view_position_angles(g)
    o = g.overrides
    if o.primary_angle is not None or o.secondary_angle is not None:
        if primary is not None:
            g.warnings.append(
                f"positioner angles from the override replace {primary:g}°/{secondary:g}° from the header"
            )
        primary = o.primary_angle if o.primary_angle is not None else (primary or 0.0)
        secondary = o.secondary_angle if o.secondary_angle is not None else (secondary or 0.0)
        g.sources["angles"] = "override"
    if primary is None:
        g.warnings.append(
            "no positioner angles: the nominal pose cannot be taken from the header; give them with "
            f"{OVERRIDE_HINTS['primary_angle']} and {OVERRIDE_HINTS['secondary_angle']}"
        )
        return None, None
    # wrapped within a turn; beyond one (1e308°) it is no angle: kept, for the start pose to refuse
    primary = (primary + 180.0) % 360.0 - 180.0 if 180.0 < abs(primary) <= 360.0 else primary
    if not -90.0 <= secondary <= 90.0:
        g.warnings.append(f"secondary angle {secondary:g}° is outside the DICOM range −90…+90°")
    return primary, secondary


def patient_position_of(g: GeometryLookup) -> str | None:
    """The override, else ``PatientPosition`` if it is a defined term (HFS, FFS …), else None."""
    if g.overrides.patient_position is not None:
        return g.overrides.patient_position
    position = code_string(g.ds.get("PatientPosition"))
    if position in PATIENT_POSITIONS:
        return position
    if position:
        g.warnings.append(f"PatientPosition {position!r} is not a defined term; ignored")
    return None


def patient_orientation_of(g: GeometryLookup) -> tuple[str, ...] | None:
    """``PatientOrientation`` (column direction, row direction), e.g. ``("L", "F")``; None unless two values."""
    raw = g.ds.get("PatientOrientation")
    orient = tuple(str(v).strip().upper() for v in as_list(raw) if str(v).strip()) if raw is not None else ()
    return orient if len(orient) == 2 else None


def check_orientation(geo: HeaderGeometry, warnings: list[str]) -> None:
    """Compare Patient Orientation with the heads-up orientation the angles imply."""
    if geo.patient_orientation is None or geo.primary is None:
        return
    pose = pose_from_positioner(geo.primary, geo.secondary, geo.sod or 1.0, None, "HFS")
    expected = patient_orientation(pose, mirrored=True)
    col, row = (v[:1] for v in geo.patient_orientation)
    given = "\\".join(geo.patient_orientation)
    implied = "\\".join(expected)
    if col and col == _OPPOSITE.get(expected[0][:1]):
        warnings.append(
            f"PatientOrientation {given} runs the columns opposite to the heads-up orientation of these angles "
            f"({implied}): the image may be mirrored left-right"
        )
    if row and row == _OPPOSITE.get(expected[1][:1]):
        warnings.append(
            f"PatientOrientation {given} runs the rows opposite to the heads-up orientation of these angles "
            f"({implied}): the image may be upside down"
        )
