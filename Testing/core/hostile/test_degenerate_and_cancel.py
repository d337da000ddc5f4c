"""Degenerate registrations and work that ignores cancel and budgets (issue 15: classes 2 and 5).

Class 2: inputs a registration cannot use — a constant image, a start that looks away from the CT or
puts the source inside it, an angle of 1e308°, landmarks paired wrongly, an X-ray unrelated to the
CT — each fail that input (exit code 2, or 1 for a result at chance level) with one clear line, and
write nothing for it. Malformed pose and landmark files alike. Class 5: a label map that is really an
image is refused before its thousands of "structures" are built; cancel and the time budget stop the
grid search, the stages, the retries and the label processing. Those are measured in renders and
polls, never in seconds: a ``should_stop`` that flips after N renders, a fake clock that advances by
one "second" per render.

Every bad file is made here from ``good_xa`` and ``torso_ct`` (pydicom, SimpleITK, JSON text). One
registration of the good X-ray makes the finished result that every other case must leave untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO_ROOT, Outcome, assert_clear_error, digest, run_cli
from xvrcore.drr import DRRVolume, render
from xvrcore.io.events import parse_line
from xvrcore.io.pose_json import camera_pose, write_pose_json
from xvrcore.registration import (
    PipelineSettings,
    RegistrationSettings,
    SearchSettings,
    Stage,
    register,
    register_inputs,
    write_landmarks,
)
from xvrcore.registration import problem as problem_module
from xvrcore.registration.checks import UnregistrableInput
from xvrcore.registration.pnp import fit_limit_px
from xvrcore.volume import load_labelmap, load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.grid import Volume
from xvrcore.volume.labels import MAX_STRUCTURES, structure_bounding_box, structure_volumes
from xvrcore.xray import read_xray

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORSO = ("open", "ct", "torso_totalseg")
QUICK = RegistrationSettings(stages=(Stage(32, 15, 2e-2, 4.0, 0.8),), search=None, retry_searches=())


# ---- shared pieces -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(good_xa: Path, torso_ct: Path, tmp_path_factory) -> Path:
    """An output folder holding the good X-ray's finished result (what no bad input may touch)."""
    out = tmp_path_factory.mktemp("finished")
    summary = register_inputs([good_xa], PipelineSettings(volume=torso_ct, output=out, settings=QUICK))
    assert summary.exit_code == 0, summary.outcomes
    assert (out / "good_xa.json").is_file()
    return out


@pytest.fixture(scope="module")
def scene(good_xa: Path, torso_ct: Path):
    """The good X-ray as read (intrinsics, mask), its true pose, the CT and its attenuation DRR volume."""
    xray = read_xray(good_xa)
    ct = load_volume(torso_ct)
    from xvrcore.geometry.positioner import pose_from_xray

    pose = pose_from_xray(xray, torch.as_tensor(ct.center, dtype=torch.float64))
    return xray, pose, ct, DRRVolume.from_volume(to_attenuation(ct))


def register_cli(xray: Path, torso_ct: Path, out: Path, *extra, capsys) -> Outcome:
    """``xvrcore register`` in this process; an option refused by the parser (SystemExit) is an outcome too."""
    try:
        return run_cli("register", xray, "--volume", torso_ct, "--output", out, "--quiet", "--no-retry", *extra,
                       capsys=capsys)
    except SystemExit as exc:
        captured = capsys.readouterr()
        return Outcome(int(exc.code), captured.out, captured.err)


def assert_failed_cleanly(outcome, code: int, name: str, finished: Path, before: dict, *words: str) -> str:
    """Exit ``code``, one clear line naming ``name`` with ``words``, nothing new written, the result untouched."""
    line = assert_clear_error(outcome, code, name, *words)
    assert "failed 1 of 1" in outcome.out and "registered 0" in outcome.out  # the batch summary says so
    assert digest(finished) == before
    return line


