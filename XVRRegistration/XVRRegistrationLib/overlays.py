"""The images drawn over an X-ray at its current pose: the DRR, the reprojected segment outlines and the
X-ray/DRR checkerboard, each a single-slice volume on the X-ray's detector plane.
"""

from slicer.i18n import tr as _

from . import nodes

__all__ = ["DISPLAY_SIZE", "Overlays"]

DISPLAY_SIZE = 256  # longer side (pixels) of the DRR, outline and checkerboard images shown over the X-ray


def _cached(cache: dict, nodeId: str, key: tuple, build):
    """``build()``, computed again only when ``key`` changes (one entry per node)."""
    entry = cache.get(nodeId)
    if entry is None or entry[0] != key:
        cache[nodeId] = entry = (key, build())
    return entry[1]


class Overlays:
    """Renders the overlays of an X-ray; keeps the renderer's volumes of the CT and the segments until those
    nodes change. Never touches widgets.
    """

    def __init__(self, xrays) -> None:
        self.xrays = xrays  # the XrayImporter that read the X-rays (their pixels and masks)
        self._drrCache = {}
        self._structureCache = {}

    def drrVolume(self, volumeNode):
        """The renderer's attenuation volume of a CT node (cached until the node changes)."""
        from xvrcore.drr import DRRVolume
        from xvrcore.volume import to_attenuation
        from XVRCoreLib.volumes import volume_from_node

        key = (volumeNode.GetID(), volumeNode.GetMTime(), volumeNode.GetImageData().GetMTime(), nodes.worldKey(volumeNode))
        return _cached(self._drrCache, volumeNode.GetID(), key,
                       lambda: DRRVolume.from_volume(to_attenuation(volume_from_node(volumeNode))))

    def structureVolumes(self, segmentationNode, volumeNode):
        """One small volume per segment (1 inside) for reprojecting outlines, with names and colours."""
        key = (segmentationNode.GetID(), segmentationNode.GetMTime(), volumeNode.GetID(), nodes.worldKey(volumeNode))
        return _cached(self._structureCache, segmentationNode.GetID(), key,
                       lambda: self._structureVolumes(segmentationNode, volumeNode))

    @staticmethod
    def _structureVolumes(segmentationNode, volumeNode):
        from xvrcore.drr import DRRVolume
        from xvrcore.volume import structure_volumes
        from XVRCoreLib.volumes import segmentation_labelmap

        labels, names, colors = segmentation_labelmap(segmentationNode, volumeNode)
        present = [label for label in names if (labels.data == label).any()]
        volumes = {label: DRRVolume.from_volume(v) for label, v in structure_volumes(labels, present).items()}
        return volumes, names, colors

    def displayGrid(self, xrayNode, maxSize=DISPLAY_SIZE):
        """The X-ray area-downsampled to the display grid, its mask and intrinsics."""
        import torch
        from xvrcore.registration import downsample_exposure_mask, downsample_xray

        xray = self.xrays.xray(xrayNode)
        image, k = downsample_xray(torch.as_tensor(xray.pixels), xray.intrinsics, maxSize)
        mask = downsample_exposure_mask(torch.as_tensor(xray.mask), tuple(image.shape[-2:]))
        return image.numpy(), mask.numpy() > 0, k, xray

    def updateOverlays(self, xrayNode, volumeNode, segmentationNode=None, maxSize=DISPLAY_SIZE):
        """Render the DRR and reproject the segment outlines at the X-ray's current pose.

        Both are single-slice volumes on the X-ray's detector plane (a coarser grid, ``maxSize`` pixels on
        the longer side). Returns ``(drrNode, outlineNode or None)``.
        """
        import torch
        from xvrcore.drr import render
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.xray_plane import xray_depth, xray_volume_node

        pose = nodes.pose(xrayNode)
        _, mask, k, xray = self.displayGrid(xrayNode, maxSize)
        volume = self.drrVolume(volumeNode)
        with torch.no_grad():
            drr = render(volume, torch.as_tensor(pose, dtype=volume.dtype), k)[0, 0].cpu().numpy()
        drrNode = xray_volume_node(xrayNode.GetScene(), drr, pose, k, xray_depth(xrayNode), name=f"{xrayNode.GetName()} DRR",
                                   node=xrayNode.GetNodeReference(REFERENCE_ROLES["drr"]),
                                   attributes={"Role": "drr"}, mask=mask)
        nodes.setColormap(drrNode, xray.modality)
        xrayNode.SetNodeReferenceID(REFERENCE_ROLES["drr"], drrNode.GetID())
        outlineNode = xrayNode.GetNodeReference(REFERENCE_ROLES["outlines"])
        if segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments():
            outlineNode = self._outlineNode(xrayNode, volumeNode, segmentationNode, pose, k, drr.shape)
        return drrNode, outlineNode

    def _outlineNode(self, xrayNode, volumeNode, segmentationNode, pose, k, shape):
        """The segments' outlines at ``pose`` as a label map on the display grid, coloured like the segments."""
        import numpy as np
        from xvrcore.drr import structure_masks
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.views import color_table_node, outline_labels
        from XVRCoreLib.xray_plane import xray_depth, xray_volume_node

        scene = xrayNode.GetScene()
        volumes, names, colors = self.structureVolumes(segmentationNode, volumeNode)
        masks = structure_masks(volumes, pose, k)
        outlines = outline_labels(masks, shape=shape) if masks else np.zeros(shape, np.int16)
        outlineNode = xray_volume_node(scene, outlines, pose, k, xray_depth(xrayNode), name=f"{xrayNode.GetName()} outlines",
                                       node=xrayNode.GetNodeReference(REFERENCE_ROLES["outlines"]),
                                       class_name="vtkMRMLLabelMapVolumeNode", attributes={"Role": "outlines"})
        colorName = f"{segmentationNode.GetName()} XVR colours"
        colorNode = color_table_node(scene, names, colors, name=colorName, node=scene.GetFirstNodeByName(colorName))
        outlineNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())
        xrayNode.SetNodeReferenceID(REFERENCE_ROLES["outlines"], outlineNode.GetID())
        return outlineNode

    def checkerboardNode(self, xrayNode, tiles=8):
        """A checkerboard of the X-ray and its DRR (even tiles X-ray, odd tiles DRR) on the detector plane."""
        import numpy as np
        from xvrcore.io.overlay import checkerboard_picture
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.vtkdata import array_from_image_data
        from XVRCoreLib.xray_plane import xray_depth, xray_intrinsics, xray_volume_node

        drrNode = xrayNode.GetNodeReference(REFERENCE_ROLES["drr"])
        if drrNode is None:
            raise ValueError(_("Render the DRR first (select the CT and show the X-ray)."))
        grid = xray_intrinsics(drrNode)
        image, mask, k, xray = self.displayGrid(xrayNode, max(grid.width, grid.height))
        drr = array_from_image_data(drrNode.GetImageData())[0]
        if nodes.displayInverted(xray.modality):  # compare as displayed
            image, drr = -image, -drr
        picture = np.asarray(checkerboard_picture(image, drr, mask=mask, tiles=tiles), dtype=np.float32)
        node = xray_volume_node(xrayNode.GetScene(), picture, nodes.pose(xrayNode), k, xray_depth(xrayNode),
                                name=f"{xrayNode.GetName()} checkerboard",
                                node=xrayNode.GetNodeReference(REFERENCE_ROLES["checkerboard"]),
                                attributes={"Role": "checkerboard"}, window=(0.0, 255.0))
        xrayNode.SetNodeReferenceID(REFERENCE_ROLES["checkerboard"], node.GetID())
        return node
