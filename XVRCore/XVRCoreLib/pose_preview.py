"""A 3D preview of the C-arm poses a training samples: N poses drawn from the panel's ranges by the sampler
the training uses (:func:`xvrcore.learning.sampling.sample_poses` about the volume centre), each drawn as a
line from its X-ray source to its detector centre, in one model node.

The model's points are ``source_0, detector_0, source_1, detector_1, …`` (world RAS, mm) and it has one
line cell per pose. The node carries ``XVR.Role`` = :data:`POSE_PREVIEW_ROLE`, so the panels' selectors and
source-volume filters leave it alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .panel_widgets import ROLE_ATTRIBUTE
from .scene import add_node, remove_node

__all__ = ["POSE_PREVIEW_ROLE", "PREVIEW_SEED", "pose_glyph_polydata", "pose_preview_nodes", "remove_pose_preview",
           "sampled_poses", "show_pose_preview", "volume_center"]

POSE_PREVIEW_ROLE = "posePreview"
PREVIEW_SEED = 0  # the same poses each time the ranges are the same: a change on screen is a change of range
_NAME = "XVR sampled C-arm poses"


def sampled_poses(paper_ranges: Mapping[str, tuple[float, float]], orientation: str, isocenter, n: int,
                  seed: int = PREVIEW_SEED) -> np.ndarray:
    """``(n, 4, 4)`` camera-to-world poses (conventions: ``xvrcore.conventions``) drawn from the paper's
    ranges ``{alpha: (min, max), …, z: (min, max)}`` about ``isocenter`` (RAS mm), as training draws them."""
    import torch
    from xvrcore.learning.sampling import PoseRanges, keyed_generator, sample_poses

    ranges = PoseRanges.from_dict({**{k: tuple(v) for k, v in paper_ranges.items()}, "orientation": orientation})
    center = torch.as_tensor(np.asarray(isocenter, dtype=np.float64))
    poses, _ = sample_poses(ranges, int(n), keyed_generator(seed), isocenter=center)
    return poses.numpy()


def pose_glyph_polydata(camera_to_world: np.ndarray, sdd: float):
    """vtkPolyData: for each pose, the source (the camera's origin) and the detector centre ``sdd`` mm along
    the principal ray (+z), joined by a line."""
    import vtk

    poses = np.asarray(camera_to_world, dtype=np.float64).reshape(-1, 4, 4)
    sources = poses[:, :3, 3]
    detectors = sources + float(sdd) * poses[:, :3, 2]
    points = vtk.vtkPoints()
    points.SetDataTypeToDouble()
    lines = vtk.vtkCellArray()
    for i, (source, detector) in enumerate(zip(sources, detectors, strict=True)):
        points.InsertNextPoint(*source)
        points.InsertNextPoint(*detector)
        lines.InsertNextCell(2)
        lines.InsertCellPoint(2 * i)
        lines.InsertCellPoint(2 * i + 1)
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetLines(lines)
    return polydata


def volume_center(volume_node) -> np.ndarray:
    """World RAS centre of the node's voxel box (``xvrcore.volume.Volume.center``: the training's isocentre)."""
    from .volumes import ijk_to_world_matrix

    dims = np.array(volume_node.GetImageData().GetDimensions(), dtype=np.float64)
    return (ijk_to_world_matrix(volume_node) @ np.append((dims - 1.0) / 2.0, 1.0))[:3]


def pose_preview_nodes(scene) -> list:
    """The preview model nodes of ``scene`` (normally one)."""
    found = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLModelNode")
        if node.GetAttribute(ROLE_ATTRIBUTE) == POSE_PREVIEW_ROLE:
            found.append(node)
    return found


def show_pose_preview(scene, polydata, color=(0.2, 0.7, 1.0)):
    """The preview model node showing ``polydata`` (the scene's one, updated, else a new one), 3D only."""
    nodes = pose_preview_nodes(scene)
    node = nodes[0] if nodes else add_node(scene, "vtkMRMLModelNode", _NAME, {"Role": POSE_PREVIEW_ROLE})
    node.SetAndObservePolyData(polydata)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetColor(*color)
    display.SetLineWidth(1.5)
    display.SetVisibility2D(False)
    return node


def remove_pose_preview(scene) -> None:
    for node in pose_preview_nodes(scene):
        remove_node(scene, node)