def dicom_like(good: Path, path: Path, pixels: np.ndarray | None = None, **changes) -> Path:
    ds = pydicom.dcmread(good)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if pixels is not None:
        ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path)
    return path


def pose_file(path: Path, intrinsics, pose: torch.Tensor) -> Path:
    return write_pose_json(path, camera_pose(intrinsics, pose))


# ---- class 2: degenerate inputs -------------------------------------------------------------------------


def test_a_constant_image_fails_for_no_contrast(good_xa, torso_ct, finished, tmp_path, capsys):
    before = digest(finished)
    flat = np.full_like(pydicom.dcmread(good_xa).pixel_array, 30)
    bad = dicom_like(good_xa, tmp_path / "flat.dcm", flat)
    outcome = register_cli(bad, torso_ct, finished, capsys=capsys)
    assert_failed_cleanly(outcome, 2, "flat.dcm", finished, before, "no contrast")


def test_a_constant_image_with_a_burned_in_label_has_no_contrast_either(good_xa, torso_ct, finished, tmp_path,
                                                                         capsys):
    before = digest(finished)
    labelled = np.full_like(pydicom.dcmread(good_xa).pixel_array, 30)
    labelled[2:4, 2:6] = 48  # 8 of 4096 pixels: text in a corner
    bad = dicom_like(good_xa, tmp_path / "label.dcm", labelled)
    outcome = register_cli(bad, torso_ct, finished, capsys=capsys)
    assert_failed_cleanly(outcome, 2, "label.dcm", finished, before, "no contrast")


def test_a_pose_that_looks_away_from_the_ct_fails(good_xa, torso_ct, finished, scene, tmp_path, capsys):
    xray, pose, _, _ = scene
    away = pose.clone()
    away[:3, :3] = pose[:3, :3] @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # turned round
    start = pose_file(tmp_path / "away.json", xray.intrinsics, away)
    before = digest(finished)
    outcome = register_cli(good_xa, torso_ct, finished, "--init-pose", start, "--overwrite", capsys=capsys)
    # --overwrite: the finished result would be redone if the input were good; a refused one keeps it
    assert_failed_cleanly(outcome, 2, "good_xa.dcm", finished, before, "beam misses the volume", "start pose")


def test_a_pose_with_the_source_inside_the_ct_fails(good_xa, torso_ct, finished, scene, tmp_path, capsys):
    xray, pose, ct, _ = scene
    inside = pose.clone()
    inside[:3, 3] = torch.as_tensor(ct.center, dtype=torch.float64) + 20.0
    start = pose_file(tmp_path / "inside.json", xray.intrinsics, inside)
    copy = shutil.copy(good_xa, tmp_path / "inside_xa.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--init-pose", start, capsys=capsys)
    assert_failed_cleanly(outcome, 2, "inside_xa.dcm", finished, before, "source", "inside the volume")


def test_a_header_sod_that_puts_the_source_inside_the_ct_fails(good_xa, torso_ct, finished, tmp_path, capsys):
    bad = dicom_like(good_xa, tmp_path / "short_sod.dcm", DistanceSourceToPatient="40")
    before = digest(finished)
    outcome = register_cli(bad, torso_ct, finished, capsys=capsys)
    assert_failed_cleanly(outcome, 2, "short_sod.dcm", finished, before, "inside the volume")


@pytest.mark.parametrize("keyword", ["PositionerPrimaryAngle", "PositionerSecondaryAngle"])
def test_an_angle_of_1e308_degrees_in_the_header_fails(good_xa, torso_ct, finished, tmp_path, capsys, keyword):
    bad = dicom_like(good_xa, tmp_path / f"{keyword}.dcm", **{keyword: "1e308"})
    before = digest(finished)
    outcome = register_cli(bad, torso_ct, finished, capsys=capsys)
    assert_failed_cleanly(outcome, 2, f"{keyword}.dcm", finished, before, "1e+308°", "not a C-arm angle")


