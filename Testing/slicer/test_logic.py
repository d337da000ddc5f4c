"""The panels' logic classes (XVRRegistrationLogic, XVRTrainingLogic) on real MRML scenes, with real
background processes (``xvrcore register`` / ``xvrcore train`` with ``--progress-json``).

The module scripts are imported as Slicer imports them; only the application-only base classes are
stubbed (see slicertest_utils.load_module_script). Nothing of the data model is mocked.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from xvrcore.geometry.camera import backproject
from xvrcore.io.events import EXIT_CANCELLED
from xvrcore.io.itk_transform import read_pose_transform
from xvrcore.io.pose_json import read_pose_json
from xvrcore.volume import load_volume
from XVRCoreLib import markups, volumes, vtkdata
from XVRCoreLib.scene import REFERENCE_ROLES, load_scene_mrb, save_scene_mrb

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _mtre(points, a, b) -> float:
    wa, wb = np.linalg.inv(a), np.linalg.inv(b)
    return float(np.linalg.norm(points @ (wa[:3, :3] - wb[:3, :3]).T + (wa[:3, 3] - wb[:3, 3]), axis=1).mean())


def _bone(ct) -> np.ndarray:
    return ct.ijk_to_ras(np.argwhere(ct.data > 250)[::11, ::-1].astype(np.float64))


@pytest.fixture
def ct_node(scene, torso_path):
    return volumes.load_volume_node(scene, torso_path, name="CT")


@pytest.fixture
def segmentation_node(scene, torso_crop, ct_node):
    _, labels = torso_crop
    full = load_volume(Path(ct_node.GetStorageNode().GetFileName()))
    from xvrcore.volume import volume_from_array

    data = np.zeros(full.data.shape, np.int16)
    crop = np.where(np.isin(labels.data, [5, 52, 31]), labels.data, 0)
    k0 = round(full.ras_to_ijk(labels.origin)[2])
    data[k0 : k0 + crop.shape[0]] = crop
    return volumes.segmentation_from_labelmap(scene, volume_from_array(data, full.affine, kind="labels"),
                                           {5: "liver", 52: "aorta", 31: "vertebra"}, name="Structures")


@pytest.fixture
def env_one_thread(monkeypatch):
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)


# ---- registration ------------------------------------------------------------------------------------------


def test_import_places_the_xray_at_the_header_pose_on_its_detector(registration_module, scene, ct_node, synthetic_xrays):
    logic = registration_module.XVRRegistrationLogic()
    path, truth = synthetic_xrays["view_a"]
    node = logic.xrays.importXray(path, scene, ct_node)
    assert logic.xrays.isXray(node) and logic.xrays.xrayNodes(scene) == [node]
    xray = logic.xrays.xray(node)
    pose = logic.poses.pose(node)
    # The header pose is the nominal one: close to the truth (the header cannot hold roll and offset).
    assert np.linalg.norm(pose[:3, 3] - truth[:3, 3]) < 15.0
    # The X-ray's first pixel is where the renderer's ray through it meets the detector.
    k = xray.intrinsics
    source, direction = backproject(torch.as_tensor(pose), k, torch.zeros(1, 2, dtype=torch.float64))
    d_cam_norm = float(np.hypot(np.hypot(k.cx / k.fx, k.cy / k.fy), 1.0))
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    np.testing.assert_allclose([m.GetElement(r, 3) for r in range(3)],
                               (source[0] + direction[0, 0] * xray.detector.sdd * d_cam_norm).numpy(), atol=1e-6)
    # Beam and textured detector plane live under the pose transform (camera coordinates).
    for role in ("frustum", "plane"):
        model = node.GetNodeReference(REFERENCE_ROLES[role])
        assert model.GetParentTransformNode() is logic.poses.poseNode(node)
    # One bad file does not stop the others.
    nodes, errors = logic.xrays.importXrays([synthetic_xrays["view_b"][0], path.parent / "missing.dcm"], scene, ct_node)
    assert len(nodes) == 1 and len(errors) == 1


def test_overlays_follow_the_pose_and_nudges(registration_module, scene, ct_node, segmentation_node, synthetic_xrays):
    logic = registration_module.XVRRegistrationLogic()
    path, truth = synthetic_xrays["view_a"]
    node = logic.xrays.importXray(path, scene, ct_node)
    logic.poses.setPose(node, truth)
    drr_node, outline_node = logic.overlays.updateOverlays(node, ct_node, segmentation_node, maxSize=48)
    drr = slicer.util.arrayFromVolume(drr_node)[0]
    image, mask, _, _ = logic.overlays.displayGrid(node, 48)
    assert drr.shape == image.shape == (40, 48)
    # At the true pose the DRR looks like the X-ray (both line-integral images, dense = high).
    assert np.corrcoef(drr[mask], image[mask])[0, 1] > 0.9
    # DRR and outlines sit on the X-ray's plane (same corners in world space).
    corners = [[-0.5, -0.5], [47.5, 39.5]]
    for other in (drr_node, outline_node):
        np.testing.assert_allclose(_corner_world(other, corners), _corner_world(node, corners, scale=2.0), atol=1e-6)
    assert (slicer.util.arrayFromVolume(outline_node) > 0).sum() > 20
    # A nudge turns the pose about the volume centre in camera axes and moves every image with it.
    before = logic.poses.pose(node)
    moved = logic.poses.nudge(node, (0.0, 0.0, 10.0), (5.0, 0.0, 0.0), ct_node)
    from XVRRegistrationLib.nodes import volumeCenter

    center = volumeCenter(ct_node)
    axis = before[:3, 2]
    rotation = moved[:3, :3] @ before[:3, :3].T
    assert np.degrees(np.arccos((np.trace(rotation) - 1) / 2)) == pytest.approx(10.0, abs=1e-6)
    np.testing.assert_allclose(rotation @ axis, axis, atol=1e-9)  # about the beam
    expected_source = rotation @ (before[:3, 3] - center) + center + 5.0 * before[:3, 0]
    np.testing.assert_allclose(moved[:3, 3], expected_source, atol=1e-6)
    np.testing.assert_allclose(_corner_world(drr_node, corners), _corner_world(node, corners, scale=2.0), atol=1e-6)
    # Checkerboard on the same plane; export writes Slicer's transform file and the result JSON.
    board = logic.overlays.checkerboardNode(node)
    assert slicer.util.arrayFromVolume(board).shape == (1, 40, 48)
    transform_path, json_path = logic.results.exportPose(node, Path(scene._xvr_keep[2].GetCacheManager().GetRemoteCacheDirectory()))
    np.testing.assert_allclose(read_pose_transform(transform_path), moved, atol=1e-9)
    exported = read_pose_json(json_path)
    np.testing.assert_allclose(exported.camera_to_world, moved, atol=1e-9)
    assert exported.extra["slicer_export"]["manually_adjusted"] is True


def _texture(plane_node) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    connection = plane_node.GetDisplayNode().GetTextureImageDataConnection()
    assert connection is not None, "the X-ray plane has no texture"
    image = connection.GetProducer().GetOutputDataObject(0)
    return vtk_to_numpy(image.GetPointData().GetScalars()).copy()


def test_xray_plane_texture_comes_back_after_an_mrb_reload(registration_module, scene, ct_node, synthetic_xrays, tmp_path):
    from slicertest_utils import new_scene

    logic = registration_module.XVRRegistrationLogic()
    node = logic.xrays.importXray(synthetic_xrays["view_a"][0], scene, ct_node)
    texture = _texture(node.GetNodeReference(REFERENCE_ROLES["plane"]))
    assert texture.std() > 10  # a picture, not a blank
    other = new_scene(tmp_path / "cache2")
    load_scene_mrb(other, save_scene_mrb(scene, tmp_path / "scene.mrb"))
    (reloaded,) = logic.xrays.xrayNodes(other)
    plane = reloaded.GetNodeReference(REFERENCE_ROLES["plane"])
    assert plane.GetDisplayNode().GetTextureImageDataConnection() is None  # scenes do not save textures
    assert logic.xrays.restorePlaneTextures(other) == 1
    np.testing.assert_array_equal(_texture(plane), texture)
    assert plane.GetParentTransformNode() is logic.poses.poseNode(reloaded)
    assert logic.xrays.restorePlaneTextures(other) == 0  # nothing left to restore


def _corner_world(node, pixels, scale=1.0):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    a = vtkdata.array_from_vtk_matrix(m)
    out = []
    for u, v in pixels:
        # the same physical corner on grids of different resolution: (u + 0.5) * scale - 0.5
        uu, vv = (u + 0.5) * scale - 0.5, (v + 0.5) * scale - 0.5
        out.append((a @ [uu, vv, 0.0, 1.0])[:3])
    return np.array(out)


def test_background_registration_of_several_xrays(registration_module, scene, ct_node, segmentation_node,
                                                  synthetic_xrays, tmp_path, env_one_thread, torso_path):
    logic = registration_module.XVRRegistrationLogic()
    nodes = [logic.xrays.importXray(path, scene, ct_node) for path, _ in synthetic_xrays.values()]
    truths = [truth for _, truth in synthetic_xrays.values()]
    starts = [logic.poses.pose(node) for node in nodes]
    job = logic.launcher.startRegistration(nodes, ct_node, segmentation_node, "dicom", tmp_path / "results", device="cpu")
    assert len(job.commands) == 1 and "--progress-json" in job.commands[0]
    seen_progress, applied = False, []
    deadline = time.monotonic() + 300
    while job.running and time.monotonic() < deadline:  # the panel's QTimer does exactly this
        update = job.poll()
        seen_progress |= any(e["event"] == "progress" for e in update["events"])
        for node, result in update["results"]:
            logic.results.applyResult(node, result, ct_node, segmentation_node)
            applied.append(node)
        time.sleep(0.1)
    assert not job.running and job.returncodes == [0], job.failures
    assert seen_progress and applied == nodes
    bone = _bone(load_volume(torso_path))
    for node, start, truth in zip(nodes, starts, truths):
        final = logic.poses.pose(node)
        assert _mtre(bone, final, truth) < min(_mtre(bone, start, truth), 3.5)  # 2.4 mm pixels, a 3 mm CT
        result = json.loads(Path(node.GetAttribute("XVR.Result")).read_text())
        assert {"quality", "similarity", "initialization"} <= set(result)
    rows = logic.results.qualityRows(scene)
    assert [row["name"] for row in rows] == ["view_a", "view_b"]
    assert all(0.0 <= row["p_submillimetre"] <= 1.0 and row["similarity"] > 0.5 for row in rows)
    # "Refine from here": start from the current pose of one X-ray.
    job = logic.launcher.startRegistration(nodes[:1], ct_node, None, "current", tmp_path / "results", device="cpu")
    assert "--init-pose" in job.commands[0]
    start_json = read_pose_json(Path(job.commands[0][job.commands[0].index("--init-pose") + 1]) / "view_a.json")
    np.testing.assert_allclose(start_json.camera_to_world, logic.poses.pose(nodes[0]), atol=1e-9)
    job.cancel()
    final = job.wait(timeout=120)
    assert final["finished"] and job.returncodes == [EXIT_CANCELLED] and "Cancelled" in final["status"]


def test_landmark_start_writes_pixels_and_ct_points(registration_module, scene, ct_node, synthetic_xrays, tmp_path,
                                                    env_one_thread):
    logic = registration_module.XVRRegistrationLogic()
    path, truth = synthetic_xrays["view_a"]
    node = logic.xrays.importXray(path, scene, ct_node)
    k = logic.xrays.xray(node).intrinsics
    from xvrcore.geometry.camera import project
    from XVRRegistrationLib.nodes import volumeCenter

    center = volumeCenter(ct_node)
    points = center + np.array([[30, 20, 10], [-40, 10, -20], [25, -35, 15], [-20, -25, -30], [5, 40, 35.0]])
    uv = project(torch.as_tensor(points), torch.linalg.inv(torch.as_tensor(truth)), k)[0][0].numpy()
    on_xray = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "X-ray landmarks")
    in_ct = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT landmarks")
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    a = vtkdata.array_from_vtk_matrix(m)
    for i, ((u, v), p) in enumerate(zip(uv, points)):
        on_xray.AddControlPoint(*(a @ [u, v, 0, 1])[:3].tolist(), f"P{i}")
        in_ct.AddControlPoint(*p.tolist(), f"P{i}")
    # Attached to the X-ray's pose, the points follow the image when the pose moves: same pixels after a nudge.
    logic.poses.attachToXray(on_xray, node)
    assert on_xray.GetParentTransformNode() is logic.poses.poseNode(node)
    logic.poses.nudge(node, (2.0, -3.0, 5.0), (4.0, -2.0, 6.0), ct_node)
    np.testing.assert_allclose(markups.landmarks_from_markups(on_xray, in_ct, logic.poses.pose(node), k)[0], uv, atol=1e-6)
    job = logic.launcher.startRegistration([node], ct_node, None, "landmarks", tmp_path / "out", xrayLandmarks=on_xray,
                                  volumeLandmarks=in_ct, device="cpu")
    written = json.loads((job.jobDirectory / "landmarks" / "view_a.json").read_text())  # the job's own folder
    job.cancel()  # the inputs are what is tested here
    job.wait(timeout=120)
    np.testing.assert_allclose(written["points_2d"], uv, atol=1e-6)
    np.testing.assert_allclose(written["points_3d"], points, atol=1e-9)


def test_registration_command_line(registration_module):
    from XVRRegistrationLib.launch import registrationCommand

    command = registrationCommand("py", ["a.dcm"], "ct.nrrd", "out", "labels.nrrd", "names.ctbl",
                                        landmarks="lm", model="ignored: landmarks win", frame="3", maskFrame=0,
                                        overrides={"pixel_spacing": 0.3, "sdd": 1000.0, "primary_angle": 10.0,
                                                   "secondary_angle": -5.0}, device="cpu", cancelFile="job/CANCEL")
    from xvrcore.app.cli import build_parser

    args = build_parser().parse_args(command[3:])  # what the real CLI makes of it
    assert args.command == "register" and args.xrays == ["a.dcm"] and args.landmarks == "lm"
    assert args.frame == 3 and args.mask_frame == 0 and args.pixel_spacing == [0.3, 0.3]
    assert (args.sdd, args.primary_angle, args.secondary_angle) == (1000.0, 10.0, -5.0)
    assert args.progress_json and args.overwrite and args.cancel_file == "job/CANCEL" and args.model is None
    with_model = build_parser().parse_args(registrationCommand("py", ["a.dcm"], "ct.nrrd", "out", model="m")[3:])
    assert with_model.model == "m" and with_model.landmarks is None and with_model.init_pose is None


def test_registration_status_says_when_a_wider_search_retries(registration_module, tmp_path):
    script = ("import time; from xvrcore.io.events import emit; "
              "emit('progress', input='a.dcm', fraction=0.2, attempt=1, stage=1, iteration=5, similarity=0.41); "
              "emit('progress', input='a.dcm', fraction=0.3, attempt=2, stage=0, iteration=1, similarity=0.35); "
              "time.sleep(3)")  # a retry's first event, then still running
    from XVRRegistrationLib.job import RegistrationJob

    job = RegistrationJob([[sys.executable, "-c", script]], tmp_path / "job", {}).start()
    statuses, deadline = [], time.monotonic() + 60
    while job.running and time.monotonic() < deadline and not any("retry" in (s or "") for s in statuses):
        statuses.append(job.poll()["status"])
        time.sleep(0.05)
    job.cancel()
    job.wait(timeout=30)
    assert "a.dcm: stage 1, iteration 1, similarity 0.350 (retry 1)" in statuses


def test_the_panels_start_methods_are_the_cores(registration_module):
    """The enum is defined at import time (before xvrcore can be imported); it must name the core's starts."""
    from xvrcore.app.commands import DEVICES
    from xvrcore.registration.pipeline import INIT_METHODS

    panel = {member.value for member in registration_module.XVRRegistrationInitialization}
    # "current" hands the X-ray's current pose to the core as a pose file: its "pose" start.
    # "carm" (six C-arm numbers, xvr's register fixed) is a command-line start; the panel has no widget for it.
    assert {"pose" if value == "current" else value for value in panel} == set(INIT_METHODS) - {"carm"}
    assert {member.value for member in registration_module.XVRRegistrationDevice} == set(DEVICES)


