"""Geometry the user supplies instead of missing or wrong header values, and how to supply it.

:class:`GeometryOverrides` is validated when it is made (a ``ValueError`` names the bad value);
a value given in it always wins over the header (:mod:`xvrcore.xray.geometry`,
:mod:`xvrcore.xray.angles`), and the warning then names the header value it replaced.
:data:`OVERRIDE_HINTS` is how a missing value is supplied on the command line and in the Slicer
panel: every error and warning about a missing value quotes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry.positioner import PATIENT_POSITIONS

__all__ = ["OVERRIDE_HINTS", "SPACING_RANGE", "GeometryOverrides", "spacing_in_range"]

#: How a user supplies each missing value (command line, Slicer panel). Error messages quote these.
OVERRIDE_HINTS = {
    "pixel_spacing": "--pixel-spacing ROW COL (or the panel's 'Pixel spacing' field)",
    "sdd": "--sdd MM (or the panel's 'Source-detector distance' field)",
    "sod": "--sod MM (or the panel's 'Source-isocentre distance' field)",
    "primary_angle": "--primary-angle DEG (or the panel's 'Primary angle (LAO+/RAO-)' field)",
    "secondary_angle": "--secondary-angle DEG (or the panel's 'Secondary angle (CRA+/CAU-)' field)",
}

SPACING_RANGE = (0.005, 10.0)  # mm per pixel at the detector: a valid spacing, in a header or an override


def spacing_in_range(values: list[float]) -> bool:
    """Whether every value is a plausible detector pixel spacing (:data:`SPACING_RANGE`)."""
    return all(SPACING_RANGE[0] <= v <= SPACING_RANGE[1] for v in values)


def _override_spacing(value: Any) -> tuple[float, float]:
    vals = np.atleast_1d(np.asarray(value, dtype=float)).tolist()
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not spacing_in_range(vals):
        raise ValueError(
            f"pixel spacing override must be one or two values (row, column) between "
            f"{SPACING_RANGE[0]} and {SPACING_RANGE[1]} mm, got {value!r}"
        )
    return vals[0], vals[1]


def _override_number(name: str, value: Any, *, distance: bool) -> float:
    v = float(value)
    if distance and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} override must be a positive distance in mm, got {value!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} override must be finite, got {value!r}")
    return v


@dataclass
class GeometryOverrides:
    """User-supplied geometry, used instead of missing or wrong header values.

    ``pixel_spacing``: (row, column) mm at the detector, or one number for square pixels;
    ``sdd``: source–detector distance; ``sod``: source–isocentre distance (mm);
    ``primary_angle`` (LAO +) / ``secondary_angle`` (CRA +) in degrees;
    ``principal_offset``: (column, row) mm of the principal point from the image centre, as in
    :class:`~xvrcore.geometry.Detector`; ``patient_position``: e.g. ``"HFS"``.
    """

    pixel_spacing: tuple[float, float] | float | None = None
    sdd: float | None = None
    sod: float | None = None
    primary_angle: float | None = None
    secondary_angle: float | None = None
    principal_offset: tuple[float, float] | None = None
    patient_position: str | None = None

    def __post_init__(self) -> None:
        if self.pixel_spacing is not None:
            self.pixel_spacing = _override_spacing(self.pixel_spacing)
        self._convert_numbers(("sdd", "sod"), distance=True)
        if self.sdd is not None and self.sod is not None and self.sod >= self.sdd:
            raise ValueError(f"sod override ({self.sod} mm) must be smaller than sdd ({self.sdd} mm)")
        self._convert_numbers(("primary_angle", "secondary_angle"), distance=False)
        if self.principal_offset is not None:
            off = tuple(float(v) for v in self.principal_offset)
            if len(off) != 2 or not all(math.isfinite(v) for v in off):
                raise ValueError(
                    f"principal_offset override must be (column, row) in mm, got {self.principal_offset!r}"
                )
            self.principal_offset = off
        if self.patient_position is not None:
            pos = str(self.patient_position).strip().upper()
            if pos not in PATIENT_POSITIONS:
                raise ValueError(
                    f"unknown patient position {self.patient_position!r}; expected one of {PATIENT_POSITIONS}"
                )
            self.patient_position = pos

    def _convert_numbers(self, names: tuple[str, ...], *, distance: bool) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _override_number(name, value, distance=distance))