def test_an_angle_of_1e308_degrees_on_the_command_line_fails(good_xa, torso_ct, finished, tmp_path, capsys):
    copy = shutil.copy(good_xa, tmp_path / "override.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--primary-angle", "1e308", capsys=capsys)
    assert_clear_error(outcome, 2, "--primary-angle", "1e308")  # refused by the parser, or at the start
    assert digest(finished) == before


def test_c_arm_parameters_of_1e308_degrees_fail(good_xa, torso_ct, finished, tmp_path, capsys):
    copy = shutil.copy(good_xa, tmp_path / "carm.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--carm", "1e308", "0", "0", "0", "850", "0", capsys=capsys)
    assert_clear_error(outcome, 2, "--carm", "1e")  # refused by the parser, or at the start
    assert digest(finished) == before


@pytest.mark.parametrize(("offset", "named", "word"), [(1e6, "far_xa.dcm", "not a C-arm pose"),
                                                      (1e308, "far.json", "infinite")])
def test_a_pose_absurdly_far_away_fails(good_xa, torso_ct, finished, scene, tmp_path, capsys, offset, named, word):
    # 1 km: a finite pose no C-arm has; 1e308 mm: its projection matrix overflows, which the reader refuses
    xray, pose, _, _ = scene
    far = pose.clone()
    far[:3, 3] = offset
    start = pose_file(tmp_path / "far.json", xray.intrinsics, far)
    copy = shutil.copy(good_xa, tmp_path / "far_xa.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--init-pose", start, capsys=capsys)
    assert_failed_cleanly(outcome, 2, named, finished, before, word)


