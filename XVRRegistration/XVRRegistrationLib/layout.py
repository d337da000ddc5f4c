"""The review layout: the views a radiologist checks a registration result in, registered once with Slicer's
layout manager and shown when a result arrives (never by training).

* the **fusion** view (Red, the largest): the X-ray in grey with the DRR blended over it in amber (colour
  fusion: where the two agree the amber follows the bones of the X-ray); flicker and the checkerboard act
  on this view, as on the Red view of any layout;
* the **outline** view: the X-ray with the reprojected segment outlines, no DRR;
* the **3D** view: the C-arm beam, the X-ray on its detector plane, the CT and the segments.
"""

__all__ = ["FUSION_COLOR", "FUSION_VIEW", "OUTLINE_VIEW", "REVIEW_LAYOUT_ID", "REVIEW_VIEW_SIZES", "THREED_VIEW",
           "ReviewLayout",
           "reviewLayoutDescription"]

REVIEW_LAYOUT_ID = 2501  # a custom layout id (Slicer's own layouts use ids below 1000)
FUSION_VIEW = "Red"  # the panel's flicker, checkerboard and opacity act on the Red view
OUTLINE_VIEW = "XVROutlines"
THREED_VIEW = "1"
FUSION_COLOR = (1.0, 0.55, 0.0)  # amber: contrasts with the grey X-ray, also for red-green colour blindness
FUSION_TABLE_NAME = "XVR DRR fusion"
FUSION_PERCENTILE = 60  # the DRR's densest 40 % (bone, contrast) is drawn in colour, the rest left out
# The views' sizes in pixels at a 1280x800 view area: the fusion view on the left half, the other two stacked.
REVIEW_VIEW_SIZES = {FUSION_VIEW: (640, 800), OUTLINE_VIEW: (640, 400), THREED_VIEW: (640, 400)}


def _sliceView(tag: str, label: str, color: str) -> str:
    return (f'<view class="vtkMRMLSliceNode" singletontag="{tag}">'
            f'<property name="orientation" action="default">Axial</property>'
            f'<property name="viewlabel" action="default">{label}</property>'
            f'<property name="viewcolor" action="default">{color}</property></view>')


def reviewLayoutDescription() -> str:
    """The layout's XML (the format of Slicer's vtkMRMLLayoutLogic): fusion | (outlines / 3D), equal halves."""
    threeD = (f'<view class="vtkMRMLViewNode" singletontag="{THREED_VIEW}">'
              f'<property name="viewlabel" action="default">{THREED_VIEW}</property></view>')
    return ('<layout type="horizontal" split="true">'
            f'<item splitSize="500">{_sliceView(FUSION_VIEW, "R", "#F34A33")}</item>'
            '<item splitSize="500"><layout type="vertical" split="true">'
            f'<item splitSize="500">{_sliceView(OUTLINE_VIEW, "O", "#6EB04B")}</item>'
            f'<item splitSize="500">{threeD}</item>'
            '</layout></item></layout>')


class ReviewLayout:
    """Registers and shows the review layout and fills its views. Never touches widgets."""

    @staticmethod
    def register(layoutNode) -> bool:
        """Add the layout's description to the layout node once; True if it was added (or updated) now."""
        description = reviewLayoutDescription()
        if not layoutNode.IsLayoutDescription(REVIEW_LAYOUT_ID):
            return bool(layoutNode.AddLayoutDescription(REVIEW_LAYOUT_ID, description))
        if layoutNode.GetLayoutDescription(REVIEW_LAYOUT_ID) != description:  # a reloaded, newer module
            return bool(layoutNode.SetLayoutDescription(REVIEW_LAYOUT_ID, description))
        return False

    def switchTo(self, layoutManager) -> None:
        """Show the review layout (registering it first if the layout node lost it, e.g. a new layout node)."""
        self.register(layoutManager.layoutLogic().GetLayoutNode())
        layoutManager.setLayout(REVIEW_LAYOUT_ID)

    @staticmethod
    def isShown(layoutManager) -> bool:
        return layoutManager.layout == REVIEW_LAYOUT_ID

    @staticmethod
    def sliceNodes(layoutManager):
        """The (fusion, outline) slice nodes of the review layout's views."""
        return tuple(layoutManager.sliceWidget(name).mrmlSliceNode() for name in (FUSION_VIEW, OUTLINE_VIEW))

    @staticmethod
    def fusionColorNode(scene):
        """The DRR's colour table in the fusion view (one per scene): dim to bright amber."""
        from XVRCoreLib.views import fusion_color_table_node

        return fusion_color_table_node(scene, FUSION_COLOR, FUSION_TABLE_NAME)

    @staticmethod
    def _fusionDisplay(drrNode, colorNode) -> None:
        """The DRR in amber over the grey X-ray: only its dense part, the rest transparent (Slicer's threshold:
        a scalar volume's transparency comes from the threshold, not from the colour table)."""
        import numpy as np
        from XVRCoreLib.vtkdata import array_from_image_data

        values = array_from_image_data(drrNode.GetImageData()).ravel()
        inside = values[values > 0]
        if inside.size == 0:
            return
        lower, upper = (float(v) for v in np.percentile(inside, [FUSION_PERCENTILE, 99.5]))
        display = drrNode.GetDisplayNode()
        was = display.StartModify()
        display.SetAndObserveColorNodeID(colorNode.GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(lower, max(upper, lower + 1e-6))
        display.SetAutoThreshold(False)
        display.SetLowerThreshold(lower)
        display.SetUpperThreshold(float(inside.max()))
        display.SetApplyThreshold(True)
        display.EndModify(was)

    @staticmethod
    def plainDisplay(xrayNode) -> None:
        """The DRR without the fusion's threshold, for the ordinary views (its colours and window are set
        again with the overlays)."""
        from XVRCoreLib.scene import REFERENCE_ROLES

        drr = xrayNode.GetNodeReference(REFERENCE_ROLES["drr"])
        if drr is not None and drr.GetDisplayNode() is not None:
            drr.GetDisplayNode().SetApplyThreshold(False)

    def show(self, xrayNode, fusionSliceNode, outlineSliceNode, opacity=0.5, showOutlines=True) -> None:
        """The X-ray with the DRR in colour fusion in one view, with the segment outlines in the other."""
        from XVRCoreLib.scene import REFERENCE_ROLES
        from XVRCoreLib.views import show_in_slice_view

        scene = xrayNode.GetScene()
        drr = xrayNode.GetNodeReference(REFERENCE_ROLES["drr"])
        outlines = xrayNode.GetNodeReference(REFERENCE_ROLES["outlines"]) if showOutlines else None
        if drr is not None and drr.GetDisplayNode() is not None:
            self._fusionDisplay(drr, self.fusionColorNode(scene))
        show_in_slice_view(scene, fusionSliceNode, xrayNode, drr, None, opacity)
        show_in_slice_view(scene, outlineSliceNode, xrayNode, None, outlines, opacity)
