"""Training pose ranges in clinical terms ↔ the xvr paper's ``(α, β, γ, x, y, z)`` ranges: the one place.

Clinical terms (DICOM positioner conventions, :mod:`xvrcore.geometry.positioner`): ``primary`` LAO + / RAO −
(degrees), ``secondary`` CRA + / CAU − (degrees), ``roll`` the in-plane rotation about the beam (degrees),
``sod`` the source-to-isocentre distance (mm, positive), ``lateral`` and ``longitudinal`` the table offsets
(mm; at 0°/0° they move the source toward the patient's right and head). The paper's parameters are those of
:func:`xvrcore.geometry.carm.carm_pose` in its ``"PA"`` or ``"AP"`` frame. The mapping is the exact identity
of poses ``carm_pose([p, s, r, l, −SOD, L], "PA") == carm_pose([p − 180, −s, −r, −l, +SOD, L], "AP")``
(checked in ``Testing/slicer/test_clinical_ranges.py``), so one clinical range describes the same poses in
either frame; ``primary`` is kept unwrapped (an AP range may run past 180°, e.g. LAO 135° … 270° = RAO 90°).
SID is the training camera's source-to-detector distance (a preset's ``sdd``).

Pure Python (no slicer, no torch): the panel and the tests import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLINICAL_NAMES", "PAPER_NAMES", "ClinicalRanges", "angle_text", "from_paper", "to_paper"]

PAPER_NAMES = ("alpha", "beta", "gamma", "x", "y", "z")
CLINICAL_NAMES = ("primary", "secondary", "roll", "sod", "lateral", "longitudinal")

# Per orientation: for each clinical name, (paper name, sign, offset): paper = sign · clinical + offset.
_MAPS = {
    "PA": {"primary": ("alpha", 1, 0.0), "secondary": ("beta", 1, 0.0), "roll": ("gamma", 1, 0.0),
           "sod": ("y", -1, 0.0), "lateral": ("x", 1, 0.0), "longitudinal": ("z", 1, 0.0)},
    "AP": {"primary": ("alpha", 1, -180.0), "secondary": ("beta", -1, 0.0), "roll": ("gamma", -1, 0.0),
           "sod": ("y", 1, 0.0), "lateral": ("x", -1, 0.0), "longitudinal": ("z", 1, 0.0)},
}


def _orientation(orientation: str) -> str:
    key = str(orientation).upper()
    if key not in _MAPS:
        raise ValueError(f"orientation must be 'AP' or 'PA', got {orientation!r}")
    return key


def _ordered(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    return (min(lo, hi), max(lo, hi))


@dataclass(frozen=True)
class ClinicalRanges:
    """(min, max) of each clinical quantity (degrees, mm), and the training camera's SID (mm, or None)."""

    primary: tuple[float, float]
    secondary: tuple[float, float]
    roll: tuple[float, float]
    sod: tuple[float, float]
    lateral: tuple[float, float]
    longitudinal: tuple[float, float]
    sid: float | None = None

    def as_dict(self) -> dict:
        return {name: tuple(getattr(self, name)) for name in CLINICAL_NAMES}


def to_paper(ranges: ClinicalRanges, orientation: str = "PA") -> dict[str, tuple[float, float]]:
    """``{alpha: (min, max), …, z: (min, max)}`` in ``orientation``'s frame for the clinical ``ranges``."""
    mapping = _MAPS[_orientation(orientation)]
    paper = {}
    for name in CLINICAL_NAMES:
        target, sign, offset = mapping[name]
        lo, hi = getattr(ranges, name)
        paper[target] = _ordered(sign * lo + offset, sign * hi + offset)
    return {name: paper[name] for name in PAPER_NAMES}


def from_paper(paper: dict, orientation: str = "PA", sid: float | None = None) -> ClinicalRanges:
    """The clinical ranges of the paper's ``{alpha: (min, max), …}`` read in ``orientation`` (the inverse)."""
    mapping = _MAPS[_orientation(orientation)]
    values = {}
    for name in CLINICAL_NAMES:
        source, sign, offset = mapping[name]
        lo, hi = paper[source]
        values[name] = _ordered((float(lo) - offset) * sign, (float(hi) - offset) * sign)
    return ClinicalRanges(**values, sid=None if sid is None else float(sid))


def angle_text(primary: float, secondary: float | None = None) -> str:
    """"LAO 30°", "RAO 90°" (primary wrapped into (−180°, 180°]); with ``secondary``, "… / CRA 10°"."""
    wrapped = (float(primary) + 180.0) % 360.0 - 180.0
    wrapped = 180.0 if wrapped == -180.0 else wrapped
    text = f"{'LAO' if wrapped >= 0 else 'RAO'} {abs(wrapped):g}°"
    if secondary is not None:
        text += f" / {'CRA' if secondary >= 0 else 'CAU'} {abs(float(secondary)):g}°"
    return text