def _landmarks(scene, count: int = 8, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``count`` bony CT points and their exact pixels under the true pose, spread over the image."""
    xray, pose, ct, _ = scene
    rng = np.random.default_rng(seed)
    bone = ct.ijk_to_ras(np.argwhere(ct.data > 250)[::5, ::-1].astype(np.float64))
    w2c = np.linalg.inv(pose.numpy())
    cam = bone @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ xray.intrinsics.matrix().numpy().T
    uv = uv[:, :2] / uv[:, 2:]
    inside = np.flatnonzero(((uv > 6) & (uv < 58)).all(1))
    pick = rng.choice(inside, count, replace=False)
    return uv[pick], bone[pick]


def test_landmarks_paired_wrongly_fail_for_their_rms(good_xa, torso_ct, finished, scene, tmp_path, capsys):
    uv, points = _landmarks(scene)
    wrong = tmp_path / "wrong_pairs.json"
    write_landmarks(wrong, uv, np.roll(points, 1, axis=0))  # every image point with its neighbour's CT point
    copy = shutil.copy(good_xa, tmp_path / "pairs_xa.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--landmarks", wrong, capsys=capsys)
    line = assert_failed_cleanly(outcome, 2, "wrong_pairs.json", finished, before, "px RMS", "same landmark")
    assert f"{fit_limit_px(scene[0].intrinsics):.1f} px" in line  # 5 px on a 64-pixel X-ray


def test_landmarks_with_clicking_noise_are_accepted(good_xa, torso_ct, scene, tmp_path, capsys):
    uv, points = _landmarks(scene)
    noisy = tmp_path / "noisy.json"
    write_landmarks(noisy, uv + np.random.default_rng(0).normal(0, 1.0, uv.shape), points)
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--output", tmp_path / "out", "--quiet",
                      "--no-retry", "--landmarks", noisy, capsys=capsys)
    assert outcome.code == 0, outcome.err
    result = json.loads((tmp_path / "out" / "good_xa.json").read_text())
    assert result["initialization"]["rms_px"] < fit_limit_px(scene[0].intrinsics)


def test_an_xray_unrelated_to_the_ct_fails_at_chance_level(good_xa, torso_ct, finished, tmp_path):
    noise = np.random.default_rng(1).integers(0, 49, pydicom.dcmread(good_xa).pixel_array.shape)
    bad = dicom_like(good_xa, tmp_path / "noise.dcm", noise)
    before = digest(finished)
    summary = register_inputs([bad, good_xa], PipelineSettings(volume=torso_ct, output=finished, settings=QUICK,
                                                               overwrite=False))
    status = {o.input: o for o in summary.outcomes}
    assert status["good_xa.dcm"].status == "skipped"
    failed = status["noise.dcm"]
    assert failed.status == "failed" and not failed.bad_input and summary.exit_code == 1
    assert "noise.dcm" in failed.message and "chance level" in failed.message and failed.similarity < 0.2
    assert digest(finished) == before  # the unrelated X-ray wrote nothing


# ---- malformed pose and landmark files ------------------------------------------------------------------


def _pose_text(scene, tmp_path: Path) -> dict:
    xray, pose, _, _ = scene
    return json.loads(pose_file(tmp_path / "valid.json", xray.intrinsics, pose).read_text())


POSE_FAULTS = {  # the fault: (the file's text from a valid pose's dict, a word the error must say)
    "missing_keys": (lambda d: json.dumps({"image_size": d["image_size"]}), "needs"),
    "wrong_shape": (lambda d: json.dumps({**d, "world_to_camera": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                                          "projection": [[1.0, 2.0], [3.0, 4.0]]}), "3×4"),
    "nan": (lambda d: json.dumps({**d, "world_to_camera": [[float("nan")] * 4] * 4}), "NaN"),
    "strings": (lambda d: json.dumps({**d, "world_to_camera": [["a", "b", "c", "d"]] * 4,
                                      "projection": [["x"] * 4] * 3}), "numeric"),
    "empty": (lambda d: "", "not a readable"),
    "not_json": (lambda d: "world_to_camera = identity\n", "not a readable"),
}


@pytest.mark.parametrize("fault", sorted(POSE_FAULTS))
def test_a_malformed_pose_json_fails_naming_it(good_xa, torso_ct, finished, scene, tmp_path, capsys, fault):
    bad = tmp_path / f"pose_{fault}.json"
    text, word = POSE_FAULTS[fault]
    bad.write_text(text(_pose_text(scene, tmp_path)))
    copy = shutil.copy(good_xa, tmp_path / f"posed_{fault}.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--init-pose", bad, capsys=capsys)
    assert_failed_cleanly(outcome, 2, bad.name, finished, before, word)


LANDMARK_FAULTS = {  # the fault: (the file's text, a word the error must say)
    "missing_keys": (json.dumps({"points_2d": [[1.0, 2.0]] * 6}), "points_3d"),
    "wrong_shape": (json.dumps({"points_2d": [[1.0, 2.0, 3.0]] * 6, "points_3d": [[1.0, 2.0]] * 6}), "shape"),
    "nan": (json.dumps({"points_2d": [[float("nan"), 2.0]] * 6, "points_3d": [[1.0, 2.0, 3.0]] * 6}), "finite"),
    "strings": (json.dumps({"points_2d": [["u", "v"]] * 6, "points_3d": [["x", "y", "z"]] * 6}), "numbers"),
    "empty": ("", "not a readable"),
    "not_json": ("points_2d: [1, 2]\n", "not a readable"),
}


@pytest.mark.parametrize("fault", sorted(LANDMARK_FAULTS))
def test_a_malformed_landmark_file_fails_naming_it(good_xa, torso_ct, finished, tmp_path, capsys, fault):
    bad = tmp_path / f"marks_{fault}.json"
    text, word = LANDMARK_FAULTS[fault]
    bad.write_text(text)
    copy = shutil.copy(good_xa, tmp_path / f"marked_{fault}.dcm")
    before = digest(finished)
    outcome = register_cli(copy, torso_ct, finished, "--landmarks", bad, capsys=capsys)
    assert_failed_cleanly(outcome, 2, bad.name, finished, before, word)


# ---- class 5: label maps that are images ----------------------------------------------------------------


def _label_image(torso_ct: Path, path: Path, data: np.ndarray) -> Path:
    """A label map on the CT's grid holding ``data`` ``(K, J, I)``."""
    reference = sitk.ReadImage(str(torso_ct))
    image = sitk.GetImageFromArray(data)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return path


def test_a_ct_given_as_labels_is_refused_before_any_structure_is_built(good_xa, torso_ct, finished, capsys):
    before = digest(finished)
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--labels", torso_ct, "--output", finished,
                      "--overwrite", "--quiet", capsys=capsys)
    assert_clear_error(outcome, 2, torso_ct.name, "label map", "values down to")
    assert digest(finished) == before


