"""The landmarks file: pairs of X-ray pixels and CT points (RAS mm) that start a registration.

Landmarks file (JSON)::

    {"points_2d": [[u, v], ...],       # X-ray pixels: u = column, v = row, first pixel centre (0, 0)
     "points_3d": [[x, y, z], ...],    # RAS mm, in the same order
     "labels": ["L5 tip", ...]}        # optional

``points_3d`` may instead name a Slicer markups file (``*.mrk.json``, path relative to the
landmarks file, inside its folder: a name that leaves it — ``..``, an absolute path, a link out —
is refused): its control points are used in order, or matched by label when ``labels`` is given;
LPS coordinates are converted to RAS. A file holds at most :data:`MAX_LANDMARKS` pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import LPS_TO_RAS
from ..io.atomic import atomic_write_text, read_json
from .pnp import LandmarkError, check_inputs

__all__ = ["MAX_LANDMARKS", "Landmarks", "read_landmarks", "write_landmarks"]

# Far more than anyone clicks; bounds the pairwise checks (quadratic in the count) a file can ask for.
MAX_LANDMARKS = 1000


@dataclass
class Landmarks:
    points_2d: np.ndarray  # (N, 2) pixels (column, row)
    points_3d: np.ndarray  # (N, 3) RAS mm
    labels: list[str] | None = None
    source: str = "landmarks"


def _markups_file(landmarks: Path, name: str) -> Path:
    """The markups file ``name`` given in ``landmarks``, which must stay inside the landmarks file's folder."""
    folder = landmarks.parent
    relative = Path(name)
    if not name.strip() or relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise LandmarkError(f"{landmarks}: points_3d {name!r} leaves the landmarks file's folder; name a markups file inside {folder}")
    target = folder / relative
    roots = (folder.resolve(), landmarks.resolve().parent)
    if not any(target.resolve().is_relative_to(root) for root in roots):
        raise LandmarkError(f"{landmarks}: points_3d {name!r} links to {target.resolve()}, outside {folder}; refusing to follow it")
    if not target.is_file():
        raise LandmarkError(f"{landmarks}: the markups file {target} was not found")
    return target


def _control_points(path: Path) -> tuple[bool, list[dict]]:
    """Whether the markups file's first list is in LPS, and its control points."""
    data = read_json(path, LandmarkError, "Slicer markups JSON")
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list) or not markups or not isinstance(markups[0], dict):
        raise LandmarkError(f"{path}: no 'markups' list; expected a Slicer markups file (*.mrk.json)")
    points = markups[0].get("controlPoints", [])
    if not isinstance(points, list) or not all(isinstance(cp, dict) for cp in points):
        raise LandmarkError(f"{path}: 'controlPoints' must be a list of objects")
    return str(markups[0].get("coordinateSystem", "LPS")).upper() == "LPS", points


def _markups_points(path: Path, labels: list[str] | None) -> np.ndarray:
    lps, control_points = _control_points(path)
    points = {}
    ordered = []
    for cp in control_points:
        if "position" not in cp or cp.get("positionStatus", "defined") != "defined":
            continue
        try:
            pos = np.asarray(cp["position"], dtype=np.float64).reshape(3) * (np.array(LPS_TO_RAS) if lps else 1.0)
        except (TypeError, ValueError):
            raise LandmarkError(f"{path}: control point {cp.get('label', '')!r} has no [x, y, z] position") from None
        points[str(cp.get("label", ""))] = pos
        ordered.append(pos)
    if labels is None:
        return np.asarray(ordered).reshape(-1, 3)
    missing = [name for name in labels if name not in points]
    if missing:
        raise LandmarkError(f"{path}: no control point labelled {', '.join(map(repr, missing))}")
    return np.asarray([points[name] for name in labels])


def _point_list(data: dict, key: str, path: Path) -> list:
    value = data[key]
    if not isinstance(value, list):
        raise LandmarkError(f"{path}: {key} must be a list of coordinates, not {type(value).__name__}")
    if len(value) > MAX_LANDMARKS:
        raise LandmarkError(f"{path}: {len(value)} landmarks; at most {MAX_LANDMARKS} are read")
    return value


def read_landmarks(path: str | Path) -> Landmarks:
    """Read a landmarks JSON (see the module docstring)."""
    path = Path(path)
    data = read_json(path, LandmarkError, "landmarks file")
    if not isinstance(data, dict) or "points_2d" not in data or "points_3d" not in data:
        raise LandmarkError(f"{path}: expected {{\"points_2d\": [[u, v], ...], \"points_3d\": [[x, y, z], ...]}}")
    p2 = _point_list(data, "points_2d", path)
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(p2)):
        raise LandmarkError(f"{path}: 'labels' must list one name per image point")
    p3 = data["points_3d"]
    if isinstance(p3, str):
        p3 = _markups_points(_markups_file(path, p3), [str(v) for v in labels] if labels else None)
    else:
        p3 = _point_list(data, "points_3d", path)
    try:
        p2, p3 = np.asarray(p2, dtype=np.float64), np.asarray(p3, dtype=np.float64)
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
