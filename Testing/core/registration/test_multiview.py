"""Joint multi-view registration: synthetic 64² X-rays of the 3 mm torso CT at known poses.

The patient is moved by a known rigid correction (2° and 20 mm, mostly along the AP view's beam)
from where the views' headers put it; a single view recovers it across its beam but not along it
(depth), the pair together does. Figures at these settings (single → joint mTRE): AP 1.77 → 0.21 mm,
its depth error 1.72 → 0.12 mm; lateral 0.62 → 0.21 mm.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import torch
from core_helpers import line_integrals, mtre_mm, torso_drr_target
from xvrcore.app.cli import main
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.geometry.rotations import invert_rigid
from xvrcore.io.itk_transform import read_pose_transform
from xvrcore.io.pose_json import read_pose_json
from xvrcore.registration.linescan import pose_change, rigid_about
from xvrcore.registration.multiview import (
    JOINT_REFINEMENT,
    JointSettings,
    JointView,
    assess_views,
    consensus_correction,
    register_jointly,
)
from xvrcore.registration.settings import RegistrationSettings, Stage
from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = torch.float64
DETECTOR = Detector(1000.0, 64, 64, 4.8, 4.8)
SYNTHESIS = SynthesisSettings(subpixel=1)
# The views' own registrations and the joint one, short (64² images: every stage at native size).
SINGLE = RegistrationSettings(stages=(Stage(32, 40, 2e-2, 4.0, 0.8), Stage(64, 40, 5e-3, 1.0, 0.5)), search=None,
                              retry_searches=())
SETTINGS = JointSettings(single=SINGLE, joint=replace(JOINT_REFINEMENT, stages=(Stage(64, 40, 3e-3, 1.0, 0.5),)))
ANGLES = {"ap": (0.0, 0.0), "lateral": (90.0, 0.0)}


@pytest.fixture(scope="module")
def torso(shared_data):
    return torso_drr_target(shared_data)


def _true_correction(center: torch.Tensor) -> torch.Tensor:
    return rigid_about(torch.tensor([0.02, -0.01, 0.015], dtype=D), torch.tensor([3.0, 20.0, -4.0], dtype=D), center)


@pytest.fixture(scope="module")
def pair(torso):
    """The AP and lateral views (header starts) and their true poses."""
    _, volume, center, _ = torso
    views, truth = [], []
    for seed, (name, (primary, secondary)) in enumerate(ANGLES.items()):
        header = pose_from_positioner(primary, secondary, 650.0, center)
        true = _true_correction(center) @ header
        image = synthesize_xray(volume, true, DETECTOR, SYNTHESIS, rng=np.random.default_rng(seed))
        views.append(JointView(line_integrals(image.stored, SYNTHESIS.photons), DETECTOR.intrinsics(), header,
                               torch.as_tensor(image.mask), name=name))
        truth.append(true)
    return views, truth


@pytest.fixture(scope="module")
def joint_pair(torso, pair):
    return register_jointly(torso[1], pair[0], settings=SETTINGS)


def _depth_error(true: torch.Tensor, pose: torch.Tensor, center: torch.Tensor) -> float:
    """How far the CT's centre is off along the view's beam (camera z), mm."""
    point = torch.cat([center, torch.ones(1, dtype=D)])
    return float(abs((invert_rigid(pose) @ point)[2] - (invert_rigid(true) @ point)[2]))


def test_the_consensus_takes_each_view_across_its_beam_only():
    """Two orthogonal views, each right across its beam and 15 mm off along it: the consensus is the truth."""
    center = torch.tensor([10.0, -20.0, 30.0], dtype=D)
    truth = torch.tensor([3.0, -5.0, 8.0], dtype=D)
    beams = [torch.tensor([0.0, 1.0, 0.0], dtype=D), torch.tensor([1.0, 0.0, 0.0], dtype=D)]
    corrections = [rigid_about(torch.zeros(3, dtype=D), truth + 15.0 * b, center) for b in beams]
    consensus = consensus_correction(corrections, beams, [1.0, 1.0], center)
    shift = consensus[:3, 3]  # no rotation: the shift of the centre is the translation
    assert torch.allclose(shift, truth, atol=0.05)
    naive = sum(c[:3, 3] for c in corrections) / 2
    assert float((naive - truth).norm()) > 10.0  # the plain mean keeps half of each depth error


def test_a_view_that_contradicts_the_others_or_matches_poorly_is_down_weighted():
    center = torch.zeros(3, dtype=D)
    beams = [torch.tensor(b, dtype=D) for b in ([0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.7071, 0.7071, 0.0],
                                                [0.0, 0.0, 1.0])]
    shift = torch.tensor([2.0, -3.0, 1.0], dtype=D)
    wrong = torch.tensor([0.0, 0.0, 25.0], dtype=D)  # across the third view's beam: it sees this
    corrections = [rigid_about(torch.zeros(3, dtype=D), shift + (wrong if i == 2 else 0.0), center) for i in range(4)]
    weights, reasons = assess_views([0.8, 0.78, 0.82, 0.3], SETTINGS, corrections, beams, center)
    assert weights == [1.0, 1.0, SETTINGS.poor_weight, SETTINGS.poor_weight]
    assert "consensus" in reasons[2] and "similarity 0.300" in reasons[3]
    # Two views that clash: the one with the lower similarity goes.
    weights, reasons = assess_views([0.8, 0.7], SETTINGS, corrections[1:3], beams[1:3], center)
    assert weights == [1.0, SETTINGS.poor_weight] and "lower similarity" in reasons[1]
    # Without results to compare, only the similarity counts.
    assert assess_views([0.8, 0.7], SETTINGS)[0] == [1.0, 1.0]


def test_the_second_view_pins_the_first_views_depth(torso, pair, joint_pair):
    _, _, center, points = torso
    views, truth = pair
    result = joint_pair
    assert result.mode == "shared" and "header" in result.mode_reason and result.weights == [1.0, 1.0]
    single_depth = _depth_error(truth[0], result.singles[0].camera_to_world, center)
    joint_depth = _depth_error(truth[0], result.camera_to_world[0], center)
    assert mtre_mm(points, truth[0], views[0].start) > 15.0  # the start is far off
    assert single_depth > 3 * joint_depth and single_depth > 0.8  # measured 1.72 → 0.12 mm
    for true, single, joint in zip(truth, result.singles, result.camera_to_world, strict=True):
        assert mtre_mm(points, true, joint) < 0.6
        assert mtre_mm(points, true, joint) < mtre_mm(points, true, single.camera_to_world)
    # Both views' poses are the shared correction applied to their headers.
    for view, pose in zip(views, result.camera_to_world, strict=True):
        assert torch.allclose(pose, result.correction @ view.start, atol=1e-9)
    true_angle, true_shift = pose_change(_true_correction(center), center)
    assert math.isclose(result.translation_mm, true_shift, abs_tol=0.5)
    assert math.isclose(result.rotation_deg, true_angle, abs_tol=0.2)


def test_a_noise_view_is_down_weighted_and_the_others_stay_accurate(torso, pair, joint_pair):
    _, volume, center, points = torso
    views, truth = pair
    noise = JointView(torch.as_tensor(np.random.default_rng(5).normal(size=(64, 64))).float(), DETECTOR.intrinsics(),
                      pose_from_positioner(45.0, 0.0, 650.0, center), name="noise")
    result = register_jointly(volume, [*views, noise], settings=SETTINGS, singles=[*joint_pair.singles, None])
    assert result.weights == [1.0, 1.0, SETTINGS.poor_weight] and "failed" in result.reasons[2]
    for true, pose in zip(truth, result.camera_to_world[:2], strict=True):
        assert mtre_mm(points, true, pose) < 0.6
    scored = register_jointly(volume, [*views, noise], settings=SETTINGS, singles=joint_pair.singles[:2] + [
        replace(joint_pair.singles[0], similarity=0.07)])  # a noise view's single-view similarity
    assert scored.weights[2] == SETTINGS.poor_weight and "similarity 0.070" in scored.reasons[2]


def test_a_misread_c_arm_angle_chooses_independent_poses_and_both_views_stay_accurate(torso, pair, joint_pair):
    """The lateral header 4° and 2° off (a mobile C-arm's angles): one shared correction cannot fit both."""
    _, volume, center, points = torso
    views, truth = pair
    misread = replace(views[1], start=pose_from_positioner(94.0, 2.0, 650.0, center))
    result = register_jointly(volume, [views[0], misread], settings=SETTINGS)
    assert result.mode == "independent" and "disagree on the patient's rotation" in result.mode_reason
    ap_single = mtre_mm(points, truth[0], result.singles[0].camera_to_world)
    assert mtre_mm(points, truth[0], result.camera_to_world[0]) < ap_single / 2  # measured 1.77 → 0.45 mm
    assert mtre_mm(points, truth[1], result.camera_to_world[1]) < 1.0  # 0.49 mm
    shared = register_jointly(volume, [views[0], misread], settings=replace(SETTINGS, mode="shared"),
                              singles=result.singles)
    assert shared.mode_reason == "asked for"
    assert mtre_mm(points, truth[1], shared.camera_to_world[1]) > 3.0  # forced to share: 6.6 mm


@pytest.fixture(scope="module")
def dicom_pair(torso, tmp_path_factory):
    """The pair as XA DICOMs whose headers hold the nominal angles about the CT's centre."""
    _, volume, center, _ = torso
    folder = tmp_path_factory.mktemp("biplane")
    truth = {}
    for seed, (name, (primary, secondary)) in enumerate(ANGLES.items()):
        header = pose_from_positioner(primary, secondary, 650.0, center)
        true = _true_correction(center) @ header
        image = synthesize_xray(volume, true, DETECTOR, SYNTHESIS, rng=np.random.default_rng(seed))
        write_xray_dicom(folder / f"{name}.dcm", image, DETECTOR, header, center)
        truth[name] = true
    return folder, truth


def test_register_joint_writes_each_views_result_and_the_patient_transform(torso, dicom_pair, tmp_path, capsys):
    path, _, _, points = torso
    folder, truth = dicom_pair
    out = tmp_path / "out"
    code = main(["register", str(folder), "--volume", str(path), "--output", str(out), "--joint", "--scales", "32",
                 "64", "--n-itrs", "40", "--no-retry", "--quiet"])
    assert code == 0, capsys.readouterr().err
    patient = json.loads((out / "joint_patient.json").read_text())
    assert patient["mode"] == "shared" and [v["weight"] for v in patient["views"]] == [1.0, 1.0]
    correction = torch.tensor(patient["correction"], dtype=D)
    assert torch.allclose(torch.tensor(patient["patient_transform"], dtype=D), invert_rigid(correction), atol=1e-9)
    moved = read_pose_transform(out / "joint_patient.tfm")  # written as Slicer's TransformToParent
    assert torch.allclose(moved, invert_rigid(correction), atol=1e-6)
    for name, true in truth.items():
        result = read_pose_json(out / f"{name}.json")
        assert result.extra["joint"]["mode"] == "shared" and result.extra["input"]["file"] == f"{name}.dcm"
        assert mtre_mm(points, true, result.camera_to_world) < 1.0
        assert mtre_mm(points, true, result.extra["initialization"]["camera_to_world"]) > 15.0
    assert (out / "ap.tfm").is_file() and (out / "lateral_overlay.png").is_file()


def test_register_joint_refuses_a_single_view_and_track_with_a_frame(torso, dicom_pair, tmp_path, capsys):
    path, _, _, _ = torso
    folder, _ = dicom_pair
    code = main(["register", str(folder / "ap.dcm"), "--volume", str(path), "--output", str(tmp_path), "--joint"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ap.dcm" in err[0] and "at least two" in err[0]
    code = main(["register", str(folder / "ap.dcm"), "--volume", str(path), "--output", str(tmp_path), "--track",
                 "--frame", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ap.dcm" in err[0] and "--frame" in err[0]
    broken = pydicom.dcmread(folder / "lateral.dcm")
    del broken.DistanceSourceToDetector, broken.ImagerPixelSpacing
    broken.save_as(tmp_path / "broken.dcm")
    out = tmp_path / "out"
    code = main(["register", str(folder / "ap.dcm"), str(tmp_path / "broken.dcm"), "--volume", str(path), "--output",
                 str(out), "--joint"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "broken.dcm" in err[0] and "Traceback" not in err[0]
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]  # nothing written (but the lock)