def test_a_label_map_with_too_many_labels_is_refused(good_xa, torso_ct, finished, tmp_path, capsys):
    shape = load_volume(torso_ct).data.shape
    many = (np.arange(np.prod(shape)) * (MAX_STRUCTURES + 100) // np.prod(shape) + 1).astype(np.uint16)
    labels = _label_image(torso_ct, tmp_path / "many_labels.nii.gz", many.reshape(shape))
    before = digest(finished)
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--labels", labels, "--output", finished,
                      "--overwrite", "--quiet", capsys=capsys)
    assert_clear_error(outcome, 2, labels.name, f"{MAX_STRUCTURES + 100} distinct labels", f"{MAX_STRUCTURES}")
    assert digest(finished) == before


def test_a_label_map_with_fractional_values_is_refused(good_xa, torso_ct, finished, tmp_path, capsys):
    shape = load_volume(torso_ct).data.shape
    fractional = np.zeros(shape, np.float32)
    fractional[40:60, 40:60, 40:60] = 2.5
    labels = _label_image(torso_ct, tmp_path / "fractional.nii.gz", fractional)
    before = digest(finished)
    outcome = run_cli("register", good_xa, "--volume", torso_ct, "--labels", labels, "--output", finished,
                      "--overwrite", "--quiet", capsys=capsys)
    assert_clear_error(outcome, 2, labels.name, "whole numbers")
    assert digest(finished) == before


def test_the_structures_boxes_from_one_pass_are_each_structures_own(shared_data):
    labelmap = load_labelmap(shared_data.joinpath(*TORSO, "torso_ct_3mm_crop30_labels.nii.gz"))
    volumes = structure_volumes(labelmap, [5, 31, 52])
    for label, volume in volumes.items():
        lo, hi = structure_bounding_box(labelmap, label)
        lo, hi = np.maximum(np.array(lo) - 1, 0), np.minimum(np.array(hi) + 1, labelmap.shape_ijk)
        assert volume.shape_ijk == tuple(int(v) for v in hi - lo)
        assert np.allclose(volume.affine[:3, 3], labelmap.ijk_to_ras(lo.astype(float)))
        assert volume.data.sum() == (labelmap.data == label).sum()  # every voxel of the structure, once


def test_label_processing_stops_at_a_cancel(shared_data, monkeypatch):
    labelmap = load_labelmap(shared_data.joinpath(*TORSO, "torso_ct_3mm_crop30_labels.nii.gz"))
    crops, polls = [], []
    original = Volume.crop
    monkeypatch.setattr(Volume, "crop", lambda self, lo, hi: crops.append(lo) or original(self, lo, hi))

    def cancel_after_three() -> bool:
        polls.append(len(crops))
        return len(crops) >= 3

    built = structure_volumes(labelmap, [1, 2, 3, 5, 31, 32, 52], should_stop=cancel_after_three)
    assert len(built) == 3 and len(crops) == 3  # no structure begun after the cancel


