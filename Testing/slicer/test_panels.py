"""The panels as a user meets them: the real widget classes (XVRRegistrationWidget, XVRTrainingWidget) built
on their real ``.ui`` files, bound to their parameter nodes, over real MRML scenes.

The Slicer application's GUI layer is our emulation (``slicer_gui``, ``parameter_wrapper_emulation``): node
selectors emit ``currentNodeChanged`` on programmatic changes and filter by class and attributes, the
parameter-node wrapper updates the widgets without blocking their signals, slots run in connection order.
Each test is a scenario a user can play in Slicer, with the outcome checked on the scene.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("PySide6")

from panel_helpers import fake_training, import_xrays, poll_until_finished
from XVRCoreLib import volumes


def pose(panel, xray):
    return panel.logic.poses.pose(xray)


# ---- defect 1: picking another X-ray ------------------------------------------------------------------------


def test_picking_xray_b_then_a_keeps_both_poses(registration_panel, synthetic_xrays):
    """Picking X-ray B then A in the selector shows each with its own pose; no pose is copied onto another."""
    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    a, b = xrays["view_a"], xrays["view_b"]
    before = {name: pose(panel, node).copy() for name, node in xrays.items()}
    assert not np.allclose(before["view_a"], before["view_b"], atol=1.0)
    p = panel._parameterNode
    assert p.xrayVolume is b and p.outputTransform is panel.logic.poses.poseNode(b)  # the last imported

    panel.ui.xrayVolumeSelector.userSelect(a)
    assert p.xrayVolume is a
    assert p.outputTransform is panel.logic.poses.poseNode(a)
    panel.ui.xrayVolumeSelector.userSelect(b)
    panel.ui.xrayVolumeSelector.userSelect(a)

    assert p.xrayVolume is a and p.outputTransform is panel.logic.poses.poseNode(a)
    assert panel.ui.outputTransformSelector.currentNode() is panel.logic.poses.poseNode(a)
    assert panel.logic.poses.poseNode(a) is not panel.logic.poses.poseNode(b)
    for name, node in xrays.items():
        np.testing.assert_allclose(pose(panel, node), before[name], atol=1e-9, err_msg=name)


# ---- defect 2: the pose selector ------------------------------------------------------------------------------


def test_pose_selector_offers_only_xray_poses_and_refuses_another_xrays(registration_panel, synthetic_xrays, scene):
    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    a, b = xrays["view_a"], xrays["view_b"]
    parent = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "CT parent")
    panel._parameterNode.inputVolume.SetAndObserveTransformNodeID(parent.GetID())
    scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "some transform")
    panel.ui.xrayVolumeSelector.userSelect(a)
    poseA, poseB = panel.logic.poses.poseNode(a), panel.logic.poses.poseNode(b)
    offered = panel.ui.outputTransformSelector.nodes()
    assert set(offered) == {poseA, poseB}  # neither the CT's parent transform nor another transform
    before = {n: pose(panel, x).copy() for n, x in xrays.items()}

    panel.ui.outputTransformSelector.userSelect(poseB)  # B's pose for A: refused, A keeps its own
    p = panel._parameterNode
    assert p.outputTransform is poseA and panel.logic.poses.poseNode(a) is poseA
    assert any("is the pose of view_b" in line for line in panel.ui.logTextEdit.toPlainText().splitlines())
    for name, node in xrays.items():
        np.testing.assert_allclose(pose(panel, node), before[name], atol=1e-9)
    np.testing.assert_allclose(slicer.util.arrayFromTransformMatrix(parent), np.eye(4))
    with pytest.raises(ValueError, match="not an X-ray pose"):
        panel.logic.poses.usePoseNode(a, parent)

    new = panel.ui.outputTransformSelector.userCreateNew()  # "Create new": becomes A's pose, at A's pose
    assert new.GetAttribute("XVR.Role") == "pose"
    assert panel.logic.poses.poseNode(a) is new and p.outputTransform is new
    np.testing.assert_allclose(pose(panel, a), before["view_a"], atol=1e-9)
    np.testing.assert_allclose(pose(panel, b), before["view_b"], atol=1e-9)


# ---- defect 13: the CT/MRA selectors ------------------------------------------------------------------------


def test_ct_selectors_offer_only_source_volumes(registration_panel, synthetic_xrays, scene):
    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    a = xrays["view_a"]
    panel.ui.xrayVolumeSelector.userSelect(a)  # shown: DRR and outlines exist
    drr = a.GetNodeReference("XVRDrr")
    assert drr is not None
    offered = panel.ui.inputVolumeSelector.nodes()
    assert [n.GetName() for n in offered] == ["CT"]


def test_training_default_volume_is_no_xray_or_label_map(slicer_app, training_module, scene, torso_path, monkeypatch):
    xray = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "an X-ray")
    xray.SetAttribute("XVR.Role", "xray")
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    ct = volumes.load_volume_node(scene, torso_path, name="CT")
    panel = slicer_app.createPanel(training_module, "XVRTraining")
    slicer_app.enter(panel)
    assert panel._parameterNode.inputVolume is ct
    assert panel.ui.inputVolumeSelector.nodes() == [ct]


# ---- defect 14: flicker and checkerboard ----------------------------------------------------------------------


def test_flicker_stops_on_exit_and_comparisons_uncheck_when_the_view_changes(slicer_app, registration_panel,
                                                                           synthetic_xrays):
    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    panel.ui.flickerButton.setChecked(True)
    timer = panel.reviewSection._flickerTimer
    assert timer.isActive()
    slicer_app.exit(panel)
    assert not timer.isActive() and not panel.ui.flickerButton.checked
    slicer_app.enter(panel)

    panel.ui.checkerboardButton.setChecked(True)
    composite = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceCompositeNodeRed")
    assert composite.GetForegroundVolumeID() == xrays["view_b"].GetNodeReferenceID("XVRCheckerboard")
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_a"])  # another X-ray: its DRR is the foreground
    assert not panel.ui.checkerboardButton.checked
    assert composite.GetForegroundVolumeID() == xrays["view_a"].GetNodeReferenceID("XVRDrr")
    panel.ui.flickerButton.setChecked(True)
    panel.ui.xrayVolumeSelector.userSelect(xrays["view_b"])
    assert not panel.ui.flickerButton.checked and not timer.isActive()


# ---- defect 15: start from the trained model ----------------------------------------------------------------


def test_start_from_prefers_the_trained_model(slicer_app, registration_module, training_module, ct_node, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    training = training_module.XVRTrainingLogic().getParameterNode()
    training.trainedModel = model
    panel = slicer_app.createPanel(registration_module, "XVRRegistration")
    slicer_app.enter(panel)
    p = panel._parameterNode
    assert p.initialization == registration_module.XVRRegistrationInitialization.model
    assert str(p.modelPath) == str(model) and panel.ui.modelPathLineEdit.currentPath == str(model)


# ---- defect 12: path fields -----------------------------------------------------------------------------------


def test_path_fields_start_empty_and_remember_folders(slicer_app, training_module, scene, torso_path, tmp_path,
                                                      monkeypatch):
    from PySide6 import QtCore

    volumes.load_volume_node(scene, torso_path, name="CT")
    panel = slicer_app.createPanel(training_module, "XVRTraining")
    slicer_app.enter(panel)
    for field in (panel.ui.outputDirectoryPathLineEdit, panel.ui.pretrainedModelPathLineEdit,
                  panel.ui.trainedModelPathLineEdit):
        assert field.currentPath == "", field.objectName()  # not "."
    out = tmp_path / "runs"
    out.mkdir()
    panel.ui.outputDirectoryPathLineEdit.currentPath = str(out)  # as the user picks it
    assert str(panel._parameterNode.outputDirectory) == str(out)

    class StartedJob:
        command, running, cancelRequested = ["xvrcore", "train"], True, False

        def showChart(self):
            pass

        def cancel(self):
            self.running = False

    monkeypatch.setattr(panel.logic.launcher, "startTraining", lambda *a, **k: StartedJob())
    monkeypatch.setattr(panel.logic, "ensureDependencies", lambda **kwargs: None)
    panel.onApplyButton()
    assert QtCore.QSettings().value("XVRTraining/OutputDirectory") in ([str(out)], str(out))

    slicer_app.closeScene()  # a new scene, a new panel: the folder is remembered
    other = slicer_app.createPanel(training_module, "XVRTraining")
    slicer_app.enter(other)
    assert str(other._parameterNode.outputDirectory) == str(out)
    assert other.ui.outputDirectoryPathLineEdit.currentPath == str(out)
    panel._timer.stop()


# ---- defects 5 and 6: the outcome stays; closing the scene during a job --------------------------------------


def test_a_failed_training_stays_visible(slicer_app, training_panel, training_module, scene, torso_path, tmp_path):
    volumes.load_volume_node(scene, torso_path, name="CT")
    panel = training_panel
    panel._job = fake_training(tmp_path, "import sys; print('out of memory'); sys.exit(3)")
    panel._timer.start()
    poll_until_finished(panel)
    status = panel.ui.statusLabel.text
    assert "Training failed (exit code 3)" in status
    panel._parameterNode.minutes = 7.0  # any later change re-checks the inputs: the outcome stays
    assert "Training failed (exit code 3)" in panel.ui.statusLabel.text
    assert [kind for kind, text in slicer_app.dialogs if "Training failed" in text] == ["errorDisplay"]
    assert "out of memory" in panel.ui.logTextEdit.toPlainText()


def test_closing_the_scene_during_training_records_the_model(slicer_app, training_panel, training_module, tmp_path):
    import json

    from xvrcore.io.events import PREFIX

    panel = training_panel
    model = tmp_path / "run" / "model"
    finished = PREFIX + json.dumps({"event": "finished", "model": str(model)})
    panel._job = fake_training(tmp_path, f"import time; time.sleep(0.5); print({finished!r})")
    panel._timer.start()
    slicer_app.closeScene()
    poll_until_finished(panel)
    p = training_module.XVRTrainingLogic().getParameterNode()
    assert str(p.trainedModel) == str(model)
    assert "Training finished" in panel.ui.statusLabel.text


def test_closing_the_scene_during_registration_cancels_it(slicer_app, registration_panel, synthetic_xrays, tmp_path):
    import sys

    from XVRRegistrationLib.job import RegistrationJob

    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    done = {"event": "input_done", "stem": "view_a", "sop_instance_uid": None, "json": str(tmp_path / "a.json")}
    import json

    from xvrcore.io.events import PREFIX

    code = f"import time, pathlib; time.sleep(0.5); print({PREFIX + json.dumps(done)!r})"
    panel._job = RegistrationJob([[sys.executable, "-c", code]], tmp_path / "job",
                                 [{"view_a": (xrays["view_a"], None)}]).start()
    panel._timer.start()
    slicer_app.closeScene()
    assert panel._job.cancelRequested
    poll_until_finished(panel)  # the result for an X-ray no longer in the scene is not applied (no error)
    assert "no longer in the scene" in panel.ui.logTextEdit.toPlainText() or panel._job.done == []


# ---- defect 3: batch results keyed by SOP Instance UID and output name, not by file name -------------------


def test_two_xrays_with_one_file_name_get_their_own_results(registration_panel, synthetic_xrays, tmp_path):
    import shutil

    from xvrcore.registration.inputs import name_inputs, sop_instance_uid

    panel = registration_panel
    paths = []
    for series, name in (("series1", "view_a"), ("series2", "view_b")):
        folder = tmp_path / series
        folder.mkdir()
        paths.append(shutil.copy(synthetic_xrays[name][0], folder / "IM000001.dcm"))
    panel.xraySection._import([str(p) for p in paths])
    first, second = [n for n in panel.logic.xrays.xrayNodes(slicer.mrmlScene) if n.GetName() == "IM000001"]
    _, inputs = panel.logic.launcher._groups([first, second], tmp_path / "job")
    assert len(inputs) == 1 and len(inputs[0]) == 2  # one process, two distinct output names
    named = {item.sop_instance_uid: item.name for item in name_inputs([str(p) for p in paths])}
    uids = [sop_instance_uid(p) for p in paths]
    assert uids[0] != uids[1]

    from XVRRegistrationLib.job import RegistrationJob

    job = RegistrationJob([], tmp_path / "job", inputs)
    job.index = 0
    results, failed, log = [], [], []
    for uid, json_name in ((uids[1], "b.json"), (uids[0], "a.json")):  # as the core reports them
        job._apply({"event": "input_done", "input": "IM000001.dcm", "stem": named[uid], "sop_instance_uid": uid,
                    "json": json_name}, results, failed, log)
    assert results == [(second, "b.json"), (first, "a.json")]
    job._apply({"event": "input_done", "input": "IM000001.dcm", "stem": named[uids[0]], "sop_instance_uid": "1.2.3",
                "json": "c.json"}, results, failed, log)  # a result whose UID is not that X-ray's goes nowhere
    assert len(results) == 2 and log
    job._apply({"event": "input_failed", "input": "IM000001.dcm", "stem": named[uids[1]], "sop_instance_uid": uids[1],
                "error": "IM000001.dcm: no contrast"}, results, failed, log)  # a failure finds its X-ray the same way
    assert failed == [(second, "IM000001.dcm: no contrast")]


# ---- defects 9 and 10: before the dependencies are installed ---------------------------------------------------


def test_scene_load_and_in_slicer_tests_wait_for_the_dependencies(registration_panel, registration_module,
                                                                 training_module, monkeypatch):
    from XVRCoreLib import slicersupport

    monkeypatch.setattr(slicersupport, "dependencies_available", lambda: False)

    def missing(*args):
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(registration_panel.logic.xrays, "restorePlaneTextures", missing)
    registration_panel.onSceneEndImport(None, None)  # a scene loaded before the first use: nothing raised
    for module, name in ((registration_module, "XVRRegistrationTest"), (training_module, "XVRTrainingTest")):
        test = getattr(module, name)()
        monkeypatch.setattr(test, "setUp", missing)  # would need the application and torch
        test.runTest()  # skipped, not failed


# ---- defect 4: worker processes ------------------------------------------------------------------------------


def test_workers_start_without_a_console_and_stop_with_their_children(tmp_path):
    import sys

    psutil = pytest.importorskip("psutil")
    from XVRCoreLib.processes import CREATE_NO_WINDOW, SlicerJobRunner, popen_options

    windows = popen_options("nt")
    assert windows["creationflags"] & CREATE_NO_WINDOW  # as launchConsoleProcess: no console window per job
    assert popen_options("posix") == {"start_new_session": True}

    # A launcher that starts the real worker as its child, as PythonSlicer starts python-real on Windows.
    child = "import time; time.sleep(600)"
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
            "print('child', p.pid, flush=True); time.sleep(600)")
    runner = SlicerJobRunner([sys.executable, "-c", code], tmp_path)
    runner.start()
    lines = []
    while not lines:
        lines = [line for line in runner.poll().log if line.startswith("child")]
    child_pid = int(lines[0].split()[1])
    runner.terminate(grace_s=0)
    runner.process.wait(timeout=30)
    try:
        psutil.Process(child_pid).wait(timeout=30)  # raises TimeoutExpired if the worker's child survived
    except psutil.NoSuchProcess:
        pass


# ---- old scenes: pose nodes saved before XVR.Role = pose ------------------------------------------------------


def test_a_scene_saved_before_pose_roles_offers_its_poses_after_loading(registration_panel, synthetic_xrays, tmp_path):
    """Pose transforms of an older scene have no XVR.Role: loading the scene gives each X-ray's pose the role,
    so the pose selector lists them and the selection keeps each X-ray with its own pose."""
    from XVRCoreLib.scene import REFERENCE_ROLES, load_scene_mrb, save_scene_mrb

    panel = registration_panel
    xrays = import_xrays(panel, synthetic_xrays)
    saved_poses = {name: pose(panel, node).copy() for name, node in xrays.items()}
    for node in xrays.values():  # as an older version saved them
        panel.logic.poses.poseNode(node).RemoveAttribute("XVR.Role")
    other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "CT parent")
    bundle = save_scene_mrb(slicer.mrmlScene, tmp_path / "old.mrb")

    load_scene_mrb(slicer.mrmlScene, bundle)  # File > Load scene: the scene is replaced by the bundle's
    loaded = {node.GetName(): node for node in panel.logic.xrays.xrayNodes(slicer.mrmlScene)}
    assert set(loaded) == set(xrays)
    posesLoaded = {name: node.GetNodeReference(REFERENCE_ROLES["pose"]) for name, node in loaded.items()}
    assert all(p.GetAttribute("XVR.Role") == "pose" for p in posesLoaded.values())
    other = slicer.mrmlScene.GetFirstNodeByName("CT parent")
    assert other.GetAttribute("XVR.Role") is None  # a transform no X-ray refers to is left alone
    assert set(panel.ui.outputTransformSelector.nodes()) == set(posesLoaded.values())

    panel.ui.xrayVolumeSelector.userSelect(loaded["view_a"])
    panel.ui.xrayVolumeSelector.userSelect(loaded["view_b"])
    p = panel._parameterNode
    assert p.xrayVolume is loaded["view_b"] and p.outputTransform is posesLoaded["view_b"]
    assert panel.ui.outputTransformSelector.currentNode() is posesLoaded["view_b"]
    for name, node in loaded.items():
        np.testing.assert_allclose(pose(panel, node), saved_poses[name], atol=1e-6, err_msg=name)


# ---- defect 7: a saved scene is self-contained ----------------------------------------------------------------


def _mean_target_error(a, b, center) -> float:
    """Mean distance (mm) between where two camera poses put a 10 cm cube of points about ``center``."""
    grid = np.stack(np.meshgrid(*[np.linspace(-50.0, 50.0, 3)] * 3, indexing="ij"), -1).reshape(-1, 3) + center
    wa, wb = np.linalg.inv(a), np.linalg.inv(b)
    return float(np.linalg.norm(grid @ (wa[:3, :3] - wb[:3, :3]).T + (wa[:3, 3] - wb[:3, 3]), axis=1).mean())


def test_a_moved_scene_whose_dicom_folder_moved_shows_overlays_and_registers(slicer_app, registration_panel,
                                                                             synthetic_xrays, tmp_path):
    """Save the case as a .mrb, move it and the DICOM folder (another computer, a CD copied elsewhere),
    load it: the X-ray's pixels, geometry and exposure mask come from the scene; the DRR follows a nudge;
    the registration runs from a DICOM written from the node and improves the pose."""
    import shutil
    import time

    from xvrcore.xray import read_xray
    from XVRCoreLib.scene import load_scene_mrb, save_scene_mrb
    from XVRRegistrationLib.nodes import volumeCenter

    panel = registration_panel
    cd = tmp_path / "cd"
    cd.mkdir()
    path, truth = shutil.copy(synthetic_xrays["view_a"][0], cd / "IM000001.dcm"), synthetic_xrays["view_a"][1]
    original = read_xray(path)
    panel.xraySection._import([str(path)])
    (tmp_path / "here").mkdir()
    bundle = save_scene_mrb(slicer.mrmlScene, tmp_path / "here" / "case.mrb")
    (tmp_path / "elsewhere").mkdir()
    bundle = shutil.move(bundle, tmp_path / "elsewhere" / "case.mrb")
    shutil.move(cd, tmp_path / "archive")

    load_scene_mrb(slicer.mrmlScene, bundle)
    (xray,) = panel.logic.xrays.xrayNodes(slicer.mrmlScene)
    kept = panel.logic.xrays.xray(xray)
    np.testing.assert_array_equal(kept.mask, original.mask)
    assert not kept.mask.all()  # the synthetic X-ray's collimator blades are kept
    np.testing.assert_allclose(kept.pixels, original.pixels)
    assert kept.intrinsics == original.intrinsics

    p = panel._parameterNode
    assert p.xrayVolume is xray
    start = pose(panel, xray)
    panel.ui.rotateZPlusButton.click()  # a nudge: the DRR is rendered again at the new pose
    drr = slicer.util.arrayFromVolume(xray.GetNodeReference("XVRDrr"))[0]
    assert np.isfinite(drr).all() and drr.std() > 0
    assert slicer_app.dialogs == []
    panel.ui.rotateZMinusButton.click()
    np.testing.assert_allclose(pose(panel, xray), start, atol=1e-6)

    p.outputDirectory = tmp_path / "results"
    p.initialization = type(p.initialization).dicom  # the header's angles, kept in the scene
    panel.onApplyButton()
    assert slicer_app.dialogs == [], slicer_app.dialogs
    command = " ".join(panel._job.commands[0])  # a DICOM written from the node, in the job's temporary folder
    assert f"{slicer.app.temporaryPath}/XVR/registration-" in command and "/xrays/" in command
    deadline = time.monotonic() + 300
    while panel._job.running:
        panel.onPoll()
        assert time.monotonic() < deadline, "the registration did not end"
        time.sleep(0.1)
    assert panel._job.returncodes == [0], panel._job.failures
    assert xray.GetAttribute("XVR.Result")
    center = volumeCenter(p.inputVolume)
    final, before = _mean_target_error(pose(panel, xray), truth, center), _mean_target_error(start, truth, center)
    assert final < min(0.5 * before, 2.0), (final, before)


# ---- defect 8: the pose edited outside the panel ----------------------------------------------------------------


def _wait_for(timer, deadline_s=60.0):
    """Let Qt's event loop run until the single-shot ``timer`` has fired."""
    import time

    from PySide6 import QtCore

    deadline = time.monotonic() + deadline_s
    while timer.isActive():
        QtCore.QCoreApplication.processEvents()
        assert time.monotonic() < deadline, "the timer never fired"
        time.sleep(0.02)


