"""Showing the registration in Slicer's views: the X-ray with its overlays in a slice view turned to its
detector plane, the checkerboard, the DRR's opacity, and the CT and segments in 3D beside the beam.
"""

import slicer

__all__ = ["Display"]


class Display:
    """Puts X-rays and their overlays into the views (given as slice nodes). Never touches widgets."""

    def __init__(self, overlays) -> None:
        self.overlays = overlays  # builds the checkerboard

    @staticmethod
    def showXray(xrayNode, sliceNode, opacity=0.5, showOutlines=True) -> None:
        """The X-ray in ``sliceNode``'s view, aligned to its plane, with the DRR and outlines over it."""
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.views import show_in_slice_view

        drr = xrayNode.GetNodeReference(REFERENCE_ROLES["drr"])
        outlines = xrayNode.GetNodeReference(REFERENCE_ROLES["outlines"]) if showOutlines else None
        show_in_slice_view(xrayNode.GetScene(), sliceNode, xrayNode, drr, outlines, opacity)

    def showCheckerboard(self, xrayNode, sliceNode) -> None:
        """The X-ray/DRR checkerboard over the X-ray (opaque) in ``sliceNode``'s view."""
        from XVRCoreLib.views import show_in_slice_view

        node = self.overlays.checkerboardNode(xrayNode)
        show_in_slice_view(xrayNode.GetScene(), sliceNode, xrayNode, node, None, 1.0)

    @staticmethod
    def setForegroundOpacity(scene, sliceNode, opacity) -> None:
        from XVRCoreLib.views import set_foreground_opacity

        set_foreground_opacity(scene, sliceNode, opacity)

    @staticmethod
    def volumeRenderingPreset(volumeNode) -> str:
        """Slicer's volume rendering preset for the CT (bone) or the MRA (bright vessels)."""
        low = volumeNode.GetImageData().GetScalarRange()[0] if volumeNode.GetImageData() is not None else 0.0
        return "CT-Bone" if low <= -500 else "MR-Angio"  # CTs hold air at about -1000 HU

    def show3D(self, volumeNode, segmentationNode=None, volumeRenderingLogic=None):
        """The CT/MRA (volume rendering) and the segments (surfaces) in the 3D views, beside the C-arm beam.

        Leaves an existing volume rendering and existing surfaces as the user set them. Returns the
        volume rendering display node.
        """
        vr = volumeRenderingLogic or slicer.modules.volumerendering.logic()
        display = vr.GetFirstVolumeRenderingDisplayNode(volumeNode)
        if display is None:
            display = vr.CreateDefaultVolumeRenderingNodes(volumeNode)
            preset = vr.GetPresetByName(self.volumeRenderingPreset(volumeNode))
            if preset is not None:
                display.GetVolumePropertyNode().Copy(preset)
            display.SetVisibility(True)
        segmentation = segmentationNode.GetSegmentation() if segmentationNode is not None else None
        if segmentation is not None and segmentation.GetNumberOfSegments() and not segmentation.ContainsRepresentation(
                slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()):
            segmentationNode.CreateClosedSurfaceRepresentation()  # once: later, the user's 3D visibility stands
            if segmentationNode.GetDisplayNode() is not None:
                segmentationNode.GetDisplayNode().SetVisibility3D(True)
        return display
