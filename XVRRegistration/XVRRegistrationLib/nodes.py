"""What an X-ray node says about itself: its role, pose, images, warnings and display; the CT's centre.

An X-ray node carries ``XVR.Role = "xray"`` and node references (``XVRCoreLib.scene.REFERENCE_ROLES``)
to its pose transform and to the images drawn on its detector plane (DRR, outlines, checkerboard).
"""

import json

from slicer.i18n import tr as _

__all__ = [
    "displayInverted",
    "imageNodes",
    "isXray",
    "pose",
    "poseNode",
    "setColormap",
    "volumeCenter",
    "warnings",
    "worldKey",
    "xrayNodes",
]


def isXray(node) -> bool:
    return node is not None and node.GetAttribute("XVR.Role") == "xray"


def xrayNodes(scene) -> list:
    """The X-ray nodes of ``scene``, in scene order."""
    nodes = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if isXray(node):
            nodes.append(node)
    return nodes


def warnings(xrayNode) -> list:
    """What the DICOM reader warned about (missing geometry, assumed values…)."""
    return json.loads(xrayNode.GetAttribute("XVR.Warnings") or "[]")


def poseNode(xrayNode):
    """The X-ray's pose transform node (TransformToParent = camera → world), or None."""
    from XVRCoreLib.scene import REFERENCE_ROLES

    return xrayNode.GetNodeReference(REFERENCE_ROLES["pose"]) if xrayNode is not None else None


def pose(xrayNode):
    """``camera_to_world`` ``(4, 4)`` of the X-ray (its pose transform node, to the world)."""
    from XVRCoreLib.poses import pose_from_transform_node

    transform = poseNode(xrayNode)
    if transform is None:
        raise ValueError(_("{name} has no pose transform.").format(name=xrayNode.GetName()))
    return pose_from_transform_node(transform)


def imageNodes(xrayNode) -> list:
    """The X-ray and the images on its detector plane (DRR, outlines, checkerboard) that exist."""
    from XVRCoreLib.scene import REFERENCE_ROLES

    nodes = [xrayNode]
    for role in ("drr", "outlines", "checkerboard"):
        node = xrayNode.GetNodeReference(REFERENCE_ROLES[role])
        if node is not None:
            nodes.append(node)
    return nodes


def volumeCenter(volumeNode):
    """World position ``(3,)`` of the volume's central voxel (the origin if there is no volume)."""
    import numpy as np
    from XVRCoreLib.volumes import ijk_to_world_matrix

    if volumeNode is None or volumeNode.GetImageData() is None:
        return np.zeros(3)
    dims = np.array(volumeNode.GetImageData().GetDimensions(), dtype=float)
    return (ijk_to_world_matrix(volumeNode) @ np.append((dims - 1) / 2, 1.0))[:3]


def worldKey(volumeNode) -> tuple:
    """The volume's IJK-to-world, rounded: part of a cache key (a moved CT is written and rendered again)."""
    from XVRCoreLib.volumes import ijk_to_world_matrix

    return tuple(round(float(v), 6) for v in ijk_to_world_matrix(volumeNode)[:3].ravel())


def displayInverted(modality) -> bool:
    """Angiography and fluoroscopy (XA, RF) show dense tissue dark."""
    return str(modality).upper() in ("XA", "RF")


def setColormap(node, modality) -> None:
    """Grey, or inverted grey for XA/RF, the way the modality is read."""
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAndObserveColorNodeID(
            "vtkMRMLColorTableNodeInvertedGrey" if displayInverted(modality) else "vtkMRMLColorTableNodeGrey")
