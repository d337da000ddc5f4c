"""A doubtful network start is checked against the header's start; the better one is kept and recorded."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from core_helpers import mtre_mm
from xvrcore.drr import DRRVolume
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.carm import carm_pose
from xvrcore.geometry.positioner import pose_from_xray
from xvrcore.geometry.rotations import axis_angle_to_matrix
from xvrcore.learning import inference
from xvrcore.registration.start import NETWORK_FALLBACK_NCC, find_start, start_similarity
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.xray import read_xray
from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(shared_data: Path, tmp_path_factory):
    """A realistic synthetic XA (noise, blur, gain, shutter) of the 3 mm torso with a header geometry."""
    ct = load_volume(shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz")
    volume = DRRVolume.from_volume(to_attenuation(ct))
    iso = torch.as_tensor(ct.center, dtype=torch.float64)
    truth = carm_pose(torch.tensor([15.0, -10.0, 0.0, 0.0, -700.0, 0.0], dtype=torch.float64), "PA", iso)
    det = Detector(1000.0, 96, 96, 3.0, 3.0, mirrored=True)
    xray = synthesize_xray(volume, truth, det, SynthesisSettings(subpixel=1), np.random.default_rng(3))
    path = write_xray_dicom(tmp_path_factory.mktemp("fallback") / "xa.dcm", xray, det, truth, iso)
    target = SimpleNamespace(drr=volume, center=iso, model=None, frame=None)
    settings = SimpleNamespace(init="model", isocenter=None, model="net", device="cpu", allow_other_volume=False)
    return read_xray(path), truth, target, settings, ct


def _predicting(monkeypatch, pose: torch.Tensor) -> None:
    """The network's prediction replaced by a fixed pose (the behaviour under test is what follows it)."""
    monkeypatch.setattr(inference, "predict_pose", lambda *a, **k: pose.clone())


def _far_off(truth: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """The truth rotated 35° about the centre and shifted 90 mm: a network start that missed."""
    rot = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.61], dtype=torch.float64))
    out = truth.clone()
    out[:3, :3] = rot @ truth[:3, :3]
    out[:3, 3] = rot @ (truth[:3, 3] - center) + center + torch.tensor([90.0, 0.0, 30.0], dtype=torch.float64)
    return out


def test_a_bad_network_start_falls_back_to_the_header_and_says_so(scene, monkeypatch):
    xray, truth, target, settings, _ = scene
    bad = _far_off(truth, target.center)
    _predicting(monkeypatch, bad)
    start = find_start(xray, settings, target, "xa")
    record = start.info["fallback"]
    assert start.info["method"] == "model" and record["chosen"] == "header"
    sims = record["similarities"]
    assert sims["model"] < NETWORK_FALLBACK_NCC < sims["header"]
    header = pose_from_xray(xray, target.center)
    assert torch.allclose(start.camera_to_world, header, atol=1e-6)
    assert start.info["header_start"]["method"] == "dicom"
    assert any("header's start" in w for w in start.warnings)
    points = target.center + torch.tensor([[dx, dy, dz] for dx in (-60, 60) for dy in (-40, 40) for dz in (-80, 80)],
                                          dtype=torch.float64)
    assert mtre_mm(points, start.camera_to_world, truth) < mtre_mm(points, bad, truth) / 5


def test_a_good_network_start_is_kept_without_trying_the_header(scene, monkeypatch):
    xray, truth, target, settings, _ = scene
    _predicting(monkeypatch, truth)
    start = find_start(xray, settings, target, "xa")
    record = start.info["fallback"]
    assert record["chosen"] == "model" and record["header"] == "not needed"
    assert set(record["similarities"]) == {"model"} and record["similarities"]["model"] >= NETWORK_FALLBACK_NCC
    assert torch.allclose(start.camera_to_world, truth)


def test_a_poor_network_start_is_kept_when_the_file_has_no_header_geometry(scene, monkeypatch):
    xray, truth, target, settings, _ = scene
    bad = _far_off(truth, target.center)
    _predicting(monkeypatch, bad)
    headless = SimpleNamespace(**{**vars(xray), "primary_angle": None})
    headless.intrinsics = xray.intrinsics
    start = find_start(headless, settings, target, "xa")
    assert start.info["fallback"]["chosen"] == "model"
    assert start.info["fallback"]["header"] == "no header geometry"
    assert torch.allclose(start.camera_to_world, bad)


def test_similarity_is_highest_at_the_true_pose(scene):
    xray, truth, target, _, _ = scene
    assert start_similarity(xray, target, truth) > start_similarity(xray, target, _far_off(truth, target.center))
