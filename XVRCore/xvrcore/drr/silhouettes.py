"""Silhouettes of structures: where a structure's rays cross it, for outlines on an X-ray.

A structure volume holds 1 inside the structure (:func:`xvrcore.volume.structure_volumes`), so its
exact (Siddon) DRR is the path length through the structure in mm; the silhouette is where that is
positive.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..geometry.camera import Intrinsics
from ..geometry.pose import as_pose
from .pyramid import DRRVolume
from .render import render_channels

__all__ = ["SILHOUETTE_MM", "structure_masks"]

SILHOUETTE_MM = 1e-3  # path length that counts as "the ray crosses the structure" (exact Siddon: > 0)


def structure_masks(
    volumes: Mapping[int, DRRVolume],
    camera_to_world,
    intrinsics: Intrinsics,
    threshold_mm: float = SILHOUETTE_MM,
) -> dict[int, np.ndarray]:
    """Silhouette (bool ``(H, W)``) of each structure volume at the pose ``camera_to_world`` ``(4, 4)``."""
    if not volumes:
        return {}
    pose = as_pose(camera_to_world).reshape(4, 4)
    with torch.no_grad():
        thickness = render_channels(list(volumes.values()), pose, intrinsics, method="siddon", level=0)[0]
    return {label: (thickness[i] > threshold_mm).cpu().numpy() for i, label in enumerate(volumes)}
