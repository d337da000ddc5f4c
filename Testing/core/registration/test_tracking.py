"""Tracking a run of synthetic 64² X-ray frames of the 3 mm torso CT: smooth patient motion, one jump, one lost frame.

The patient drifts 2 mm per frame (head-wards, breathing-like) and turns slightly under a fixed
C-arm; frame 5 jumps 25 mm, beyond the short schedule's reach from its neighbour; frame 3 is noise.

**Tolerance.** At 64² a single view does not fix the depth: registering a frame from its *true* pose
moves it 1.4-4 mm along the beam (the similarity's own optimum at this size and noise), so a
frame's 3D error (mTRE) is bounded by 5 mm here, and what the view does fix, the error across the
beam, by 1 mm: the mean projection distance of the CT's bone points, at the isocentre's scale.
Figures at these settings (smooth frames): mPD 0.12-0.47 mm, mTRE 0.27-2.15 mm.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import torch
from core_helpers import line_integrals, mtre_mm, torso_drr_target
from xvrcore.app.cli import main
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.pose import camera_pose
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.io.pose_json import load_pose_dict
from xvrcore.registration.linescan import rigid_about
from xvrcore.registration.settings import RegistrationSettings, SearchSettings, Stage
from xvrcore.registration.tracking import (
    SequenceFrame,
    TrackSettings,
    track_frames,
    track_summary,
    write_track,
)
from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = torch.float64
DETECTOR = Detector(1000.0, 64, 64, 4.8, 4.8)
SYNTHESIS = SynthesisSettings(subpixel=1, collimation=0.0)  # one shutter for the whole run
SOD = 650.0
FULL = RegistrationSettings(stages=(Stage(32, 60, 2e-2, 4.0, 0.8), Stage(64, 60, 5e-3, 1.0, 0.5)),
                            search=SearchSettings(translation_mm=30.0, step_mm=10.0, depth_mm=(0.0,), roll_deg=(0.0,)),
                            retry_searches=())
SHORT = RegistrationSettings(stages=(Stage(64, 30, 3e-3, 0.8, 0.5, patience=5, max_reductions=2),), search=None,
                             retry_searches=())
JUMP, NOISE = 5, 3


@pytest.fixture(scope="module")
def torso(shared_data):
    return torso_drr_target(shared_data)


def _true_pose(k: int, header: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    shift = torch.tensor([4.0 + 0.5 * k, 2.0, 3.0 + 2.0 * k + (25.0 if k >= JUMP else 0.0)], dtype=D)
    return rigid_about(torch.tensor([0.0, 0.0, 0.003 * k], dtype=D), shift, center) @ header


@pytest.fixture(scope="module")
def run(torso):
    """Eight frames (stored detector images), their C-arm pose and their true poses."""
    _, volume, center, _ = torso
    header = pose_from_positioner(20.0, 0.0, SOD, center)
    images, truth = [], []
    for k in range(8):
        truth.append(_true_pose(k, header, center))
        images.append(synthesize_xray(volume, truth[-1], DETECTOR, SYNTHESIS, rng=np.random.default_rng(k)))
    return images, header, truth


@pytest.fixture(scope="module")
def tracked(torso, run):
    _, volume, _, _ = torso
    images, header, _ = run
    frames = [SequenceFrame(k, line_integrals(image.stored, SYNTHESIS.photons), DETECTOR.intrinsics(), header) for k, image in
              enumerate(images)]
    noise = torch.as_tensor(np.random.default_rng(9).normal(size=(64, 64))).float()
    frames[NOISE] = replace(frames[NOISE], xray=noise)
    return track_frames(volume, frames, settings=TrackSettings(full=FULL, short=SHORT))


def _mpd(points: np.ndarray, a, b) -> float:
    """Mean projection distance of ``points`` between poses ``a`` and ``b``, in mm at the isocentre's scale."""
    k = DETECTOR.intrinsics()
    pixels = []
    for pose in (a, b):
        p = camera_pose(k, torch.as_tensor(np.asarray(pose))).projection.numpy() @ np.c_[points, np.ones(len(points))].T
        pixels.append(p[:2] / p[2])
    return float(np.linalg.norm(pixels[0] - pixels[1], axis=0).mean() * DETECTOR.col_spacing * SOD / DETECTOR.sdd)


