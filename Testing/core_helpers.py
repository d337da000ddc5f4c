"""Helpers the core tests share (importable because ``Testing/`` holds the root conftest)."""

from __future__ import annotations

import torch
from xvrcore.geometry.carm import carm_pose

D = torch.float64
ISO = torch.tensor([10.0, -20.0, 905.0], dtype=D)  # an isocentre away from the origin, as in a real CT


def carm_view(params, orientation: str = "AP", iso: torch.Tensor = ISO) -> torch.Tensor:
    """``camera_to_world`` (4×4 float64) of the paper's C-arm parameters ``(α, β, γ, x, y, z)``."""
    return carm_pose(torch.tensor(params, dtype=D), orientation, iso)


def beam(camera_to_world: torch.Tensor) -> torch.Tensor:
    """The beam direction (camera +z) of a pose, ``(..., 3)``."""
    return camera_to_world[..., :3, 2]
