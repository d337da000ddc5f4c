"""The QA controls in clinical terms: the pose arithmetic (``XVRRegistrationLib.qa_poses``) against
``xvrcore.geometry.carm``/``positioner`` and the camera's projection, and the panel's buttons, undo,
"back to the registered pose" and keyboard shortcuts as a user presses them (real widgets, real MRML).
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from xvrcore.geometry.camera import Intrinsics, project
from xvrcore.geometry.carm import carm_parameters
from xvrcore.geometry.positioner import pose_from_positioner, positioner_from_pose

ISO = np.array([12.0, -30.0, 45.0])


def _qa():
    from XVRRegistrationLib import qa_poses

    return qa_poses


def _registered_like_pose():
    """A nominal LAO 20 / CAU 8 pose with a small in-plane roll and offsets, as a registration leaves it."""
    from xvrcore.geometry.carm import carm_pose

    params = carm_parameters(pose_from_positioner(20.0, -8.0, 720.0, torch.as_tensor(ISO)), "PA", torch.as_tensor(ISO))
    params = params + torch.tensor([0.0, 0.0, 3.0, 4.0, 5.0, -6.0], dtype=torch.float64)
    return carm_pose(params, "PA", torch.as_tensor(ISO)).numpy()


def _pixel(pose, point, intrinsics):
    w2c = torch.linalg.inv(torch.as_tensor(pose))
    uv, depth = project(torch.as_tensor(point)[None], w2c, intrinsics)
    return uv.reshape(-1, 2)[0].numpy(), float(depth.reshape(-1)[0])


@pytest.mark.parametrize(("move", "index"), [("lao", 0), ("cranial", 1), ("roll", 2)])
@pytest.mark.parametrize("step", [1.0, -2.5])
def test_angle_moves_change_exactly_their_carm_angle(registration_module, move, index, step):
    before = _registered_like_pose()
    after = _qa().qaMovedPose(before, move, step, ISO)
    p0, p1 = (carm_parameters(torch.as_tensor(m), "PA", torch.as_tensor(ISO)).numpy() for m in (before, after))
    expected = p0.copy()
    expected[index] += step
    np.testing.assert_allclose(p1, expected, atol=1e-9)  # only that angle, by exactly the step; t unchanged


def test_lao_and_cranial_are_the_dicom_positioner_angles(registration_module):
    """LAO +1° is the DICOM primary angle +1 (detector toward the patient's left), CRA +1° the secondary +1."""
    nominal = pose_from_positioner(20.0, -8.0, 720.0, torch.as_tensor(ISO)).numpy()
    lao = positioner_from_pose(torch.as_tensor(_qa().qaMovedPose(nominal, "lao", 1.0, ISO)), torch.as_tensor(ISO))
    rao = positioner_from_pose(torch.as_tensor(_qa().qaMovedPose(nominal, "lao", -1.0, ISO)), torch.as_tensor(ISO))
    cra = positioner_from_pose(torch.as_tensor(_qa().qaMovedPose(nominal, "cranial", 1.0, ISO)), torch.as_tensor(ISO))
    assert (lao.primary, lao.secondary) == pytest.approx((21.0, -8.0), abs=1e-9)
    assert (rao.primary, rao.secondary) == pytest.approx((19.0, -8.0), abs=1e-9)
    assert (cra.primary, cra.secondary) == pytest.approx((20.0, -7.0), abs=1e-9)
    assert lao.sod == pytest.approx(720.0) and lao.offset == pytest.approx(0.0, abs=1e-9)  # about the isocentre


@pytest.mark.parametrize("fx", [-1500.0, 1500.0])  # mirrored (detector-side) and pinhole images
def test_pan_moves_the_projected_isocentre_by_the_expected_pixels(registration_module, fx):
    intrinsics = Intrinsics(fx, 1400.0, 40.0, 48.0, 80, 96)
    pose = _registered_like_pose()
    uv0, depth = _pixel(pose, ISO, intrinsics)
    qa = _qa()
    for move, step, expected in (("panRight", 2.0, (2.0 * abs(fx) / depth, 0.0)),
                                 ("panRight", -3.0, (-3.0 * abs(fx) / depth, 0.0)),
                                 ("panDown", 2.0, (0.0, 2.0 * 1400.0 / depth)),
                                 ("panDown", -1.0, (0.0, -1400.0 / depth))):
        moved = qa.qaMovedPose(pose, move, step, ISO, intrinsics)
        uv1, depth1 = _pixel(moved, ISO, intrinsics)
        np.testing.assert_allclose(uv1 - uv0, expected, atol=1e-9, err_msg=f"{move} {step}")
        assert depth1 == pytest.approx(depth, abs=1e-9)
        np.testing.assert_allclose(moved[:3, :3], pose[:3, :3], atol=0)  # the beam's direction stays


def test_roll_plus_turns_the_anatomy_clockwise_in_a_dicom_xray(registration_module):
    """A DICOM X-ray is the detector-side view (fx < 0), shown with its first row at the top: a point right of
    the isocentre moves down under roll +, i.e. clockwise on the screen, and up under roll −."""
    intrinsics = Intrinsics(-1500.0, 1500.0, 40.0, 48.0, 80, 96)
    pose = pose_from_positioner(20.0, -8.0, 720.0, torch.as_tensor(ISO)).numpy()
    centre = _pixel(pose, ISO, intrinsics)[0]
    right = next(p for p in (ISO + 10.0 * pose[:3, 0], ISO - 10.0 * pose[:3, 0])
                 if _pixel(pose, p, intrinsics)[0][0] > centre[0])
    for step, down in ((5.0, True), (-5.0, False)):
        uv = _pixel(_qa().qaMovedPose(pose, "roll", step, ISO), right, intrinsics)[0]
        assert bool(uv[1] > centre[1]) is down and uv[0] > centre[0]


def test_magnification_changes_the_depth_by_the_step(registration_module):
    intrinsics = Intrinsics(-1500.0, 1500.0, 40.0, 48.0, 80, 96)
    pose = _registered_like_pose()
    qa = _qa()
    depth = qa.isocentreDepth(pose, ISO)
    closer = qa.qaMovedPose(pose, "magnify", 10.0, ISO)
    assert qa.isocentreDepth(closer, ISO) == pytest.approx(depth - 10.0, abs=1e-9)
    assert qa.isocentreDepth(qa.qaMovedPose(pose, "magnify", -5.0, ISO), ISO) == pytest.approx(depth + 5.0, abs=1e-9)
    # The anatomy looks larger: a 20 mm segment across the beam at the isocentre grows by depth / (depth - 10).
    across = ISO + 20.0 * pose[:3, 0]
    size = [np.linalg.norm(_pixel(m, across, intrinsics)[0] - _pixel(m, ISO, intrinsics)[0]) for m in (pose, closer)]
    assert size[1] / size[0] == pytest.approx(depth / (depth - 10.0), rel=1e-9)
    with pytest.raises(ValueError, match="unknown QA move"):
        qa.qaMovedPose(pose, "sideways", 1.0, ISO)


# ---- the panel --------------------------------------------------------------------------------------------------


def _carm(panel, xray, centre):
    return carm_parameters(torch.as_tensor(panel.logic.poses.pose(xray)), "PA", torch.as_tensor(centre)).numpy()


def test_each_button_moves_the_pose_by_its_step(registration_panel, synthetic_xrays):
    from panel_helpers import import_xrays
    from XVRCoreLib.xray_plane import xray_intrinsics
    from XVRRegistrationLib.nodes import volumeCenter

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, ("view_a",))["view_a"]
    p = panel._parameterNode
    centre = volumeCenter(p.inputVolume)
    p.nudgeRotation, p.nudgeTranslation, p.nudgeDepth = 2.0, 3.0, 25.0
    for button, index, change in (("laoButton", 0, 2.0), ("raoButton", 0, -2.0), ("cranialButton", 1, 2.0),
                                  ("caudalButton", 1, -2.0), ("rotateZPlusButton", 2, 2.0),
                                  ("rotateZMinusButton", 2, -2.0)):
        before = _carm(panel, xray, centre)
        getattr(panel.ui, button).click()
        expected = before.copy()
        expected[index] += change
        np.testing.assert_allclose(_carm(panel, xray, centre), expected, atol=1e-9, err_msg=button)

    intrinsics = xray_intrinsics(xray)
    uv0, depth = _pixel(panel.logic.poses.pose(xray), centre, intrinsics)
    for button, delta in (("panRightButton", (1, 0)), ("panDownButton", (1, 1)), ("panLeftButton", (0, 1)),
                          ("panUpButton", (0, 0))):  # where the CT's centre is after each press, in steps
        getattr(panel.ui, button).click()
        uv, _ = _pixel(panel.logic.poses.pose(xray), centre, intrinsics)
        scale = np.array([abs(intrinsics.fx), intrinsics.fy]) * 3.0 / depth
        np.testing.assert_allclose(uv - uv0, np.array(delta) * scale, atol=1e-6, err_msg=button)
    panel.ui.magnifyPlusButton.click()
    assert _pixel(panel.logic.poses.pose(xray), centre, intrinsics)[1] == pytest.approx(depth - 25.0, abs=1e-9)
    assert xray.GetAttribute("XVR.ManuallyAdjusted") == "true"
    drr = slicer.util.arrayFromVolume(xray.GetNodeReference("XVRDrr"))[0]
    assert np.isfinite(drr).all() and drr.std() > 0  # rendered at the moved pose


