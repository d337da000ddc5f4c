"""Landmarks from markups: control points in the world, and 2D/3D landmark pairs for a pose from points.

Conventions (world, camera, intrinsics): :mod:`xvrcore.conventions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xvrcore.geometry.camera import Intrinsics

__all__ = ["landmarks_from_markups", "markups_points_world"]


def markups_points_world(node) -> tuple[np.ndarray, list[str]]:
    """World (RAS) positions ``(N, 3)`` of a markups node's defined control points, and their labels."""
    points, labels = [], []
    for i in range(node.GetNumberOfControlPoints()):
        if hasattr(node, "GetNthControlPointPositionStatus") and node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
            continue
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(i, p)
        points.append(p)
        labels.append(node.GetNthControlPointLabel(i))
    return np.asarray(points, dtype=np.float64).reshape(-1, 3), labels


def landmarks_from_markups(xray_markups, volume_markups, camera_to_world, intrinsics: Intrinsics):
    """Pairs of image points (pixels) and CT points (RAS) from two markups nodes.

    The image points were placed on the X-ray in a slice view, so they lie on the detector plane of
    ``camera_to_world``; each is projected to its pixel ``(u, v)``. Points pair by label when both
    nodes use the same set of labels, else by order. Returns ``(points_2d, points_3d, labels)``.
    """
    p2w, l2 = markups_points_world(xray_markups)
    p3, l3 = markups_points_world(volume_markups)
    if len(l2) != len(l3):
        raise ValueError(f"{len(l2)} points on the X-ray but {len(l3)} in the CT; place the same landmarks in both")
    if len(set(l2)) == len(l2) and set(l2) == set(l3) and l2 != l3:
        order = [l3.index(label) for label in l2]
        p3, l3 = p3[order], [l3[i] for i in order]
    pose = np.asarray(camera_to_world, dtype=np.float64).reshape(4, 4)
    cam = (p2w - pose[:3, 3]) @ pose[:3, :3]  # world → camera: Rᵀ (p − t)
    if len(cam) and np.any(cam[:, 2] <= 0):
        raise ValueError("an X-ray landmark lies behind the X-ray source; place the points on the X-ray image")
    u = intrinsics.fx * cam[:, 0] / cam[:, 2] + intrinsics.cx
    v = intrinsics.fy * cam[:, 1] / cam[:, 2] + intrinsics.cy
    return np.stack([u, v], 1), p3, l2
