"""C-arm poses as linear transform nodes: create, set and read them, save and load transform files.

A pose transform node's **TransformToParent is ``camera_to_world``** (:mod:`xvrcore.conventions`, "Slicer
transform node"): it maps a point in the camera frame (origin at the X-ray source, +z toward the
detector, mm) to the world. Models drawn in camera coordinates — the frustum, the textured detector
plane (:mod:`XVRCoreLib.xray_plane`) — are put *under* it. Saved by Slicer (ITK ``.h5``/``.tfm``) it
reads back with :func:`xvrcore.io.itk_transform.read_pose_transform`, and the ``.tfm`` that
``xvrcore register`` writes loads as the same node.

Poses come in as a ``(4, 4)`` tensor or array and go out as float64 numpy arrays (VTK's matrices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .scene import ATTRIBUTE_PREFIX, add_node, read_node
from .vtkdata import array_from_vtk_matrix, vtk_matrix

__all__ = ["POSE_ROLE", "load_transform_node", "pose_from_transform_node", "pose_transform_node", "save_transform_node", "set_pose"]

#: ``XVR.Role`` of a C-arm pose transform node (the pose selector lists only these).
POSE_ROLE = "pose"


def _check_rigid(pose: np.ndarray, what: str) -> np.ndarray:
    rot = pose[:3, :3]
    if not np.isfinite(pose).all() or np.abs(rot @ rot.T - np.eye(3)).max() > 1e-5 or np.linalg.det(rot) < 0:
        raise ValueError(f"{what} is not a rigid pose (rotation + translation)")
    return pose


def set_pose(transform_node, camera_to_world) -> None:
    """Set a linear transform node's TransformToParent to ``camera_to_world``."""
    pose = _check_rigid(np.asarray(camera_to_world, dtype=np.float64).reshape(4, 4), "camera_to_world")
    transform_node.SetMatrixTransformToParent(vtk_matrix(pose))


def pose_from_transform_node(transform_node, world: bool = True) -> np.ndarray:
    """``camera_to_world`` of a pose transform node (its TransformToParent; to the world if ``world``)."""
    import vtk

    if not transform_node.IsLinear():
        raise ValueError(f"{transform_node.GetName()}: a C-arm pose must be a linear transform")
    m = vtk.vtkMatrix4x4()
    if world:
        transform_node.GetMatrixTransformToWorld(m)
    else:
        transform_node.GetMatrixTransformToParent(m)
    return _check_rigid(array_from_vtk_matrix(m), transform_node.GetName())


def pose_transform_node(scene, camera_to_world, name: str = "C-arm pose", node=None):
    """A linear transform node (new unless ``node`` is given) holding the pose."""
    node = node or add_node(scene, "vtkMRMLLinearTransformNode", name, {"Role": POSE_ROLE})
    set_pose(node, camera_to_world)
    node.SetAttribute(ATTRIBUTE_PREFIX + "Role", POSE_ROLE)
    node.SetAttribute(ATTRIBUTE_PREFIX + "Direction", "TransformToParent = camera to world (RAS, mm)")
    return node


def save_transform_node(transform_node, path: str | Path) -> Path:
    """Write a transform node as Slicer saves it (ITK ``.h5``, ``.tfm`` or ``.txt``)."""
    import slicer

    path = Path(path)
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(transform_node):
        raise OSError(f"{path}: could not write the transform")
    return path


def load_transform_node(scene, path: str | Path, name: str | None = None):
    """Read an ITK transform file (``xvrcore register``'s ``.tfm``, Slicer's ``.h5``) into a new node."""
    import slicer

    path = Path(path)
    node = add_node(scene, "vtkMRMLLinearTransformNode", name or path.stem)
    read_node(scene, node, slicer.vtkMRMLTransformStorageNode(), path, "transform")
    return node
