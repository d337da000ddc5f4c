"""The review layout, as a user meets it in the registration panel (the real widget on its real ``.ui``,
Slicer's own layout logic): registered once, shown when a registration result arrives and not by training,
its views showing the X-ray with the DRR in colour fusion, the X-ray with the segment outlines, and 3D.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("PySide6")

from panel_helpers import fake_registration_result, fake_training, import_xrays, poll_until_finished
from XVRCoreLib import volumes


def _layout_node():
    return slicer.app.layoutManager().layoutLogic().GetLayoutNode()


def _composite(name):
    from XVRCoreLib.views import slice_composite_node

    return slice_composite_node(slicer.mrmlScene, slicer.app.layoutManager().sliceWidget(name).mrmlSliceNode())


def test_the_review_layout_is_registered_once_and_not_shown_by_opening_the_panel(slicer_app, registration_module,
                                                                                  ct_node):
    from XVRRegistrationLib.layout import REVIEW_LAYOUT_ID, ReviewLayout, reviewLayoutDescription

    layoutNode = _layout_node()
    assert not layoutNode.IsLayoutDescription(REVIEW_LAYOUT_ID)
    before = slicer_app.layoutManager().layout
    slicer_app.createPanel(registration_module, "XVRRegistration")
    assert layoutNode.IsLayoutDescription(REVIEW_LAYOUT_ID)
    assert layoutNode.GetLayoutDescription(REVIEW_LAYOUT_ID) == reviewLayoutDescription()
    assert ReviewLayout.register(layoutNode) is False  # already there: nothing added again
    slicer_app.createPanel(registration_module, "XVRRegistration")  # a module reload registers it again: no change
    assert layoutNode.GetLayoutDescription(REVIEW_LAYOUT_ID) == reviewLayoutDescription()
    assert slicer_app.layoutManager().layoutChanges == [] and slicer_app.layoutManager().layout == before


def test_the_layout_describes_fusion_outline_and_3d_views(slicer_app, registration_module, ct_node):
    from XVRRegistrationLib.layout import FUSION_VIEW, OUTLINE_VIEW, REVIEW_LAYOUT_ID, ReviewLayout

    slicer_app.createPanel(registration_module, "XVRRegistration")
    ReviewLayout().switchTo(slicer_app.layoutManager())
    views = slicer_app.layoutManager().layoutLogic().GetViewNodes()
    shown = sorted(views.GetItemAsObject(i).GetID() for i in range(views.GetNumberOfItems()))
    assert shown == sorted(["vtkMRMLSliceNode" + FUSION_VIEW, "vtkMRMLSliceNode" + OUTLINE_VIEW, "vtkMRMLViewNode1"])
    assert slicer_app.layoutManager().layout == REVIEW_LAYOUT_ID


def _segmentation(scene, ct_node):
    from xvrcore.volume import volume_from_array
    from XVRCoreLib.volumes import volume_from_node

    ct = volume_from_node(ct_node)
    return volumes.segmentation_from_labelmap(scene, volume_from_array((ct.data > 300).astype(np.int16), ct.affine,
                                                                       kind="labels"), {1: "bone"}, {1: (241, 214, 145)})


def test_a_result_shows_the_review_layout_with_fusion_and_outlines(slicer_app, registration_panel, synthetic_xrays,
                                                                   scene, ct_node, tmp_path):
    from XVRCoreLib.scene import REFERENCE_ROLES
    from XVRRegistrationLib.layout import FUSION_COLOR, FUSION_VIEW, OUTLINE_VIEW, REVIEW_LAYOUT_ID

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, ("view_a",))["view_a"]
    p = panel._parameterNode
    p.inputSegmentation = _segmentation(scene, ct_node)
    assert slicer_app.layoutManager().layoutChanges == []  # importing and showing an X-ray keeps the layout
    panel._job = fake_registration_result(xray, synthetic_xrays["view_a"][1], tmp_path)
    panel._timer.start()
    poll_until_finished(panel)
    assert xray.GetAttribute("XVR.Result"), panel.ui.logTextEdit.toPlainText()
    assert slicer_app.layoutManager().layoutChanges == [REVIEW_LAYOUT_ID]
    drr, outlines = (xray.GetNodeReference(REFERENCE_ROLES[role]) for role in ("drr", "outlines"))
    assert drr is not None and outlines is not None and slicer.util.arrayFromVolume(outlines).any()

    fusion = _composite(FUSION_VIEW)
    assert (fusion.GetBackgroundVolumeID(), fusion.GetForegroundVolumeID()) == (xray.GetID(), drr.GetID())
    assert fusion.GetLabelVolumeID() is None and fusion.GetForegroundOpacity() == pytest.approx(p.drrOpacity)
    table = drr.GetDisplayNode().GetColorNode()
    assert table.GetName() == "XVR DRR fusion"
    dim, bright = [0.0] * 4, [0.0] * 4
    table.GetColor(0, dim)
    table.GetColor(table.GetNumberOfColors() - 1, bright)
    np.testing.assert_allclose(bright[:3], FUSION_COLOR, atol=1 / 255)  # stored as 8-bit
    np.testing.assert_allclose(dim[:3], np.array(FUSION_COLOR) / 3, atol=1 / 255)
    # Only the DRR's dense part is drawn (Slicer's threshold makes the rest transparent): the X-ray shows there.
    display, values = drr.GetDisplayNode(), slicer.util.arrayFromVolume(drr)
    inside = values[values > 0]
    assert display.GetApplyThreshold()
    assert display.GetLowerThreshold() == pytest.approx(np.percentile(inside, 60), rel=1e-4)
    assert display.GetWindowLevelMin() == pytest.approx(display.GetLowerThreshold())
    assert xray.GetDisplayNode().GetColorNode().GetName() != table.GetName()

    outline = _composite(OUTLINE_VIEW)
    assert (outline.GetBackgroundVolumeID(), outline.GetLabelVolumeID()) == (xray.GetID(), outlines.GetID())
    assert outline.GetForegroundVolumeID() is None
    # Both views are turned to the X-ray's detector plane: their normals are the X-ray's viewing direction.
    from XVRCoreLib.volumes import ijk_to_world_matrix
    from XVRCoreLib.vtkdata import array_from_vtk_matrix

    normal = np.cross(*(ijk_to_world_matrix(xray)[:3, :2].T))
    for name in (FUSION_VIEW, OUTLINE_VIEW):
        slice_to_ras = array_from_vtk_matrix(slicer.app.layoutManager().sliceWidget(name).mrmlSliceNode().GetSliceToRAS())
        assert abs(np.dot(slice_to_ras[:3, 2], normal / np.linalg.norm(normal))) == pytest.approx(1.0, abs=1e-6)

    # The user goes back to another layout while reviewing; the next result of the same job would not switch
    # again, and showing the X-ray again there uses the ordinary Red view (the DRR in the X-ray's grey).
    slicer_app.layoutManager().setLayout(3)
    panel.xraySection.show(xray)
    assert drr.GetDisplayNode().GetColorNode().GetName() != "XVR DRR fusion"
    assert not drr.GetDisplayNode().GetApplyThreshold()  # the whole DRR, in the X-ray's grey
    assert _composite("Red").GetLabelVolumeID() == outlines.GetID()


def test_training_results_do_not_change_the_layout(slicer_app, training_panel, scene, torso_path,
                                                   tmp_path):
    from xvrcore.io.events import PREFIX

    volumes.load_volume_node(scene, torso_path, name="CT")
    before = slicer_app.layoutManager().layout
    finished = PREFIX + json.dumps({"event": "finished", "model": str(tmp_path / "run" / "model")})
    training_panel._job = fake_training(tmp_path, f"print({finished!r})")
    training_panel._timer.start()
    poll_until_finished(training_panel)
    assert "Training finished" in training_panel.ui.statusLabel.text
    assert slicer_app.layoutManager().layoutChanges == [] and slicer_app.layoutManager().layout == before
