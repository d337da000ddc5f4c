"""Pose from 2D–3D landmarks: exact on noiseless pairs, bounded under 1 px noise, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.registration import (
    LandmarkError,
    read_landmarks,
    reprojection_errors,
    solve_pnp,
    write_landmarks,
)
from xvrcore.registration.landmarks import MAX_LANDMARKS


def _camera(mirrored: bool):
    return Detector(1000.0, 480, 512, 0.4, 0.4, principal_offset=(6.0, -4.0), mirrored=mirrored).intrinsics()


def _project(pose, k, pts):
    w2c = np.linalg.inv(np.asarray(pose))  # a pose is a torch tensor; this helper works in numpy
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    kk = np.array([[k.fx, 0, k.cx], [0, k.fy, k.cy], [0, 0, 1]])
    img = cam @ kk.T
    return img[:, :2] / img[:, 2:]


def _scene(rng, n, planar=False):
    """A C-arm pose about a random isocentre and ``n`` landmarks within 80 mm of it."""
    iso = rng.uniform(-60, 60, 3)
    pose = pose_from_positioner(rng.uniform(-120, 120), rng.uniform(-40, 40), rng.uniform(600, 800), iso).numpy()
    pts = iso + rng.uniform(-80, 80, (n, 3))
    if planar:  # an oblique plane through the isocentre
        pts[:, 2] = iso[2] + 0.4 * (pts[:, 0] - iso[0]) - 0.2 * (pts[:, 1] - iso[1])
    return pose, pts


@pytest.mark.parametrize("mirrored", [True, False])
@pytest.mark.parametrize(("n", "planar", "method"), [
    (4, False, "posit"), (5, False, "posit"), (6, False, "dlt"), (12, False, "dlt"), (4, True, "planar"),
    (9, True, "planar"),
])
def test_exact_recovery_without_noise(mirrored, n, planar, method):
    rng = np.random.default_rng(n * 10 + planar + 2 * mirrored)
    k = _camera(mirrored)
    for _ in range(5):
        pose, pts = _scene(rng, n, planar)
        fit = solve_pnp(_project(pose, k, pts), pts, k)
        assert np.allclose(fit.camera_to_world, pose, atol=1e-6)
        assert fit.rms_px < 1e-6 and fit.method == method
        assert np.linalg.det(fit.camera_to_world[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize("planar", [False, True])
def test_one_pixel_noise_gives_a_bounded_error(planar):
    rng = np.random.default_rng(11 + planar)
    k = _camera(True)
    for _ in range(10):
        pose, pts = _scene(rng, 10, planar)
        observed = _project(pose, k, pts) + rng.normal(0, 1.0, (10, 2))
        fit = solve_pnp(observed, pts, k)
        # Bounds from 200 trials: RMS 0.57-1.84 px, probe error <= 1.43 px, beam direction <= 0.61°.
        assert 0.3 < fit.rms_px < 2.0  # the residual of a least-squares fit of 1 px noise
        assert np.allclose(fit.residuals_px, reprojection_errors(fit.camera_to_world, k, observed, pts))
        # Points among the landmarks (not the landmarks themselves) reproject within 2 px of the truth ...
        probe = rng.dirichlet(np.ones(len(pts)), 50) @ pts
        assert np.abs(_project(fit.camera_to_world, k, probe) - _project(pose, k, probe)).max() < 2.0
        # ... and the beam direction is right within a degree (depth is what 1 px noise hides most).
        cos = float(np.asarray(fit.camera_to_world)[:3, 2] @ pose[:3, 2])
        assert np.degrees(np.arccos(min(1.0, cos))) < 1.0


def test_degenerate_configurations_are_refused():
    rng = np.random.default_rng(0)
    k = _camera(True)
    pose, pts = _scene(rng, 6)
    uv = _project(pose, k, pts)
    with pytest.raises(LandmarkError, match="at least 4"):
        solve_pnp(uv[:3], pts[:3], k)
    with pytest.raises(LandmarkError, match="5 image points but 6 CT points"):
        solve_pnp(uv[:5], pts, k)
    line = pts[0] + np.outer(np.arange(6.0), [10.0, 5.0, -3.0])
    with pytest.raises(LandmarkError, match="one line"):
        solve_pnp(_project(pose, k, line), line, k)
    # Points in a plane that contains the source all project onto one image line.
    source, beam, across = pose[:3, 3], pose[:3, 2], pose[:3, 0]
    fan = source + np.outer(np.linspace(600, 750, 6), beam) + np.outer(rng.uniform(-60, 60, 6), across)
    with pytest.raises(LandmarkError, match="image points lie on one line"):
        solve_pnp(_project(pose, k, fan), fan, k)
    twice = pts.copy()
    twice[3] = twice[1]
    with pytest.raises(LandmarkError, match="points 2 and 4 coincide"):
        solve_pnp(uv, twice, k)
    with pytest.raises(LandmarkError, match="finite"):
        solve_pnp(np.where(np.eye(6, 2, dtype=bool), np.nan, uv), pts, k)
    with pytest.raises(LandmarkError, match=r"\[x, y, z\]"):
        solve_pnp(uv, pts[:, :2], k)


def test_landmarks_file_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    pose, pts = _scene(rng, 6)
    uv = _project(pose, _camera(True), pts)
    path = write_landmarks(tmp_path / "l.json", uv, pts, labels=[f"p{i}" for i in range(6)])
    marks = read_landmarks(path)
    assert np.allclose(marks.points_2d, uv) and np.allclose(marks.points_3d, pts) and marks.labels[2] == "p2"


def test_slicer_markups_for_the_ct_points(tmp_path):
    pts = np.array([[10.0, 20.0, 30.0], [-5.0, 40.0, 12.0], [33.0, -8.0, 50.0], [0.0, 0.0, -20.0]])
    labels = ["a", "b", "c", "d"]
    order = [2, 0, 3, 1]  # the markups list them in another order
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
               "Resources/Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": [
                   {"id": str(i), "label": labels[i], "position": [-pts[i, 0], -pts[i, 1], pts[i, 2]],
                    "positionStatus": "defined"} for i in order]}]}
    (tmp_path / "ct.mrk.json").write_text(json.dumps(markups))
    uv = [[1.0, 2.0], [30.0, 4.0], [5.0, 60.0], [70.0, 80.0]]
    (tmp_path / "l.json").write_text(json.dumps({"points_2d": uv, "points_3d": "ct.mrk.json", "labels": labels}))
    marks = read_landmarks(tmp_path / "l.json")
    assert np.allclose(marks.points_3d, pts)  # matched by label, LPS → RAS
    (tmp_path / "bad.json").write_text(json.dumps({"points_2d": uv, "points_3d": "ct.mrk.json",
                                                   "labels": ["a", "b", "c", "zz"]}))
    with pytest.raises(LandmarkError, match="'zz'"):
        read_landmarks(tmp_path / "bad.json")


def test_landmarks_file_errors(tmp_path):
    with pytest.raises(LandmarkError, match="not found"):
        read_landmarks(tmp_path / "none.json")
    (tmp_path / "a.json").write_text(json.dumps({"points_2d": [[0, 0]]}))
    with pytest.raises(LandmarkError, match="points_3d"):
        read_landmarks(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"points_2d": [[0, 0]] * 4, "points_3d": [[0, 0, 0]] * 3}))
    with pytest.raises(LandmarkError, match="b.json: 4 image points but 3 CT points"):
        read_landmarks(tmp_path / "b.json")


def _markups_file(path, n=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    points = [{"label": str(i), "position": [10.0 * i, 5.0 * i * i, -3.0 * i + 1.0]} for i in range(n)]
    path.write_text(json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": points}]}))
    return path


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_a_markups_file_outside_the_landmarks_folder_is_not_read(how, tmp_path):
    outside = _markups_file(tmp_path / "elsewhere" / "ct.mrk.json")  # valid, but not beside the landmarks
    folder = tmp_path / "case"
    folder.mkdir()
    name = {"parent": "../elsewhere/ct.mrk.json", "absolute": str(outside), "symlink": "ct.mrk.json"}[how]
    if how == "symlink":
        (folder / "ct.mrk.json").symlink_to(outside)
    (folder / "l.json").write_text(json.dumps({"points_2d": [[1, 2], [30, 4], [5, 60], [60, 60]], "points_3d": name}))
    with pytest.raises(LandmarkError, match="outside" if how == "symlink" else "leaves the landmarks file's folder"):
        read_landmarks(folder / "l.json")
    _markups_file(folder / "sub" / "ct.mrk.json")  # a sub-folder is inside
    (folder / "ok.json").write_text(json.dumps({"points_2d": [[1, 2], [30, 4], [5, 60], [60, 60]], "points_3d": "sub/ct.mrk.json"}))
    assert read_landmarks(folder / "ok.json").points_3d.shape == (4, 3)


@pytest.mark.parametrize(("markups", "words"), [
    ({"markups": {"controlPoints": []}}, "no 'markups' list"),
    ({"markups": [5]}, "no 'markups' list"),
    ({"markups": [{"controlPoints": [1, 2]}]}, "list of objects"),
    ({"markups": [{"controlPoints": [{"label": "a", "position": [1, 2]}]}]}, "no \\[x, y, z\\] position"),
])
def test_a_malformed_markups_file_is_refused_naming_it(markups, words, tmp_path):
    (tmp_path / "ct.mrk.json").write_text(json.dumps(markups))
    (tmp_path / "l.json").write_text(json.dumps({"points_2d": [[1, 2]] * 4, "points_3d": "ct.mrk.json"}))
    with pytest.raises(LandmarkError, match=f"ct.mrk.json: .*{words}"):
        read_landmarks(tmp_path / "l.json")


def test_a_landmarks_file_with_too_many_or_no_list_of_points_is_refused(tmp_path):
    (tmp_path / "many.json").write_text(json.dumps({"points_2d": [[0, 0]] * (MAX_LANDMARKS + 1),
                                                     "points_3d": [[0, 0, 0]] * (MAX_LANDMARKS + 1)}))
    with pytest.raises(LandmarkError, match=f"many.json: {MAX_LANDMARKS + 1} landmarks; at most {MAX_LANDMARKS}"):
        read_landmarks(tmp_path / "many.json")
    (tmp_path / "number.json").write_text(json.dumps({"points_2d": 5, "points_3d": [[0, 0, 0]]}))
    with pytest.raises(LandmarkError, match="number.json: points_2d must be a list"):
        read_landmarks(tmp_path / "number.json")
