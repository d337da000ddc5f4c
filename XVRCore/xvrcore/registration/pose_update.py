"""How the refinement moves a pose: a rotation about the target and a translation, in the camera's axes.

Expressing both in the camera axes of the stage's starting pose lets Adam's per-coordinate steps
separate the in-plane motion from the poorly constrained depth (paper, Fig. S3).
"""

from __future__ import annotations

import torch

from ..geometry.rotations import axis_angle_to_matrix, make_rigid

__all__ = ["PoseUpdate", "updated_pose"]


def updated_pose(base: torch.Tensor, center: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``base`` ``(4, 4)`` turned by ``rotation`` ``(..., 3)`` (axis-angle) about ``center`` ``(3,)`` and moved
    by ``translation`` ``(..., 3)`` mm; returns ``(..., 4, 4)``.

    Both are expressed in the base pose's camera axes (x, y in the image plane, z along the beam).
    """
    axes = base[:3, :3]
    rot = axis_angle_to_matrix(rotation @ axes.T)
    moved = (rot @ (base[:3, 3] - center)[..., None])[..., 0] + center + translation @ axes.T
    return make_rigid(rot @ axes, moved)


class PoseUpdate(torch.nn.Module):
    """The differentiable :func:`updated_pose` of one base pose, with zero-initialised parameters."""

    def __init__(self, base: torch.Tensor, center: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("base", base.to(torch.float64))
        self.register_buffer("center", center.to(torch.float64))
        self.rotation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=base.device))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=base.device))

    def forward(self) -> torch.Tensor:
        return updated_pose(self.base, self.center, self.rotation, self.translation)
