"""Registering many X-rays end to end: synthetic XA DICOMs of a real CT at known poses.

The DICOM headers carry nominal C-arm angles; the true poses add an in-plane roll and an
isocentre offset the header cannot express, so the header start is a few millimetres off and the
registration has to recover the rest.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
import torch
from core_helpers import mtre_mm
from PIL import Image
from xvrcore.app.cli import main
from xvrcore.drr import DRRVolume
from xvrcore.geometry.camera import Detector, Intrinsics
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.geometry.rotations import axis_angle_to_matrix
from xvrcore.io.events import CancelToken, parse_line
from xvrcore.io.itk_transform import read_pose_transform
from xvrcore.io.pose_json import camera_pose, read_pose_json, write_pose_json
from xvrcore.registration import (
    PipelineSettings,
    RegistrationSettings,
    SearchSettings,
    Stage,
    collect_inputs,
    input_stem,
    register_inputs,
    write_landmarks,
)
from xvrcore.registration.inputs import name_inputs
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

DETECTOR = Detector(1000.0, 192, 192, 1.6, 1.6)
# name: primary, secondary (deg), roll about the beam (deg), isocentre offset across the beam (mm)
VIEWS = {"view_a": (15.0, -5.0, 2.0, (3.0, -2.0)), "view_b": (-25.0, 10.0, -1.5, (-2.0, 3.0))}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def torso(shared_data):
    path = shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz"
    ct = load_volume(path)
    return path, ct, DRRVolume.from_volume(to_attenuation(ct))


def _true_pose(ct, primary, secondary, roll, offset) -> torch.Tensor:
    nominal = pose_from_positioner(primary, secondary, 650.0, torch.as_tensor(ct.center))
    pose = nominal.clone()
    pose[:3, :3] = axis_angle_to_matrix(nominal[:3, 2] * np.deg2rad(roll)) @ nominal[:3, :3]
    pose[:3, 3] = nominal[:3, 3] + nominal[:3, :3] @ torch.tensor([*offset, 0.0], dtype=torch.float64)
    return pose


@pytest.fixture(scope="module")
def xrays(torso, tmp_path_factory):
    """Synthetic XA DICOMs, their true poses, and a DICOM without SID and pixel spacing."""
    _, ct, volume = torso
    folder = tmp_path_factory.mktemp("xrays")
    truth = {}
    for seed, (name, (primary, secondary, roll, offset)) in enumerate(VIEWS.items()):
        pose = _true_pose(ct, primary, secondary, roll, offset)
        image = synthesize_xray(volume, pose, DETECTOR, rng=np.random.default_rng(seed))
        write_xray_dicom(folder / f"{name}.dcm", image, DETECTOR, pose, ct.center)
        truth[name] = pose.numpy()
    ds = pydicom.dcmread(folder / "view_a.dcm")
    for keyword in ("DistanceSourceToDetector", "ImagerPixelSpacing"):
        delattr(ds, keyword)
    ds.save_as(folder / "broken.dcm")
    return folder, truth


def _bone_points(ct, step: int = 7) -> np.ndarray:
    return ct.ijk_to_ras(np.argwhere(ct.data > 250)[::step, ::-1].astype(np.float64))


def _options(torso, out, **kw) -> PipelineSettings:
    return PipelineSettings(volume=torso[0], output=out, **kw)


@pytest.fixture(scope="module")
def first_run(torso, xrays, tmp_path_factory):
    folder, _ = xrays
    out = tmp_path_factory.mktemp("results")
    events = []
    summary = register_inputs([folder], _options(torso, out), progress=events.append)
    return out, summary, events


def test_folder_input_registers_good_files_and_reports_the_bad_one(first_run):
    out, summary, events = first_run
    status = {o.input: o.status for o in summary.outcomes}
    assert status == {"broken.dcm": "failed", "view_a.dcm": "done", "view_b.dcm": "done"}
    failure = next(o for o in summary.outcomes if o.status == "failed")
    assert failure.bad_input and "broken.dcm" in failure.message and "--sdd" in failure.message
    assert summary.exit_code == 2
    for stem in ("view_a", "view_b"):
        for suffix in (".json", ".tfm", "_overlay.png", "_checkerboard.png"):
            assert (out / f"{stem}{suffix}").is_file()
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))  # no half-written temporaries
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_done"
    assert kinds.count("input_done") == 2 and kinds.count("input_failed") == 1 and "progress" in kinds
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert all(0 <= f <= 1 for f in fractions) and fractions == sorted(fractions)


def test_registration_recovers_the_true_pose_from_the_header_start(first_run, xrays, torso):
    out, _, _ = first_run
    _, truth = xrays
    points = _bone_points(torso[1])
    for stem, true in truth.items():
        result = read_pose_json(out / f"{stem}.json")
        start = np.asarray(result.extra["initialization"]["camera_to_world"])
        assert result.extra["initialization"]["method"] == "dicom"
        assert mtre_mm(points, true, start) > 2.0  # the header start is really off
        assert mtre_mm(points, true, result.camera_to_world) < 1.0
        sim = result.extra["similarity"]
        assert sim["final"] > sim["initial"]
        assert result.extra["quality"]["passed"] and result.extra["quality"]["p_submillimetre"] > 0.5


def test_result_json_contents_and_projection_of_a_known_point(first_run, xrays, torso):
    out, _, _ = first_run
    _, truth = xrays
    data = json.loads((out / "view_a.json").read_text())
    assert data["image_size"] == [192, 192] and data["handedness"] == "left"
    assert data["software"]["name"] == "xvrcore" and data["input"]["file"] == "view_a.dcm"
    assert set(data["timings_s"]) == {"read", "initialize", "register", "outputs", "total"}
    assert data["xray_geometry"]["sdd_mm"] == 1000.0 and data["xray_geometry"]["pixel_spacing_mm"] == [1.6, 1.6]
    assert data["outputs"] == {"transform": "view_a.tfm", "overlay": "view_a_overlay.png",
                               "checkerboard": "view_a_checkerboard.png"}
    # A bony CT point lands where the synthetic X-ray shows it (its projection under the true pose).
    point = _bone_points(torso[1], step=1).mean(0)
    p = np.asarray(data["projection"]) @ np.r_[point, 1.0]
    true_k = DETECTOR.intrinsics().matrix().numpy()
    w2c = np.linalg.inv(truth["view_a"])
    q = true_k @ (w2c[:3, :3] @ point + w2c[:3, 3])
    assert np.linalg.norm(p[:2] / p[2] - q[:2] / q[2]) < 0.5  # pixels


def test_transform_file_loads_back_to_the_same_pose(first_run):
    out, _, _ = first_run
    for stem in ("view_a", "view_b"):
        pose = read_pose_json(out / f"{stem}.json")
        assert np.allclose(read_pose_transform(out / f"{stem}.tfm"), pose.camera_to_world, atol=1e-9)


def test_pictures_have_the_xray_size(first_run):
    out, _, _ = first_run
    overlay = Image.open(out / "view_a_overlay.png")
    checker = Image.open(out / "view_a_checkerboard.png")
    assert overlay.size == checker.size == (192, 192) and overlay.mode == "RGB"


def test_rerun_skips_finished_inputs(first_run, torso, xrays):
    out, _, _ = first_run
    folder, _ = xrays
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = register_inputs([folder], _options(torso, out))
    status = {o.input: o.status for o in summary.outcomes}
    assert status == {"broken.dcm": "failed", "view_a.dcm": "skipped", "view_b.dcm": "skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cancel_after_one_input_then_resume_with_the_rest(torso, xrays, tmp_path, capsys):
    folder, _ = xrays
    files = [folder / "view_a.dcm", folder / "view_b.dcm"]
    token = CancelToken()

    def cancel_after_first(event):
        if event["event"] == "input_done":
            token.cancel()  # as if the job were killed right after the first result

    summary = register_inputs(files, _options(torso, tmp_path), progress=cancel_after_first, should_stop=token,
                              emit_events=True)
    assert summary.cancelled and summary.exit_code == 130
    assert [(o.input, o.status) for o in summary.outcomes] == [("view_a.dcm", "done"), ("view_b.dcm", "cancelled")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "view_a.json", "view_a.tfm", "view_a_checkerboard.png", "view_a_overlay.png"]
    events = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events if e and e["event"] != "progress"] == [
        "run_start", "input_start", "input_done", "cancelled", "run_done"]

    resumed = register_inputs(files, _options(torso, tmp_path))
    assert [(o.input, o.status) for o in resumed.outcomes] == [("view_a.dcm", "skipped"), ("view_b.dcm", "done")]
    assert resumed.exit_code == 0


def test_cancel_within_an_input_writes_nothing(torso, xrays, tmp_path):
    folder, _ = xrays
    token = CancelToken()
    summary = register_inputs([folder / "view_a.dcm"], _options(torso, tmp_path),
                              progress=lambda e: token.cancel() if e["event"] == "progress" else None,
                              should_stop=token)
    assert summary.cancelled and summary.outcomes[0].status == "cancelled"
    assert list(tmp_path.iterdir()) == []


def test_a_retry_is_reported_and_the_progress_never_goes_back(torso, xrays, tmp_path):
    folder, _ = xrays
    # Every result "looks wrong" (similarity < 1.01), so the one retry search always runs.
    settings = RegistrationSettings(stages=(Stage(40, 15, 2e-2, 4.0, 0.8),), search=None, retry_below=1.01,
                                    retry_searches=(SearchSettings(translation_mm=0.0, depth_mm=(0.0,), roll_deg=(0.0,)),))
    events = []
    register_inputs([folder / "view_a.dcm"], _options(torso, tmp_path, settings=settings), progress=events.append)
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["attempt"] for e in progress] == sorted(e["attempt"] for e in progress)
    assert {e["attempt"] for e in progress} == {1, 2}
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0
    assert read_pose_json(tmp_path / "view_a.json").extra["registration"]["attempts"] == 2


def test_start_from_a_pose_json(torso, xrays, tmp_path):
    folder, truth = xrays
    off = truth["view_b"].copy()
    off[:3, :3] = axis_angle_to_matrix(torch.tensor([0.0, 0.015, 0.01], dtype=torch.float64)).numpy() @ off[:3, :3]
    off[:3, 3] += [2.0, -3.0, 1.5]
    start = tmp_path / "start.json"
    write_pose_json(start, camera_pose(DETECTOR.intrinsics(), off))
    out = tmp_path / "out"
    summary = register_inputs([folder / "view_b.dcm"], _options(torso, out, init="pose", init_pose=start))
    assert summary.exit_code == 0
    result = read_pose_json(out / "view_b.json")
    assert result.extra["initialization"]["method"] == "pose"
    assert mtre_mm(_bone_points(torso[1]), truth["view_b"], result.camera_to_world) < 1.0


def test_pose_json_for_another_image_size_is_refused_clearly(torso, xrays, tmp_path):
    folder, truth = xrays
    start = tmp_path / "small.json"
    write_pose_json(start, camera_pose(Intrinsics(-600.0, 600.0, 49.5, 49.5, 100, 100), truth["view_a"]))
    summary = register_inputs([folder / "view_a.dcm"], _options(torso, tmp_path / "out", init="pose", init_pose=start))
    (outcome,) = summary.outcomes
    assert outcome.status == "failed" and outcome.bad_input
    assert "100×100" in outcome.message and "192×192" in outcome.message and "view_a.dcm" in outcome.message


def test_structures_register_and_are_outlined(shared_data, tmp_path):
    folder = shared_data / "open" / "ct" / "torso_totalseg"
    ct = load_volume(folder / "torso_ct_3mm_crop30.nii.gz")
    pose = pose_from_positioner(0.0, 0.0, 650.0, torch.as_tensor(ct.center))
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, DETECTOR, rng=np.random.default_rng(5))
    write_xray_dicom(tmp_path / "spine.dcm", image, DETECTOR, pose, ct.center)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"31": "vertebra A", "32": "vertebra B"}))
    quick = RegistrationSettings(stages=(Stage(48, 15, 2e-3, 0.5),))
    options = PipelineSettings(volume=folder / "torso_ct_3mm_crop30.nii.gz", output=tmp_path / "out",
                              labels=folder / "torso_ct_3mm_crop30_labels.nii.gz", structures=[31, 32],
                              label_names=names, settings=quick)
    summary = register_inputs([tmp_path / "spine.dcm"], options)
    assert summary.exit_code == 0
    data = json.loads((tmp_path / "out" / "spine.json").read_text())
    assert data["volume"]["structures"] == [31, 32] and data["volume"]["registered_on"] == "structures"
    overlay = np.asarray(Image.open(tmp_path / "out" / "spine_overlay.png"))
    for color in ((255, 64, 64), (64, 160, 255)):  # the first two outline colours
        assert (overlay == color).all(-1).sum() > 20


def test_inputs_with_the_same_name_get_names_of_their_own(xrays, tmp_path):
    folder, _ = xrays
    (tmp_path / "again").mkdir()
    shutil.copy(folder / "view_a.dcm", tmp_path / "again" / "view_a.dcm")  # the same image: the same UID
    files = collect_inputs([folder / "view_a.dcm", tmp_path / "again" / "view_a.dcm", folder / "view_b.dcm"])
    names = [item.name for item in name_inputs(files)]
    assert names[2] == "view_b" and names[0] != names[1]
    assert all(n.startswith("view_a-") and len(n) == len("view_a-") + 8 for n in names[:2])
    assert names == [item.name for item in name_inputs(files)]  # the same on every run
    assert input_stem("1.2.840.10008.5.1") == "1.2.840.10008.5.1" and input_stem("IM1.DCM") == "IM1"


# ---- the command line ---------------------------------------------------------------------------------


def test_cli_radiograph_without_geometry_fails_with_the_fix(shared_data, torso, tmp_path, capsys):
    xray = shared_data / "open" / "xray" / "radiographs" / "xa_sc_wg04_XA1.dcm"
    code = main(["register", str(xray), "--volume", str(torso[0]), "--output", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "xa_sc_wg04_XA1.dcm" in lines[0]
    assert "--sdd" in lines[0] and "--pixel-spacing" in lines[0] and "Traceback" not in err


def test_cli_bad_volume_and_missing_inputs(torso, xrays, tmp_path, capsys):
    folder, _ = xrays
    assert main(["register", str(folder / "view_a.dcm"), "--volume", str(tmp_path / "nope.nii.gz"),
                 "--output", str(tmp_path), "--quiet"]) == 2
    assert "nope.nii.gz" in capsys.readouterr().err
    assert main(["register", str(tmp_path / "missing.dcm"), "--volume", str(torso[0]), "--output", str(tmp_path)]) == 2
    assert "missing.dcm" in capsys.readouterr().err


def test_cli_cancel_file_stops_before_work_with_json_events(torso, xrays, tmp_path, capsys):
    folder, _ = xrays
    cancel = tmp_path / "CANCEL"
    cancel.touch()
    code = main(["register", str(folder / "view_a.dcm"), "--volume", str(torso[0]), "--output", str(tmp_path / "o"),
                 "--cancel-file", str(cancel), "--progress-json"])
    assert code == 130
    events = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events if e] == ["run_start", "cancelled", "run_done"]


def test_cli_landmarks_start_end_to_end(torso, xrays, tmp_path, capsys):
    folder, truth = xrays
    _, ct, _ = torso
    rng = np.random.default_rng(7)
    candidates = _bone_points(ct, step=1)
    w2c = np.linalg.inv(truth["view_a"])
    k = DETECTOR.intrinsics().matrix().numpy()
    img = (candidates @ w2c[:3, :3].T + w2c[:3, 3]) @ k.T
    uv = img[:, :2] / img[:, 2:]
    inside = np.flatnonzero(((uv > 10) & (uv < 182)).all(1))
    pick = rng.choice(inside, 8, replace=False)
    landmarks = tmp_path / "view_a_landmarks.json"
    write_landmarks(landmarks, uv[pick] + rng.normal(0, 0.5, (8, 2)), candidates[pick])
    out = tmp_path / "out"
    code = main(["register", str(folder / "view_a.dcm"), "--volume", str(torso[0]), "--landmarks", str(landmarks),
                 "--output", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = read_pose_json(out / "view_a.json")
    init = result.extra["initialization"]
    assert init["method"] == "landmarks" and init["points"] == 8 and init["rms_px"] < 1.5
    points = _bone_points(ct)
    assert mtre_mm(points, truth["view_a"], result.camera_to_world) < 1.0


def _constant_network(folder, ct, camera_to_world):
    """A model whose output ignores the image: it always predicts ``camera_to_world`` (known answer)."""
    from xvrcore.geometry.carm import carm_parameters
    from xvrcore.geometry.rotations import euler_to_matrix
    from xvrcore.learning.model_files import camera_metadata, save_model
    from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseSpec
    from xvrcore.volume import volume_fingerprint

    alpha, beta, gamma, x, y, z = carm_parameters(camera_to_world, "PA", torch.as_tensor(ct.center)).tolist()
    arch = ArchitectureSpec("resnet18", 8)
    model = arch.build(PoseSpec("quaternion_adjugate", "ZXY", "PA", (x, y, z), 1.0))
    model.start_at(euler_to_matrix(torch.deg2rad(torch.tensor([alpha, beta, gamma], dtype=torch.float64)), "ZXY"))
    with torch.no_grad():
        model.regressor.rot_regression.weight.zero_()
        model.regressor.xyz_regression.weight.zero_()
    meta = {"architecture": arch.to_dict(), "camera": camera_metadata(1020.0, 64, 4.0, True),
            "input": InputSpec().to_dict(), "training": {"kind": "patient-specific"},
            "volume": {"sha256": volume_fingerprint(ct), "center": [float(v) for v in ct.center]}}
    return save_model(folder, model, meta)


def test_start_from_a_trained_network(torso, xrays, tmp_path):
    _, ct, _ = torso
    folder, truth = xrays
    true = torch.as_tensor(truth["view_a"])
    guess = true.clone()
    guess[:3, 3] += guess[:3, :3] @ torch.tensor([12.0, -8.0, 25.0], dtype=torch.float64)  # network's error
    model = _constant_network(tmp_path / "model", ct, guess)
    summary = register_inputs([folder / "view_a.dcm"], _options(torso, tmp_path / "out", init="model", model=model))
    assert summary.count("done") == 1
    result = read_pose_json(tmp_path / "out" / "view_a.json")
    start = np.asarray(result.extra["initialization"]["camera_to_world"])
    assert result.extra["initialization"]["method"] == "model"
    assert np.allclose(start, guess.numpy(), atol=1e-3)  # the network's prediction is the start
    points = _bone_points(ct)
    assert mtre_mm(points, truth["view_a"], start) > 10
    assert mtre_mm(points, truth["view_a"], result.camera_to_world) < 1.0


def test_cli_time_budget_cuts_refinement_short_and_still_writes_a_result(torso, xrays, tmp_path):
    folder, _ = xrays
    args = ["register", str(folder / "view_a.dcm"), "--volume", str(torso[0]), "--quiet", "--no-retry"]
    assert main([*args, "--output", str(tmp_path / "full")]) == 0
    assert main([*args, "--output", str(tmp_path / "cut"), "--time-budget", "0.01"]) == 0
    full = json.loads((tmp_path / "full" / "view_a.json").read_text())["registration"]
    cut = json.loads((tmp_path / "cut" / "view_a.json").read_text())["registration"]
    # the budget bounds the search too (polled before each chunk of DRRs): the 10 ms are gone within it, so at
    # most a few iterations follow (the exact count per stage: test_degenerate_and_cancel, with a fake clock)
    assert sum(s["iterations"] for s in cut["stages"]) < 5
    assert sum(s["iterations"] for s in full["stages"]) > 10


def test_cli_refuses_a_non_positive_time_budget(torso, xrays, tmp_path, capsys):
    folder, _ = xrays
    with pytest.raises(SystemExit):
        main(["register", str(folder / "view_a.dcm"), "--volume", str(torso[0]), "--output", str(tmp_path),
              "--time-budget", "0"])
    assert "--time-budget: must be a number > 0 seconds" in capsys.readouterr().err
