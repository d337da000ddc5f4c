"""The shared registration-result JSON: ``intrinsics``, ``world_to_camera`` and ``projection``.

Other tools read this exact format, so it is written in one place and validated on reading:

* ``intrinsics``: 3×3 ``K`` in pixels of the image grid (first pixel centre = (0, 0));
* ``world_to_camera``: 4×4 from world (RAS mm) to the camera frame (origin at the source,
  +x along increasing column, +y along increasing row, +z toward the detector);
* ``projection``: 3×4 ``P = K [R | t]``; it is authoritative.
* ``handedness``: ``"left"`` when ``world_to_camera`` is a reflection (det −1) and ``K`` has
  positive focal lengths, which is how a DICOM image (seen from the detector) comes out;
  ``"right"`` when ``world_to_camera`` is a proper rotation (a mirrored image then has
  ``K[0, 0] < 0``). Both give the same ``projection``.
* ``image_size``: ``[width, height]`` in pixels; ``world_frame``: ``"RAS"``; ``units``: ``"mm"``.

Files are written atomically, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..geometry.camera import Intrinsics
from .atomic import atomic_write_text, read_json

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "camera_pose",
    "CameraPose",
    "decompose_projection",
    "dumps_compact",
    "pose_from_dict",
    "pose_to_dict",
    "PoseFileError",
    "read_pose_json",
    "write_pose_json",
]

FORMAT_NAME = "xvr-pose"
FORMAT_VERSION = 1
_FLIP_X = np.diag([-1.0, 1.0, 1.0])
_RIGID_TOL = 1e-5


class PoseFileError(ValueError):
    """A result JSON that is missing fields or whose matrices are inconsistent."""


@dataclass
class CameraPose:
    """A calibrated view: signed intrinsics and a proper ``camera_to_world`` (see :mod:`xvrcore.geometry`)."""

    intrinsics: Intrinsics
    camera_to_world: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def world_to_camera(self) -> np.ndarray:
        return np.linalg.inv(self.camera_to_world)

    @property
    def projection(self) -> np.ndarray:
        return self.intrinsics.matrix().numpy() @ self.world_to_camera[:3]


def pose_to_dict(pose: CameraPose, handedness: str | None = None) -> dict[str, Any]:
    """The JSON-ready dictionary; ``handedness`` defaults to ``"left"`` for mirrored images."""
    k = pose.intrinsics.matrix().numpy()
    w2c = pose.world_to_camera
    mirrored = pose.intrinsics.mirrored
    handedness = handedness or ("left" if mirrored else "right")
    if handedness not in ("left", "right"):
        raise ValueError(f"handedness must be 'left' or 'right', got {handedness!r}")
    if handedness == "left":
        if not mirrored:
            raise ValueError("a non-mirrored (pinhole-view) image is right-handed with positive focal lengths")
        k = k @ _FLIP_X
        w2c = np.diag([-1.0, 1.0, 1.0, 1.0]) @ w2c
    out = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "intrinsics": k.tolist(),
        "world_to_camera": w2c.tolist(),
        "projection": (k @ w2c[:3]).tolist(),
        "handedness": handedness,
        "image_size": [pose.intrinsics.width, pose.intrinsics.height],
        "world_frame": "RAS",
        "units": "mm",
    }
    clash = set(out) & set(pose.extra)
    if clash:
        raise ValueError(f"extra fields would overwrite the pose fields {sorted(clash)}")
    out.update(pose.extra)
    return out


def dumps_compact(data: Any) -> str:
    """JSON with two-space indentation but each innermost list of numbers on one line (matrix rows)."""
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s+([-\d.eE+,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def write_pose_json(path: str | Path, pose: CameraPose, handedness: str | None = None) -> Path:
    path = Path(path)
    atomic_write_text(path, dumps_compact(pose_to_dict(pose, handedness)))
    return path


def _matrix(data: dict, key: str, shape: tuple[int, int], source: str) -> np.ndarray | None:
    if key not in data:
        return None
    try:
        m = np.asarray(data[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PoseFileError(f"{source}: '{key}' is not a numeric matrix ({exc})") from None
    if m.shape != shape:
        raise PoseFileError(f"{source}: '{key}' must be {shape[0]}×{shape[1]}, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise PoseFileError(f"{source}: '{key}' contains NaN or infinite values")
    return m


def decompose_projection(projection: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K`` (positive diagonal, ``K[2,2] = 1``), ``R`` (det ±1) and ``t`` with ``P ∝ K [R | t]``.

    The scale of ``P`` is taken as positive (points in front of the source have positive depth,
    as this format writes them).
    """
    m = projection[:, :3]
    # RQ decomposition through QR of the row-reversed transpose.
    rev = np.flipud(np.eye(3))
    q, r = np.linalg.qr((rev @ m).T)
    k = rev @ r.T @ rev
    rot = rev @ q.T
    signs = np.diag(np.sign(np.diag(k)))
    k, rot = k @ signs, signs @ rot
    scale = k[2, 2]
    k = k / scale
    t = np.linalg.solve(k, projection[:, 3] / scale)
    return k, rot, t