def _matrix(panel, xray):
    from XVRCoreLib.poses import pose_from_transform_node

    return pose_from_transform_node(panel.logic.poses.poseNode(xray), world=False)


def test_undo_restores_the_exact_matrix_and_back_to_registered_the_result(registration_panel, synthetic_xrays,
                                                                         tmp_path):
    from panel_helpers import fake_registration_result, import_xrays, poll_until_finished

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, ("view_a",))["view_a"]
    assert not panel.ui.undoPoseButton.enabled and not panel.ui.registeredPoseButton.enabled
    imported = _matrix(panel, xray)
    truth = synthetic_xrays["view_a"][1]
    panel._job = fake_registration_result(xray, truth, tmp_path, quality={"p_submillimetre": 0.9, "passed": True})
    panel._timer.start()
    poll_until_finished(panel)
    registered = _matrix(panel, xray)
    np.testing.assert_allclose(registered, truth, atol=1e-9)
    assert panel.ui.registeredPoseButton.enabled and panel.ui.undoPoseButton.enabled

    history = [registered]
    for button in ("laoButton", "panRightButton", "magnifyPlusButton", "rotateZPlusButton"):
        getattr(panel.ui, button).click()
        history.append(_matrix(panel, xray))
    assert not np.allclose(history[-1], registered, atol=1e-3)
    panel.ui.registeredPoseButton.click()
    np.testing.assert_array_equal(_matrix(panel, xray), registered)  # the result's matrix, bit for bit
    assert xray.GetAttribute("XVR.ManuallyAdjusted") is None
    for expected in reversed(history):  # undo: "back to registered", then each move, in reverse
        panel.ui.undoPoseButton.click()
        np.testing.assert_array_equal(_matrix(panel, xray), expected)
    panel.ui.undoPoseButton.click()  # before the result: the pose the import gave
    np.testing.assert_array_equal(_matrix(panel, xray), imported)
    assert not panel.ui.undoPoseButton.enabled