# ---- training ---------------------------------------------------------------------------------------------


def test_the_panels_profiles_and_presets_are_the_cores(training_module):
    from xvrcore.app.commands import CUSTOM_RANGES, DEVICES
    from xvrcore.geometry.carm import ORIENTATIONS
    from xvrcore.learning.sampling import PRESETS
    from xvrcore.learning.training import PROFILES
    from XVRTrainingLib.launch import PROFILES as LAUNCH_PROFILES

    panel = {member.value for member in training_module.XVRTrainingProfile} - {"automatic"}
    assert panel == set(LAUNCH_PROFILES) == set(PROFILES)
    assert {member.value for member in training_module.XVRTrainingPreset} - {"custom"} == set(PRESETS)
    assert {member.value for member in training_module.XVRTrainingDevice} == set(DEVICES)
    assert {member.value for member in training_module.XVRTrainingOrientation} == set(ORIENTATIONS)
    assert training_module.CUSTOM_RANGE_NAMES == tuple(name for name, _unit in CUSTOM_RANGES)


TINY = ["--image-size", "32", "--width", "8", "--validate-every", "2", "--checkpoint-every", "1000", "--warmup", "2",
        "--alpha", "-5", "5", "--beta", "-5", "5"]


def test_training_job_streams_progress_cancels_and_resumes(training_module, registration_module, scene, torso_crop,
                                                           tmp_path, env_one_thread):
    ct, labels = torso_crop
    ct_node = volumes.volume_node_from_volume(scene, ct, name="CT")
    segmentation = volumes.segmentation_from_labelmap(
        scene, labels.with_data(np.where(np.isin(labels.data, [31, 32]), labels.data, 0)), {31: "L1", 32: "L2"})
    logic = training_module.XVRTrainingLogic()
    out = tmp_path / "run"
    assert not logic.canResume(out)
    job = logic.launcher.startTraining(ct_node, segmentation, out, preset="pelvis", device="cpu", batchSize=2, iterations=100000,
                              threads=1, extra=TINY)
    assert job.command[1:4] == ["-m", "xvrcore", "train"] and "--labelmap" in job.command
    assert job.command[job.command.index("--profile") + 1] == "quick"  # no GPU asked for
    deadline, statuses = time.monotonic() + 180, []
    while time.monotonic() < deadline:
        update = job.poll()
        statuses.append(update["status"] or "")  # a poll's status is its last event's
        shown = [s for s in statuses if s.startswith("Iteration")]
        if job.validationTable.GetNumberOfRows() >= 2 and shown:  # the untrained baseline and iteration 2
            break
        assert not update["finished"], update["log"]
        time.sleep(0.05)
    assert shown and not any("NCC" in s or "nan" in s for s in shown)  # no NCC on the pose loss alone
    job.cancel()
    final = job.wait(timeout=120)
    assert job.returncode == EXIT_CANCELLED and "cancelled" in final["status"]
    assert final["model"] == str(out)
    progress = job.progressTable.GetTable()
    assert progress.GetNumberOfRows() >= 1 and progress.GetValue(0, 1).ToDouble() > 0  # loss
    assert logic.canResume(out)
    iteration = next(e for e in reversed(job.events) if e["event"] == "cancelled")["iteration"]

    resumed = logic.launcher.startTraining(ct_node, segmentation, out, preset="pelvis", device="cpu", batchSize=2,
                                  iterations=iteration + 2, threads=1, extra=TINY, resume=True)
    assert "--resume" in resumed.command
    result = resumed.wait(timeout=180)
    assert resumed.returncode == 0, result["log"]
    done = next(e for e in result["events"] if e["event"] == "finished")
    assert done["iteration"] == iteration + 2
    assert min(e["done"] for e in result["events"] if e["event"] == "progress") > iteration  # continued, not restarted
    assert result["model"] == str(out) and resumed.fraction == 1.0

    # The trained model is remembered for the registration panel (the training parameter node) and can start a
    # registration: its prediction for a DRR-like X-ray is a rigid pose in the CT's frame.
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "XVRTraining")
    parameters.SetAttribute("ModuleName", "XVRTraining")
    parameters.SetParameter("trainedModel", result["model"])
    registration = registration_module.XVRRegistrationLogic()
    model = registration.launcher.resolveModel(registration.launcher.trainedModel(scene))
    assert Path(model) == out
    from xvrcore.learning import load_model

    assert load_model(model).metadata["training"]["iteration"] == iteration + 2
    # The registration process starts from the model's estimate (`xvrcore register --model`): a synthetic X-ray of
    # the CT the model was trained on, registered in the background from the model's start.
    from slicertest_utils import true_pose
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

    detector = Detector(1020.0, 48, 48, 5.0, 5.0)
    pose = true_pose(ct.center, 0.0, 0.0, roll=0.0, offset=(0.0, 0.0), sod=750.0)
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector, rng=np.random.default_rng(1))
    dicom = write_xray_dicom(tmp_path / "crop_ap.dcm", image, detector, pose, ct.center)
    xray_node = registration.xrays.importXray(dicom, scene, ct_node)
    job = registration.launcher.startRegistration([xray_node], ct_node, None, "model", tmp_path / "model_results",
                                                  modelPath=registration.launcher.trainedModel(scene), device="cpu")
    assert job.commands[0][job.commands[0].index("--model") + 1] == str(out)
    final = job.wait(timeout=180)
    assert job.returncodes == [0], final["log"]
    (node, result), = final["results"]
    assert node is xray_node
    assert json.loads(Path(result).read_text())["initialization"]["method"] == "model"


