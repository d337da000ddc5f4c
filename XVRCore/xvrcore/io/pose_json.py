"""The shared registration-result JSON: ``intrinsics``, ``world_to_camera`` and ``projection``.

The format (keys, handedness, image size) is defined in :mod:`xvrcore.conventions`; this module is its
one writer and reader. Files are written atomically, so a crash never leaves a half-written result;
reading validates shapes, rigidity and consistency (``projection`` against ``intrinsics`` ×
``world_to_camera``, up to scale), says which handedness the file uses, and accepts a file that
carries only the three shared keys, or only a ``projection``: the image size belongs to the image
the pose goes with (the X-ray), and only a file declaring a different one is refused. All matrices
are ``torch.float64``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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
    "PoseFile",
    "PoseFileError",
    "camera_pose",
    "decompose_projection",
    "dumps_compact",
    "load_pose_dict",
    "load_pose_file",
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


def _check_consistent(source: str, p: torch.Tensor, other: torch.Tensor, what: str) -> float:
    """The sign (±1) of the scale between ``p`` and ``other``; refuses them unless ``p ∝ other``."""
    sign = 1.0 if float((p * other).sum()) >= 0 else -1.0
    a, b = sign * p / p.norm(), other / other.norm()
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        worst = float((a - b).abs().max())
        raise PoseFileError(f"{source}: 'projection' disagrees with {what} (by {worst:.1e} of its norm, "
                            "allowed 1e-6); the file is inconsistent")
    return sign


def _declared_size(data: dict, source: str) -> tuple[int, int] | None:
    if "image_size" not in data:
        return None
    size = data["image_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise PoseFileError(f"{source}: 'image_size' must be [width, height] in pixels, got {size!r}")
    return size[0], size[1]


def _principal_point_size(k: torch.Tensor, source: str) -> tuple[int, int]:
    """The image size for a principal point at the image centre (pixel centres at 0 … size − 1)."""
    width, height = round(2 * float(k[0, 2]) + 1), round(2 * float(k[1, 2]) + 1)
    if width < 1 or height < 1:
        raise PoseFileError(f"{source}: has no 'image_size', and its principal point ({float(k[0, 2]):.1f}, "
                            f"{float(k[1, 2]):.1f}) px is not inside any image; give the image size")
    return width, height


def _image_size(data: dict, source: str, image_size: tuple[int, int] | None, k: torch.Tensor,
                principal_point: bool) -> tuple[tuple[int, int], str]:
    """The size of the image the pose goes with, and where it came from ("image", "file" or "principal point")."""
    declared = _declared_size(data, source)
    if image_size is not None:
        given = (int(image_size[0]), int(image_size[1]))
        if declared is not None and declared != given:
            raise PoseFileError(f"{source}: declares a {declared[0]}×{declared[1]} image but the image it goes "
                                f"with is {given[0]}×{given[1]}")
        return given, "image"
    if declared is not None:
        return declared, "file"
    if principal_point:
        return _principal_point_size(k, source), "principal point"
    raise PoseFileError(f"{source}: has no 'image_size' and no image was given to take it from "
                        "(the X-ray the pose goes with)")


def _rigid_world_to_camera(w2c: torch.Tensor, source: str) -> None:
    err = float((w2c[:3, :3] @ w2c[:3, :3].T - torch.eye(3, dtype=torch.float64)).abs().max())
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    if err > RIGID_TOLERANCE or not torch.allclose(w2c[3], bottom):
        raise PoseFileError(f"{source}: 'world_to_camera' is not rigid (|R Rᵀ − I| = {err:.2e})")


def _upper_triangular(k: torch.Tensor, source: str) -> None:
    if float(k[1, 0]) != 0 or float(k[2, 0]) != 0 or float(k[2, 1]) != 0 or not float(k[2, 2]) > 0:
        raise PoseFileError(f"{source}: 'intrinsics' must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")


def _file_handedness(data: dict, w2c: torch.Tensor | None, source: str) -> str | None:
    """"left" (a reflection) or "right" from ``world_to_camera``; checked against a declared ``handedness``."""
    declared = data.get("handedness")
    if declared is not None and declared not in ("left", "right"):
        raise PoseFileError(f"{source}: 'handedness' must be 'left' or 'right', got {declared!r}")
    if w2c is None:
        return declared
    found = "left" if float(torch.linalg.det(w2c[:3, :3])) < 0 else "right"
    if declared is not None and declared != found:
        raise PoseFileError(f"{source}: says handedness {declared!r} but its 'world_to_camera' is "
                            f"{'a reflection (det −1)' if found == 'left' else 'a rotation (det +1)'}")
    return found


def _projection(data: dict, source: str) -> tuple[torch.Tensor, str | None]:
    """The authoritative ``P`` (sign fixed by ``K [R | t]`` where given) and the file's handedness."""
    p = _matrix(data, "projection", (3, 4), source)
    k = _matrix(data, "intrinsics", (3, 3), source)
    w2c = _matrix(data, "world_to_camera", (4, 4), source)
    if k is not None:
        _upper_triangular(k, source)
    if w2c is not None:
        _rigid_world_to_camera(w2c, source)
    if p is None:
        if k is None or w2c is None:
            raise PoseFileError(f"{source}: needs 'projection' (or both 'intrinsics' and 'world_to_camera')")
        p = k @ w2c[:3]
    elif k is not None and w2c is not None:
        p = p * _check_consistent(source, p, k @ w2c[:3], "'intrinsics' × 'world_to_camera'")
    return p, _file_handedness(data, w2c, source)