def test_smooth_frames_are_tracked_within_the_tolerance(torso, run, tracked):
    points = torso[3]
    _, _, truth = run
    assert [r.index for r in tracked] == list(range(8))
    for result in tracked:
        if result.index in (NOISE, JUMP):
            continue
        assert result.status == ("key" if result.index == 0 else "tracked") and result.flag is None
        assert result.quality["passed"]
        assert _mpd(points, truth[result.index], result.camera_to_world) < 1.0
        assert mtre_mm(points, truth[result.index], result.camera_to_world) < 5.0


def test_a_jump_is_flagged_and_re_registered(torso, run, tracked):
    points = torso[3]
    _, _, truth = run
    jumped = tracked[JUMP]
    assert jumped.status == "re-registered" and jumped.flag is not None
    assert mtre_mm(points, truth[JUMP], jumped.warm_start) > 20.0  # the neighbour's pose was far off
    assert jumped.short_similarity < jumped.similarity - 0.1 and jumped.quality["passed"]
    assert _mpd(points, truth[JUMP], jumped.camera_to_world) < 1.0
    assert tracked[JUMP + 1].status == "tracked"  # and the run goes on from it


def test_a_lost_frame_is_flagged_and_never_warm_starts_the_next(torso, run, tracked):
    points = torso[3]
    _, _, truth = run
    lost = tracked[NOISE]
    assert lost.status == "lost" and lost.flag is not None and not lost.quality["passed"]
    after = tracked[NOISE + 1]
    assert torch.allclose(after.warm_start, tracked[NOISE - 1].camera_to_world)  # from the last frame not lost
    assert after.status == "tracked" and _mpd(points, truth[NOISE + 1], after.camera_to_world) < 1.0
    summary = track_summary(tracked)
    assert summary["flagged"] == [NOISE, JUMP] and summary["lost"] == 1 and summary["re-registered"] == 1
    assert summary["tracked"] == 5 and summary["key"] == 1


def test_the_track_file_has_one_pose_per_frame_in_the_shared_format(tracked, tmp_path):
    k = DETECTOR.intrinsics()
    path = write_track(tmp_path / "run_track.jsonl", tracked, [k] * len(tracked))
    lines = path.read_text().splitlines()
    assert len(lines) == len(tracked) and not list(tmp_path.glob(".*"))
    for line, result in zip(lines, tracked, strict=True):
        data = json.loads(line)
        assert data["frame"] == result.index and data["status"] == result.status and data["flag"] == result.flag
        pose = load_pose_dict(data, "track line").pose
        assert torch.allclose(pose.camera_to_world, result.camera_to_world, atol=1e-6)


def _write_run(folder, images, header, center, count: int):
    """A multi-frame XA DICOM of the first ``count`` frames (one header: the C-arm does not move)."""
    path = write_xray_dicom(folder / "run.dcm", images[0], DETECTOR, header, center)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = count
    ds.PixelData = b"".join(np.ascontiguousarray(image.stored).astype("<u2").tobytes() for image in images[:count])
    ds.save_as(path, enforce_file_format=True)
    return path


def test_register_track_writes_the_frames_poses_and_qualities(torso, run, tmp_path, capsys):
    ct_path, _, center, points = torso
    images, header, truth = run
    dicom = _write_run(tmp_path, images, header, center, 4)
    out = tmp_path / "out"
    code = main(["register", str(dicom), "--volume", str(ct_path), "--output", str(out), "--track", "--scales", "32",
                 "64", "--n-itrs", "40", "--no-retry", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "tracked 4 frames: 3 from the neighbour, 0 re-registered, 0 lost" in printed.out
    lines = [json.loads(line) for line in (out / "run_track.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3] and lines[0]["status"] == "key"
    assert lines[0]["input"]["file"] == "run.dcm"
    for line in lines:
        pose = load_pose_dict(line, "track line").pose
        assert _mpd(points, truth[line["frame"]], pose.camera_to_world) < 1.0
        assert line["quality"]["passed"]
