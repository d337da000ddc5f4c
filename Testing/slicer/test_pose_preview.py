"""The training panel's 3D preview of sampled C-arm poses: N poses from the current ranges, drawn by the sampler
the training uses (``xvrcore.learning.sampling``, recomputed here with the same seed), one source→detector
line each, in a model node the selectors ignore; updated when a range changes, gone when unchecked or when
the scene closes.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
pytest.importorskip("PySide6")

from XVRCoreLib import pose_preview


def expected_sources(panel, ct_node, n):
    """The sources and beam directions xvrcore's sampler draws from the panel's ranges about the CT's centre
    (``Volume.center``, the training's isocentre), with the preview's seed."""
    from xvrcore.learning.sampling import PoseRanges, keyed_generator, sample_poses
    from XVRCoreLib.clinical_ranges import to_paper
    from XVRCoreLib.volumes import volume_from_node

    p = panel._parameterNode
    paper = to_paper(panel.logic.clinicalRanges(p), p.orientation.value)
    ranges = PoseRanges(**{name: tuple(paper[name]) for name in ("alpha", "beta", "gamma", "x", "y", "z")},
                        orientation=p.orientation.value)
    isocenter = torch.as_tensor(volume_from_node(ct_node).center)
    poses, _ = sample_poses(ranges, n, keyed_generator(pose_preview.PREVIEW_SEED), isocenter=isocenter)
    return poses[:, :3, 3].numpy(), poses[:, :3, 2].numpy()


def preview_points(node) -> np.ndarray:
    points = node.GetPolyData().GetPoints()
    return np.array([points.GetPoint(i) for i in range(points.GetNumberOfPoints())])


def test_the_preview_shows_the_sampled_poses_and_follows_the_ranges(slicer_app, ct_node, training_panel, scene):
    panel = training_panel
    assert panel._parameterNode.inputVolume is ct_node
    assert pose_preview.pose_preview_nodes(scene) == []
    panel.ui.posePreviewCheckBox.checked = True  # as the user ticks it
    (node,) = pose_preview.pose_preview_nodes(scene)
    n = panel._extras.preview.count
    assert node.GetPolyData().GetNumberOfLines() == n  # one glyph per pose

    sources, beams = expected_sources(panel, ct_node, n)
    points = preview_points(node)
    np.testing.assert_allclose(points[0::2], sources, atol=1e-6)  # the training sampler's sources
    np.testing.assert_allclose(points[1::2], sources + panel._parameterNode.sid * beams, atol=1e-6)  # detectors
    distance = np.linalg.norm(points[0::2] - pose_preview.volume_center(ct_node), axis=1)
    assert distance.min() >= 450.0 - 1.0 and distance.max() <= np.hypot(1000.0, 150 * np.sqrt(2)) + 1.0  # SOD range

    # A range change (a custom LAO/RAO range) reaches the preview through the parameter node.
    p = panel._parameterNode
    p.preset = type(p.preset).custom
    p.primaryMin, p.primaryMax = 10.0, 20.0
    (same,) = pose_preview.pose_preview_nodes(scene)
    assert same is node
    sources_now, _ = expected_sources(panel, ct_node, n)
    np.testing.assert_allclose(preview_points(node)[0::2], sources_now, atol=1e-6)
    assert not np.allclose(sources_now, sources)

    # Selectors leave it alone: it is no source volume and carries the preview role.
    from XVRCoreLib.panel_widgets import ROLE_ATTRIBUTE

    assert node.GetAttribute(ROLE_ATTRIBUTE) == pose_preview.POSE_PREVIEW_ROLE
    assert node.GetDisplayNode().GetVisibility2D() == 0

    panel.ui.posePreviewCheckBox.checked = False
    assert pose_preview.pose_preview_nodes(scene) == []


def test_the_preview_goes_with_the_scene(slicer_app, ct_node, training_panel, scene):
    panel = training_panel
    panel.ui.posePreviewCheckBox.checked = True
    assert len(pose_preview.pose_preview_nodes(scene)) == 1
    slicer_app.closeScene()
    assert pose_preview.pose_preview_nodes(scene) == []
    assert not panel.ui.posePreviewCheckBox.checked  # a new scene starts without it