def test_a_pose_edited_in_the_transforms_module_renders_the_drr_again_and_realigns_the_view(
        slicer_app, registration_panel, synthetic_xrays, monkeypatch):
    """Moving the pose transform directly (Transforms module, 3D handles) moves the X-ray at once and, once
    the pose settles, renders the DRR at the new pose (one render for a burst of changes) and turns the
    slice view to the new detector plane."""
    import vtk
    from xvrcore.drr import render
    from XVRCoreLib import vtkdata
    from XVRCoreLib.xray_plane import xray_intrinsics

    panel = registration_panel
    xray = import_xrays(panel, synthetic_xrays, names=("view_a",))["view_a"]
    drrNode = xray.GetNodeReference("XVRDrr")
    before = slicer.util.arrayFromVolume(drrNode)[0].copy()
    renders = []
    original = panel.logic.overlays.updateOverlays
    monkeypatch.setattr(panel.logic.overlays, "updateOverlays", lambda *a, **k: renders.append(1) or original(*a, **k))

    poseNode = panel.logic.poses.poseNode(xray)
    start = pose(panel, xray)
    moved = start.copy()
    for step in range(1, 6):  # a drag: five small tilts (about the image rows), then a shift
        turn = vtk.vtkTransform()
        turn.RotateWXYZ(2.0 * step, *start[:3, 0])
        moved[:3, :3] = vtkdata.array_from_vtk_matrix(turn.GetMatrix())[:3, :3] @ start[:3, :3]
        poseNode.SetMatrixTransformToParent(vtkdata.vtk_matrix(moved))
    moved[:3, 3] += 8.0 * start[:3, 0]
    poseNode.SetMatrixTransformToParent(vtkdata.vtk_matrix(moved))
    np.testing.assert_allclose(pose(panel, xray), moved, atol=1e-9)
    assert renders == []  # nothing rendered while the pose is moving
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(drrNode)[0], before)

    _wait_for(panel.xraySection._poseTimer)
    assert len(renders) == 1
    drr = slicer.util.arrayFromVolume(drrNode)[0]
    volume = panel.logic.overlays.drrVolume(panel._parameterNode.inputVolume)
    import torch

    with torch.no_grad():
        expected = render(volume, torch.as_tensor(moved, dtype=volume.dtype), xray_intrinsics(drrNode))[0, 0].numpy()
    np.testing.assert_allclose(drr, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(drr - before).max() > 0.1 * before.max()
    # The Red view lies on the new detector plane: its normal is the new beam direction.
    sliceToRAS = vtkdata.array_from_vtk_matrix(slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetSliceToRAS())
    assert abs(float(sliceToRAS[:3, 2] @ moved[:3, 2])) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(sliceToRAS[:3, 2] @ start[:3, 2])) < 0.99  # 10° away from where it was
    assert slicer_app.dialogs == []