def test_training_command_line_parses(training_module):
    from XVRTrainingLib.launch import trainingCommand

    ranges = {name: [-1.0 * i, 2.0 * i] for i, name in enumerate(training_module.CUSTOM_RANGE_NAMES, start=1)}
    command = trainingCommand("py", "ct.nii.gz", "out", preset="custom", customRanges=ranges, orientation="AP",
                                    labelmapPath="l.nii.gz", labels=[3, 4], initFrom="pre", minutes=2.5, device="cpu",
                                    batchSize=8, resume=True)
    from xvrcore.app.cli import _training_config, build_parser

    args = build_parser().parse_args(command[3:])
    config = _training_config(args)
    assert config.ranges["alpha"] == [-1.0, 2.0] and config.ranges["z"] == [-6.0, 12.0]
    assert config.orientation == "AP" and config.labels == [3, 4] and config.init_from == "pre"
    assert config.minutes == 2.5 and config.batch_size == 8 and config.resume and args.progress_json
    assert (config.image_size, config.width, config.pose_loss_fraction) == (128, 64, 0.0)  # the standard profile


def test_training_profiles_set_the_network_and_the_loss(training_module):
    from xvrcore.app.cli import _training_config, build_parser
    from XVRTrainingLib.launch import resolveProfile, trainingCommand

    def config(**kw):
        return _training_config(build_parser().parse_args(trainingCommand("py", "ct.nii.gz", "out", **kw)[3:]))

    quick = config(profile="quick")
    assert (quick.image_size, quick.width, quick.batch_size, quick.lr, quick.pose_loss_fraction) == (64, 32, 16, 3e-3, 1.0)
    assert config(profile="quick", batchSize=24).batch_size == 24  # the panel's batch size wins
    standard = config(profile="standard")
    assert (standard.image_size, standard.width, standard.batch_size, standard.lr, standard.pose_loss_fraction) == (
        128, 64, 32, 1e-3, 0.0)
    assert resolveProfile("automatic", "cpu") == "quick" and resolveProfile("automatic", "cuda") == "standard"
    assert resolveProfile("standard", "cpu") == "standard" and resolveProfile("quick", "cuda") == "quick"
    import torch

    expected = "standard" if torch.cuda.is_available() else "quick"
    assert resolveProfile("automatic", "auto") == expected