def test_the_stacks_are_per_xray(registration_panel, synthetic_xrays):
    from panel_helpers import import_xrays

    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    a, b = xrays["view_a"], xrays["view_b"]
    start = {name: _matrix(panel, node) for name, node in xrays.items()}
    panel.ui.xrayVolumeSelector.userSelect(a)
    panel.ui.laoButton.click()
    panel.ui.xrayVolumeSelector.userSelect(b)
    assert not panel.ui.undoPoseButton.enabled  # B was never moved
    panel.ui.cranialButton.click()
    panel.ui.xrayVolumeSelector.userSelect(a)
    panel.ui.undoPoseButton.click()
    np.testing.assert_array_equal(_matrix(panel, a), start["view_a"])
    assert not np.array_equal(_matrix(panel, b), start["view_b"])  # B keeps its move


def _press(widget, keys: str) -> None:
    from PySide6 import QtGui
    from PySide6.QtTest import QTest

    sequence = QtGui.QKeySequence(keys)[0]
    QTest.keyClick(widget, sequence.key(), sequence.keyboardModifiers())


def test_keyboard_shortcuts_do_what_their_buttons_do(slicer_app, registration_panel, synthetic_xrays):
    from panel_helpers import import_xrays
    from PySide6 import QtWidgets
    from XVRRegistrationLib.nodes import volumeCenter
    from XVRRegistrationLib.qa_controls import SHORTCUTS

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, ("view_a",))["view_a"]
    centre = volumeCenter(panel._parameterNode.inputVolume)
    window = panel.parent
    window.show()
    window.activateWindow()
    QtWidgets.QApplication.processEvents()
    for name, keys in SHORTCUTS.items():
        assert f"({keys})" in getattr(panel.ui, name).toolTip, name  # documented where the user looks

    start = _matrix(panel, xray)
    _press(window, SHORTCUTS["laoButton"])
    np.testing.assert_allclose(_carm(panel, xray, centre)[0], carm_parameters(
        torch.as_tensor(start), "PA", torch.as_tensor(centre))[0].item() + 1.0, atol=1e-9)
    panel.ui.raoButton.click()
    lao_then_rao = _matrix(panel, xray)
    _press(window, SHORTCUTS["panRightButton"])
    by_key = _matrix(panel, xray)
    _press(window, SHORTCUTS["undoPoseButton"])
    np.testing.assert_array_equal(_matrix(panel, xray), lao_then_rao)
    panel.ui.panRightButton.click()
    np.testing.assert_array_equal(_matrix(panel, xray), by_key)  # the key and the button: the same move

    slicer_app.exit(panel)  # another module: the keys are not the panel's
    _press(window, SHORTCUTS["laoButton"])
    np.testing.assert_array_equal(_matrix(panel, xray), by_key)
    slicer_app.enter(panel)
    window.hide()