# ---- defect 11: the first use installs the dependencies, with progress in the panel ---------------------------


def test_the_first_import_asks_once_and_shows_the_torch_download_in_the_panel(slicer_app, registration_module, ct_node,
                                                                              synthetic_xrays, tmp_path, monkeypatch):
    from slicertest_utils import InstallerStandIns

    panel = slicer_app.createPanel(registration_module, "XVRRegistration")
    slicer_app.enter(panel)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("xvr-no-such-package>=1\nnumpy>=1.24\n")
    monkeypatch.setattr(panel.logic, "resourcePath", lambda relative: str(requirements))
    seen = {}

    def look():
        seen["status"] = panel.ui.statusLabel.text
        seen["log"] = panel.ui.logTextEdit.toPlainText()

    stand_ins = InstallerStandIns(monkeypatch, packaging=True, while_downloading=look)
    panel.xraySection._import([str(synthetic_xrays["view_a"][0])])

    questions = [text for kind, text in slicer_app.dialogs if kind == "confirmOkCancelDisplay"]
    assert len(questions) == 1 and "PyTorch" in questions[0] and "xvr-no-such-package>=1" in questions[0]
    assert "Installing PyTorch" in seen["status"]  # the panel says what is going on during the download ...
    assert "Downloading torch-2.5.1" in seen["log"]  # ... and shows the installer's progress lines
    assert stand_ins.names() == ["installTorch", "pip_ensure"]
    assert [n.GetName() for n in panel.logic.xrays.xrayNodes(slicer.mrmlScene)] == ["view_a"]  # then imported

    monkeypatch.setattr(panel.logic, "resourcePath", lambda relative: str(tmp_path / "none.txt"))
    (tmp_path / "none.txt").write_text("numpy>=1.24\n")
    panel.xraySection._import([str(synthetic_xrays["view_b"][0])])  # installed now: nothing asked again
    assert len([kind for kind, _ in slicer_app.dialogs if kind == "confirmOkCancelDisplay"]) == 1
    assert stand_ins.names() == ["installTorch", "pip_ensure"]


# ---- training in clinical terms: the time budget in view ----------------------------------------------------


def test_the_training_time_budget_is_in_view_not_under_advanced(training_panel):
    """The panel opens with Advanced collapsed: the time budget sits with the inputs, bound to ``minutes``."""
    panel = training_panel

    def sections(widget):
        parent, found = widget.parentWidget(), []
        while parent is not None:
            if type(parent).__name__ == "ctkCollapsibleButton":
                found.append(parent.objectName)  # a Qt property: an attribute in PythonQt
            parent = parent.parentWidget()
        return found

    assert panel.ui.advancedCollapsibleButton.collapsed
    assert sections(panel.ui.minutesSpinBox) == ["inputsCollapsibleButton"]
    panel.ui.minutesSpinBox.value = 12.0
    assert panel._parameterNode.minutes == 12.0