def _check_consistent(source: str, p: np.ndarray, other: np.ndarray, what: str) -> None:
    a, b = p / np.linalg.norm(p), other / np.linalg.norm(other)
    if not np.allclose(a, b, atol=1e-6):
        raise PoseFileError(f"{source}: 'projection' disagrees with {what}; the file is inconsistent")


def pose_from_dict(data: dict[str, Any], source: str = "pose JSON") -> CameraPose:
    """Validate and convert a result dictionary (see the module docstring)."""
    if not isinstance(data, dict):
        raise PoseFileError(f"{source}: expected a JSON object")
    p = _matrix(data, "projection", (3, 4), source)
    k = _matrix(data, "intrinsics", (3, 3), source)
    w2c = _matrix(data, "world_to_camera", (4, 4), source)
    size = data.get("image_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise PoseFileError(f"{source}: 'image_size' must be [width, height] in pixels, got {size!r}")
    if p is None:
        if k is None or w2c is None:
            raise PoseFileError(f"{source}: needs 'projection' (or both 'intrinsics' and 'world_to_camera')")
        p = k @ w2c[:3]
    if w2c is not None:
        err = float(np.abs(w2c[:3, :3] @ w2c[:3, :3].T - np.eye(3)).max())
        if err > _RIGID_TOL or not np.allclose(w2c[3], [0, 0, 0, 1]):
            raise PoseFileError(f"{source}: 'world_to_camera' is not rigid (|R Rᵀ − I| = {err:.2e})")
    if k is not None and w2c is not None:
        _check_consistent(source, p, k @ w2c[:3], "'intrinsics' × 'world_to_camera'")
    k_pos, rot, t = decompose_projection(p)
    if abs(abs(np.linalg.det(rot)) - 1) > _RIGID_TOL:
        raise PoseFileError(f"{source}: 'projection' does not factor into intrinsics and a rigid pose")
    handed = "left" if np.linalg.det(rot) < 0 else "right"
    if "handedness" in data and data["handedness"] not in ("left", "right"):
        raise PoseFileError(f"{source}: 'handedness' must be 'left' or 'right', got {data['handedness']!r}")
    fx = k_pos[0, 0]
    if handed == "left":  # mirrored image: move the reflection into the sign of fx
        rot, t, fx = _FLIP_X @ rot, _FLIP_X @ t, -fx
    if abs(k_pos[0, 1]) > 1e-6 * abs(k_pos[0, 0]):
        raise PoseFileError(f"{source}: skewed pixels (K[0,1] = {k_pos[0, 1]:.3g}) are not supported")
    intr = Intrinsics(float(fx), float(k_pos[1, 1]), float(k_pos[0, 2]), float(k_pos[1, 2]), size[0], size[1])
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot.T, -rot.T @ t
    known = {"format", "format_version", "intrinsics", "world_to_camera", "projection", "handedness",
             "image_size", "world_frame", "units"}
    extra = {key: value for key, value in data.items() if key not in known}
    return CameraPose(intr, c2w, extra)


def read_pose_json(path: str | Path) -> CameraPose:
    path = Path(path)
    data = read_json(path, PoseFileError, "pose JSON file")
    if isinstance(data, dict) and data.get("world_frame", "RAS") != "RAS":
        raise PoseFileError(f"{path}: world_frame must be 'RAS', got {data.get('world_frame')!r}")
    return pose_from_dict(data, str(path))


def camera_pose(intrinsics: Intrinsics, camera_to_world, **extra: Any) -> CameraPose:
    """Convenience constructor accepting a torch tensor or array for ``camera_to_world``."""
    c2w = camera_to_world.detach().cpu().double().numpy() if isinstance(camera_to_world, torch.Tensor) else np.asarray(
        camera_to_world, dtype=np.float64
    )
    c2w = c2w.reshape(4, 4)
    if np.linalg.det(c2w[:3, :3]) < 0 or not math.isclose(abs(np.linalg.det(c2w[:3, :3])), 1.0, abs_tol=1e-6):
        raise ValueError("camera_to_world must be a proper rigid transform (det +1)")
    return CameraPose(intrinsics, c2w, dict(extra))
