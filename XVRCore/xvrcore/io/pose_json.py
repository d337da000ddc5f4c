"""The shared registration-result JSON: ``intrinsics``, ``world_to_camera`` and ``projection``.

The format (keys, handedness, image size) is defined in :mod:`xvrcore.conventions`; this module is its
one writer and reader. Files are written atomically, so a crash never leaves a half-written result;
reading validates shapes, rigidity and consistency, and accepts a file that carries only a
``projection`` (plus the image size). All matrices are ``torch.float64``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..conventions import RESULT_KEYS, UNITS, WORLD_FRAME
from ..geometry.camera import Intrinsics
from ..geometry.pose import RIGID_TOLERANCE, CameraPose, camera_pose
from .atomic import atomic_write_text, read_json

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CameraPose",
    "PoseFileError",
    "camera_pose",
    "decompose_projection",
    "dumps_compact",
    "pose_from_dict",
    "pose_to_dict",
    "read_pose_json",
    "write_pose_json",
]

FORMAT_NAME = "xvr-pose"
FORMAT_VERSION = 1
_FLIP_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
_KNOWN_KEYS = {"format", "format_version", *RESULT_KEYS, "handedness", "image_size", "world_frame", "units"}


class PoseFileError(ValueError):
    """A result JSON that is missing fields or whose matrices are inconsistent."""


def pose_to_dict(pose: CameraPose, handedness: str | None = None) -> dict[str, Any]:
    """The JSON-ready dictionary; ``handedness`` defaults to ``"left"`` for mirrored images."""
    k = pose.intrinsics.matrix()
    w2c = pose.world_to_camera.cpu()
    mirrored = pose.intrinsics.mirrored
    handedness = handedness or ("left" if mirrored else "right")
    if handedness not in ("left", "right"):
        raise ValueError(f"handedness must be 'left' or 'right', got {handedness!r}")
    if handedness == "left":
        if not mirrored:
            raise ValueError("a non-mirrored (pinhole-view) image is right-handed with positive focal lengths")
        k = k @ _FLIP_X
        w2c = torch.block_diag(_FLIP_X, torch.ones(1, 1, dtype=torch.float64)) @ w2c
    out = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "intrinsics": k.tolist(),
        "world_to_camera": w2c.tolist(),
        "projection": (k @ w2c[:3]).tolist(),
        "handedness": handedness,
        "image_size": [pose.intrinsics.width, pose.intrinsics.height],
        "world_frame": WORLD_FRAME,
        "units": UNITS,
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


def _matrix(data: dict, key: str, shape: tuple[int, int], source: str) -> torch.Tensor | None:
    if key not in data:
        return None
    try:
        m = torch.tensor(data[key], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PoseFileError(f"{source}: '{key}' is not a numeric matrix ({exc})") from None
    if tuple(m.shape) != shape:
        raise PoseFileError(f"{source}: '{key}' must be {shape[0]}×{shape[1]}, got shape {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise PoseFileError(f"{source}: '{key}' contains NaN or infinite values")
    return m


def decompose_projection(projection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``K`` (positive diagonal, ``K[2,2] = 1``), ``R`` (det ±1) and ``t`` with ``P ∝ K [R | t]``.

    The scale of ``P`` is taken as positive (points in front of the source have positive depth,
    as this format writes them).
    """
    projection = torch.as_tensor(projection, dtype=torch.float64)
    m = projection[:, :3]
    # RQ decomposition through QR of the row-reversed transpose.
    rev = torch.eye(3, dtype=torch.float64).flip(0)
    q, r = torch.linalg.qr((rev @ m).T)
    k = rev @ r.T @ rev
    rot = rev @ q.T
    signs = torch.diag(torch.sign(torch.diag(k)))
    k, rot = k @ signs, signs @ rot
    scale = k[2, 2]
    k = k / scale
    t = torch.linalg.solve(k, projection[:, 3] / scale)
    return k, rot, t


def _check_consistent(source: str, p: torch.Tensor, other: torch.Tensor, what: str) -> None:
    a, b = p / p.norm(), other / other.norm()
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        raise PoseFileError(f"{source}: 'projection' disagrees with {what}; the file is inconsistent")


def _image_size(data: dict, source: str) -> tuple[int, int]:
    size = data.get("image_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise PoseFileError(f"{source}: 'image_size' must be [width, height] in pixels, got {size!r}")
    return size[0], size[1]


def _projection(data: dict, source: str) -> torch.Tensor:
    """The authoritative ``P``, checked against ``intrinsics`` and ``world_to_camera`` where they are given."""
    p = _matrix(data, "projection", (3, 4), source)
    k = _matrix(data, "intrinsics", (3, 3), source)
    w2c = _matrix(data, "world_to_camera", (4, 4), source)
    if p is None:
        if k is None or w2c is None:
            raise PoseFileError(f"{source}: needs 'projection' (or both 'intrinsics' and 'world_to_camera')")
        p = k @ w2c[:3]
    if w2c is not None:
        err = float((w2c[:3, :3] @ w2c[:3, :3].T - torch.eye(3, dtype=torch.float64)).abs().max())
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
        if err > RIGID_TOLERANCE or not torch.allclose(w2c[3], bottom):
            raise PoseFileError(f"{source}: 'world_to_camera' is not rigid (|R Rᵀ − I| = {err:.2e})")
    if k is not None and w2c is not None:
        _check_consistent(source, p, k @ w2c[:3], "'intrinsics' × 'world_to_camera'")
    return p


def pose_from_dict(data: dict[str, Any], source: str = "pose JSON") -> CameraPose:
    """Validate and convert a result dictionary (format: :mod:`xvrcore.conventions`)."""
    if not isinstance(data, dict):
        raise PoseFileError(f"{source}: expected a JSON object")
    p = _projection(data, source)
    width, height = _image_size(data, source)
    k_pos, rot, t = decompose_projection(p)
    det = float(torch.linalg.det(rot))
    if abs(abs(det) - 1) > RIGID_TOLERANCE:
        raise PoseFileError(f"{source}: 'projection' does not factor into intrinsics and a rigid pose")
    if "handedness" in data and data["handedness"] not in ("left", "right"):
        raise PoseFileError(f"{source}: 'handedness' must be 'left' or 'right', got {data['handedness']!r}")
    fx = float(k_pos[0, 0])
    if det < 0:  # a left-handed file (mirrored image): move the reflection into the sign of fx
        rot, t, fx = _FLIP_X @ rot, _FLIP_X @ t, -fx
    if abs(float(k_pos[0, 1])) > 1e-6 * abs(float(k_pos[0, 0])):
        raise PoseFileError(f"{source}: skewed pixels (K[0,1] = {float(k_pos[0, 1]):.3g}) are not supported")
    intrinsics = Intrinsics(fx, float(k_pos[1, 1]), float(k_pos[0, 2]), float(k_pos[1, 2]), width, height)
    camera_to_world = torch.eye(4, dtype=torch.float64)
    camera_to_world[:3, :3], camera_to_world[:3, 3] = rot.T, -rot.T @ t
    extra = {key: value for key, value in data.items() if key not in _KNOWN_KEYS}
    return CameraPose(intrinsics, camera_to_world, extra)


def read_pose_json(path: str | Path) -> CameraPose:
    path = Path(path)
    data = read_json(path, PoseFileError, "pose JSON file")
    if isinstance(data, dict) and data.get("world_frame", WORLD_FRAME) != WORLD_FRAME:
        raise PoseFileError(f"{path}: world_frame must be '{WORLD_FRAME}', got {data.get('world_frame')!r}")
    return pose_from_dict(data, str(path))