@dataclass(frozen=True)
class PoseFile:
    """A pose file as read: the pose, the file's ``handedness`` ("left", "right", or None for a file with a
    ``projection`` only), whether the image is ``mirrored`` (detector-side), and where the image size
    came from (``size_from``: "image" — the one given —, "file" or "principal point")."""

    pose: CameraPose
    handedness: str | None
    mirrored: bool
    size_from: str

    def describe(self) -> str:
        """One line for a user: the handedness, the view and the image size's source."""
        k = self.pose.intrinsics
        form = {"left": "left-handed (world_to_camera a reflection, positive focal lengths)",
                "right": "right-handed (world_to_camera a rotation)", None: "a projection only"}[self.handedness]
        view = "mirrored (detector-side) view" if self.mirrored else "pinhole (source-side) view"
        return f"{form}; {view}; {k.width}×{k.height} image (size from the {self.size_from})"


def load_pose_dict(data: dict[str, Any], source: str = "pose JSON", image_size: tuple[int, int] | None = None,
                   *, principal_point_size: bool = False) -> PoseFile:
    """Validate and convert a result dictionary (format: :mod:`xvrcore.conventions`).

    ``image_size`` ``(width, height)``: the image the pose goes with (an X-ray); a file declaring another
    size is refused. Without it the file's ``image_size`` is used, else (``principal_point_size``) the
    size whose centre is the principal point, else the file is refused.
    """
    if not isinstance(data, dict):
        raise PoseFileError(f"{source}: expected a JSON object")
    p, handedness = _projection(data, source)
    k_pos, rot, t = decompose_projection(p)
    det = float(torch.linalg.det(rot))
    if abs(abs(det) - 1) > RIGID_TOLERANCE:
        raise PoseFileError(f"{source}: 'projection' does not factor into intrinsics and a rigid pose")
    (width, height), size_from = _image_size(data, source, image_size, k_pos, principal_point_size)
    fx = float(k_pos[0, 0])
    if det < 0:  # a mirrored image: move the reflection into the sign of fx (the pose stays proper)
        rot, t, fx = _FLIP_X @ rot, _FLIP_X @ t, -fx
    if abs(float(k_pos[0, 1])) > 1e-6 * abs(float(k_pos[0, 0])):
        raise PoseFileError(f"{source}: skewed pixels (K[0,1] = {float(k_pos[0, 1]):.3g}) are not supported")
    intrinsics = Intrinsics(fx, float(k_pos[1, 1]), float(k_pos[0, 2]), float(k_pos[1, 2]), width, height)
    camera_to_world = torch.eye(4, dtype=torch.float64)
    camera_to_world[:3, :3], camera_to_world[:3, 3] = rot.T, -rot.T @ t
    extra = {key: value for key, value in data.items() if key not in _KNOWN_KEYS}
    return PoseFile(CameraPose(intrinsics, camera_to_world, extra), handedness, det < 0, size_from)


def pose_from_dict(data: dict[str, Any], source: str = "pose JSON", image_size: tuple[int, int] | None = None,
                   *, principal_point_size: bool = False) -> CameraPose:
    """The pose of :func:`load_pose_dict`."""
    return load_pose_dict(data, source, image_size, principal_point_size=principal_point_size).pose


def load_pose_file(path: str | Path, image_size: tuple[int, int] | None = None, *,
                   principal_point_size: bool = False) -> PoseFile:
    """Read a result JSON (see :func:`load_pose_dict` for ``image_size``)."""
    path = Path(path)
    data = read_json(path, PoseFileError, "pose JSON file")
    if isinstance(data, dict) and data.get("world_frame", WORLD_FRAME) != WORLD_FRAME:
        raise PoseFileError(f"{path}: world_frame must be '{WORLD_FRAME}', got {data.get('world_frame')!r}")
    return load_pose_dict(data, str(path), image_size, principal_point_size=principal_point_size)


def read_pose_json(path: str | Path, image_size: tuple[int, int] | None = None, *,
                   principal_point_size: bool = False) -> CameraPose:
    """The pose of :func:`load_pose_file`."""
    return load_pose_file(path, image_size, principal_point_size=principal_point_size).pose
