"""What an X-ray node says about itself: its role, pose, images, warnings and display; the CT's centre.

An X-ray node carries ``XVR.Role = "xray"`` and node references (``XVRCoreLib.scene.REFERENCE_ROLES``)
to its pose transform and to the images drawn on its detector plane (DRR, outlines, checkerboard).
"""

import json
from dataclasses import dataclass

from slicer.i18n import tr as _

__all__ = [
    "NodeXray",
    "displayInverted",
    "imageNodes",
    "isXray",
    "pose",
    "poseNode",
    "setColormap",
    "upgradeScene",
    "volumeCenter",
    "warnings",
    "worldKey",
    "xrayFromNode",
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


def upgradeScene(scene) -> int:
    """Bring a scene saved by an older version up to date; returns how many nodes were changed.

    Pose transforms saved before they carried ``XVR.Role = pose`` get it from the X-ray that refers to
    them (the pose selector lists only nodes with that role); no other transform is touched.
    """
    from XVRCoreLib.poses import POSE_ROLE

    changed = 0
    for node in xrayNodes(scene):
        transform = poseNode(node)
        if transform is not None and transform.GetAttribute("XVR.Role") is None:
            transform.SetAttribute("XVR.Role", POSE_ROLE)
            changed += 1
    return changed


@dataclass(frozen=True)
class NodeXray:
    """An X-ray as its node holds it, all that the overlays need (a saved scene has it without the DICOM)."""

    pixels: object  # float32 (H, W) line integrals, dense = high (a copy of the volume's voxels)
    mask: object  # bool (H, W): True where anatomy was exposed
    intrinsics: object  # xvrcore.geometry.camera.Intrinsics
    detector: object  # xvrcore.geometry.camera.Detector
    modality: str


def xrayFromNode(xrayNode) -> NodeXray:
    """The X-ray kept in ``xrayNode``: its voxels, ``XVR.Mask``, ``XVR.Intrinsics``/``XVR.SDD``, ``XVR.Modality``."""
    import numpy as np
    from XVRCoreLib.vtkdata import array_from_image_data
    from XVRCoreLib.xray_plane import xray_detector, xray_intrinsics, xray_mask

    if xrayNode.GetImageData() is None:
        raise ValueError(_("{name} has no image.").format(name=xrayNode.GetName()))
    pixels = np.asarray(array_from_image_data(xrayNode.GetImageData())[0], dtype=np.float32)
    return NodeXray(pixels, xray_mask(xrayNode), xray_intrinsics(xrayNode), xray_detector(xrayNode),
                    xrayNode.GetAttribute("XVR.Modality") or "")