def test_a_cancel_during_label_processing_cancels_the_run(shared_data, tmp_path, good_xa, monkeypatch):
    folder = shared_data.joinpath(*TORSO)
    crops = []
    original = Volume.crop
    monkeypatch.setattr(Volume, "crop", lambda self, lo, hi: crops.append(lo) or original(self, lo, hi))
    settings = PipelineSettings(volume=folder / "torso_ct_3mm_crop30.nii.gz", output=tmp_path / "out",
                                labels=folder / "torso_ct_3mm_crop30_labels.nii.gz", settings=QUICK)
    summary = register_inputs([good_xa], settings, should_stop=lambda: len(crops) >= 2)
    assert summary.cancelled and summary.exit_code == 130 and len(crops) == 2
    assert [o.status for o in summary.outcomes] == ["cancelled"]
    assert not list((tmp_path / "out").glob("good_xa*"))


# ---- class 5: cancel and budget, counted in renders -----------------------------------------------------


class Renders:
    """Counts the DRR renders of registration problems, and optionally advances a fake clock with each."""

    def __init__(self, monkeypatch, seconds_per_render: float = 0.0) -> None:
        self.calls: list[tuple[float, int]] = []  # (clock before the render, batch size)
        self.now = 0.0
        self.seconds = seconds_per_render
        original = problem_module.Problem.render
        counter = self

        def counted(problem, poses, k, stage):
            counter.calls.append((counter.now, 1 if poses.dim() == 2 else poses.shape[0]))
            counter.now += counter.seconds
            return original(problem, poses, k, stage)

        monkeypatch.setattr(problem_module.Problem, "render", counted)
        if seconds_per_render:
            monkeypatch.setattr(problem_module, "time", self)

    def perf_counter(self) -> float:  # the registration clock's time, for the fake clock
        return self.now

    def __len__(self) -> int:
        return len(self.calls)


@pytest.fixture(scope="module")
def problem(scene):
    """A 48-pixel X-ray of the CT, its intrinsics and a start 15 mm off."""
    xray, pose, _, volume = scene
    k = xray.intrinsics.resized(48, 48)
    image = render(volume, pose.float(), k)[0, 0]
    start = pose.clone()
    start[:3, 3] += pose[:3, :3] @ torch.tensor([10.0, -8.0, 6.0], dtype=torch.float64)
    return volume, image, k, start


def _register(problem, settings, **kw):
    volume, image, k, start = problem
    return register(volume, image, k, start, settings=settings, **kw)


SEARCH = SearchSettings(translation_mm=30.0, step_mm=10.0, depth_mm=(-20.0, 0.0, 20.0), roll_deg=(0.0,), batch=8)
STAGES = (Stage(24, 20, 2e-2, 4.0, 0.8), Stage(48, 20, 1e-2, 2.0, 0.5))
RECORD_RENDERS = 2  # after a stop: the result's and the start's similarity at the finest stage, for the record


def test_a_cancel_during_the_grid_search_ends_it_at_the_next_chunk(problem, monkeypatch):
    renders = Renders(monkeypatch)
    settings = RegistrationSettings(stages=STAGES, search=SEARCH, retry_searches=(SEARCH,), retry_below=1.01)
    flipped_at = 3  # the cancel comes after three chunks of the 7×7×3 + 1 candidates
    result = _register(problem, settings, should_stop=lambda: len(renders) >= flipped_at)
    assert len(renders) - flipped_at <= RECORD_RENDERS
    assert result.stages == [] and result.attempts == 1  # no stage, no retry after it
    assert [n for _, n in renders.calls[:flipped_at]] == [8, 8, 8]


def test_a_cancel_during_a_stage_ends_it_after_the_iteration(problem, monkeypatch):
    renders = Renders(monkeypatch)
    progress = []
    settings = RegistrationSettings(stages=STAGES, search=None, retry_searches=(SEARCH,), retry_below=1.01)
    result = _register(problem, settings, progress=progress.append, should_stop=lambda: len(progress) >= 5)
    assert len(progress) == 5 and len(renders) == 5 + RECORD_RENDERS
    assert len(result.stages) == 1 and result.attempts == 1


