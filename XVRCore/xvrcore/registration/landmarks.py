"""The landmarks file: pairs of X-ray pixels and CT points (RAS mm) that start a registration.

Landmarks file (JSON)::

    {"points_2d": [[u, v], ...],       # X-ray pixels: u = column, v = row, first pixel centre (0, 0)
     "points_3d": [[x, y, z], ...],    # RAS mm, in the same order
     "labels": ["L5 tip", ...]}        # optional

``points_3d`` may instead name a Slicer markups file (``*.mrk.json``, path relative to the
landmarks file): its control points are used in order, or matched by label when ``labels`` is
given; LPS coordinates are converted to RAS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import LPS_TO_RAS
from ..io.atomic import atomic_write_text, read_json
from .pnp import LandmarkError, check_inputs

__all__ = ["Landmarks", "read_landmarks", "write_landmarks"]


@dataclass
class Landmarks:
    points_2d: np.ndarray  # (N, 2) pixels (column, row)
    points_3d: np.ndarray  # (N, 3) RAS mm
    labels: list[str] | None = None
    source: str = "landmarks"


def _markups_points(path: Path, labels: list[str] | None, source: str) -> np.ndarray:
    if not path.exists():
        raise LandmarkError(f"{source}: the markups file {path} was not found")
    data = read_json(path, LandmarkError, "Slicer markups JSON")
    markups = data.get("markups") if isinstance(data, dict) else None
    if not markups:
        raise LandmarkError(f"{path}: no 'markups' list; expected a Slicer markups file (*.mrk.json)")
    mk = markups[0]
    lps = str(mk.get("coordinateSystem", "LPS")).upper() == "LPS"
    points = {}
    ordered = []
    for cp in mk.get("controlPoints", []):
        if "position" not in cp or cp.get("positionStatus", "defined") != "defined":
            continue
        pos = np.asarray(cp["position"], dtype=np.float64) * (np.array(LPS_TO_RAS) if lps else 1.0)
        points[str(cp.get("label", ""))] = pos
        ordered.append(pos)
    if labels is None:
        return np.asarray(ordered).reshape(-1, 3)
    missing = [name for name in labels if name not in points]
    if missing:
        raise LandmarkError(f"{path}: no control point labelled {', '.join(map(repr, missing))}")
    return np.asarray([points[name] for name in labels])


def read_landmarks(path: str | Path) -> Landmarks:
    """Read a landmarks JSON (see the module docstring)."""
    path = Path(path)
    data = read_json(path, LandmarkError, "landmarks file")
    if not isinstance(data, dict) or "points_2d" not in data or "points_3d" not in data:
        raise LandmarkError(f"{path}: expected {{\"points_2d\": [[u, v], ...], \"points_3d\": [[x, y, z], ...]}}")
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(data["points_2d"])):
        raise LandmarkError(f"{path}: 'labels' must list one name per image point")
    p3 = data["points_3d"]
    if isinstance(p3, str):
        p3 = _markups_points(path.parent / p3, [str(v) for v in labels] if labels else None, str(path))
    try:
        p2, p3 = np.asarray(data["points_2d"], dtype=np.float64), np.asarray(p3, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LandmarkError(f"{path}: landmark coordinates must be numbers ({exc})") from None
    try:
        check_inputs(p2, p3)
    except LandmarkError as exc:
        raise LandmarkError(f"{path}: {exc}") from None
    return Landmarks(p2, p3, [str(v) for v in labels] if labels else None, str(path))


def write_landmarks(path: str | Path, points_2d, points_3d, labels: list[str] | None = None) -> Path:
    """Write a landmarks JSON atomically."""
    data = {"points_2d": np.asarray(points_2d, float).tolist(), "points_3d": np.asarray(points_3d, float).tolist()}
    if labels is not None:
        data["labels"] = list(labels)
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")
