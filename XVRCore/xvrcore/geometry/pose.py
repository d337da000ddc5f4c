"""The one pose type: a ``torch.float64`` ``camera_to_world`` tensor ``(..., 4, 4)``, and a calibrated view.

Every reader (DICOM header, pose JSON, ITK transform, landmarks, network) returns a pose through
:func:`as_pose`, and every writer takes one, so a pose never changes type on the way from the DICOM
reader to the result JSON (conventions: :mod:`xvrcore.conventions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .camera import Intrinsics
from .rotations import invert_rigid, rigidity_error

__all__ = ["RIGID_TOLERANCE", "CameraPose", "as_pose", "camera_pose"]

#: Largest ``|R Rᵀ − I|`` (and deviation of the last row) accepted as rigid; files store ~16 digits.
RIGID_TOLERANCE = 1e-5


def as_pose(matrix, what: str = "camera_to_world") -> torch.Tensor:
    """``matrix`` (a tensor, array or nested list) as a float64 CPU-or-same-device pose ``(..., 4, 4)``.

    Raises ``ValueError`` (naming ``what``) unless it is finite, rigid and proper (det +1).
    """
    pose = torch.as_tensor(matrix, dtype=torch.float64) if not torch.is_tensor(matrix) else matrix.detach().double()
    if pose.shape[-2:] != (4, 4):
        raise ValueError(f"{what} must be 4×4, got shape {tuple(pose.shape)}")
    if not bool(torch.isfinite(pose).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    error = float(rigidity_error(pose).max())
    if error > RIGID_TOLERANCE or bool((torch.linalg.det(pose[..., :3, :3]) < 0).any()):
        raise ValueError(f"{what} must be a proper rigid transform (det +1), |R Rᵀ − I| = {error:.2e}")
    return pose


@dataclass
class CameraPose:
    """A calibrated view: signed intrinsics and a proper ``camera_to_world`` ``(4, 4)`` float64 tensor.

    ``extra`` holds whatever else a result file records (timings, quality, …).
    """

    intrinsics: Intrinsics
    camera_to_world: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def world_to_camera(self) -> torch.Tensor:
        return invert_rigid(self.camera_to_world)

    @property
    def projection(self) -> torch.Tensor:
        """``P = K [R | t]``, ``(3, 4)``."""
        return self.intrinsics.matrix(device=self.camera_to_world.device) @ self.world_to_camera[:3]


def camera_pose(intrinsics: Intrinsics, camera_to_world, **extra: Any) -> CameraPose:
    """A :class:`CameraPose` from a pose given as a tensor, an array or a list (checked by :func:`as_pose`)."""
    return CameraPose(intrinsics, as_pose(camera_to_world).reshape(4, 4).cpu(), dict(extra))