def test_a_cancel_during_a_retry_search_ends_the_retries(problem, monkeypatch):
    renders = Renders(monkeypatch)
    progress = []
    # attempt 1: a stage alone (single renders); the retries search (batched renders) and would run thrice
    settings = RegistrationSettings(stages=STAGES[:1], search=None, retry_searches=(SEARCH,) * 3, retry_below=1.01)

    def after_two_retry_chunks() -> bool:
        return sum(n > 1 for _, n in renders.calls) >= 2

    result = _register(problem, settings, progress=progress.append, should_stop=after_two_retry_chunks)
    flipped_at = [i for i, (_, n) in enumerate(renders.calls) if n > 1][1] + 1
    assert len(renders) - flipped_at <= RECORD_RENDERS
    assert result.attempts == 2 and {p["attempt"] for p in progress} == {1}  # the retry's stages never began


def test_the_budget_bounds_the_grid_search_and_no_retry_starts(problem, monkeypatch):
    renders = Renders(monkeypatch, seconds_per_render=1.0)  # every render "takes" one second of a fake clock
    settings = RegistrationSettings(stages=STAGES, search=SEARCH, retry_searches=(SEARCH,) * 3, retry_below=1.01,
                                    time_budget_s=4.5)
    result = _register(problem, settings)
    after = [n for started, n in renders.calls if started > settings.time_budget_s]
    assert len(after) <= RECORD_RENDERS and all(n == 1 for n in after)  # no search chunk after the budget
    assert len(renders) < 1 + 148 // SEARCH.batch  # the search of 148 candidates was cut
    assert result.stages == [] and result.attempts == 1


def test_the_budget_bounds_the_stages(problem, monkeypatch):
    renders = Renders(monkeypatch, seconds_per_render=1.0)
    settings = RegistrationSettings(stages=STAGES, search=None, retry_searches=(SEARCH,), retry_below=1.01,
                                    time_budget_s=12.5)
    result = _register(problem, settings)
    iterations = sum(s.iterations for s in result.stages)
    assert iterations == 13  # polled after each iteration: the 13th ends past 12.5 s
    assert len(renders) == iterations + RECORD_RENDERS and result.attempts == 1


def test_a_start_that_misses_the_volume_is_refused_before_any_render(problem, monkeypatch):
    renders = Renders(monkeypatch)
    volume, image, k, start = problem
    away = start.clone()
    away[:3, :3] = start[:3, :3] @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    with pytest.raises(UnregistrableInput, match="beam misses the volume"):
        register(volume, image, k, away, settings=QUICK)
    assert len(renders) == 0


# ---- class 5: SIGTERM to a running registration ----------------------------------------------------------


def test_sigterm_during_the_grid_search_ends_the_run_cleanly(good_xa, torso_ct, tmp_path):
    # A search of 163 803 candidates: hours of work, so the signal surely comes during it.
    huge = tmp_path / "huge_search.json"
    huge.write_text(json.dumps({"search": {"translation_mm": 200.0, "step_mm": 2.0, "batch": 16},
                                "retry_searches": []}))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "XVRCore"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "xvrcore", "register", str(good_xa), "--volume", str(torso_ct),
                                "--output", str(out), "--settings", str(huge), "--progress-json", "--quiet"],
                               env=env, text=True, encoding="utf-8", errors="replace", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events = []
    try:
        for line in process.stdout:  # until the input's registration begins
            event = parse_line(line)
            if event:
                events.append(event)
                if event["event"] == "input_start":
                    break
        time.sleep(0.5)  # inside the search by now (its first chunks)
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=300)  # a deadline for a hang, not a measurement
    finally:
        if process.poll() is None:
            process.kill()
    events += [e for e in map(parse_line, rest.splitlines()) if e]
    kinds = [e["event"] for e in events]
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "input_start" in kinds and "progress" not in kinds  # no stage began: the search itself was cut
    assert kinds[-2:] == ["cancelled", "run_done"]
    assert "cancelled" in rest  # the summary line says so
    assert not out.exists() or digest(out) == {}  # nothing half-written, no lock or temporary left
