"""Pinhole geometry, the paper's C-arm parameters and the result JSON."""

import json
import math

import numpy as np
import pytest
import torch
from xvrcore.geometry.camera import (
    Detector,
    Intrinsics,
    backproject,
    frustum_corners,
    pixel_grid,
    project,
    projection_matrix,
    world_to_camera,
)
from xvrcore.geometry.carm import carm_parameters, carm_pose, from_diffdrr, to_diffdrr
from xvrcore.geometry.rotations import euler_to_matrix, make_rigid
from xvrcore.io.pose_json import (
    CameraPose,
    PoseFileError,
    camera_pose,
    pose_to_dict,
    read_pose_json,
    write_pose_json,
)

D = torch.float64
ISO = torch.tensor([10.0, -20.0, 905.0], dtype=D)


def _pose(params, orientation="AP", iso=ISO):
    return carm_pose(torch.tensor(params, dtype=D), orientation, iso)


def _beam(c2w):
    return c2w[..., :3, 2]


# ---- intrinsics and detectors --------------------------------------------------------------------


def test_detector_intrinsics_and_principal_point():
    det = Detector(sdd=1000.0, rows=100, cols=120, row_spacing=0.5, col_spacing=0.4, principal_offset=(2.0, -1.0))
    k = det.intrinsics()
    assert k.fx == pytest.approx(-2500.0) and k.fy == pytest.approx(2000.0)
    assert k.cx == pytest.approx(59.5 + 5.0) and k.cy == pytest.approx(49.5 - 2.0)
    assert k.mirrored and not Detector(1000, 10, 10, 1, 1, mirrored=False).intrinsics().mirrored
    small = det.rescaled(4)
    assert (small.rows, small.cols) == (25, 30)
    assert small.field_of_view == pytest.approx(det.field_of_view)


def test_resized_intrinsics_keep_the_field_of_view():
    k = Intrinsics(-1000.0, 1100.0, 63.2, 70.1, 128, 140)
    half = k.resized(64, 70)
    # The image edges (-0.5 and W-0.5) map to the same rays.
    for u in (-0.5, 127.5, 63.2):
        u2 = (u + 0.5) * 0.5 - 0.5
        assert (u - k.cx) / k.fx == pytest.approx((u2 - half.cx) / half.fx)
    crop = k.cropped(10, 20, 50, 60)
    assert (crop.cx, crop.cy) == pytest.approx((53.2, 50.1))


def test_invalid_intrinsics_and_detector_raise():
    with pytest.raises(ValueError, match="focal"):
        Intrinsics(0.0, 1.0, 0, 0, 10, 10)
    with pytest.raises(ValueError, match="positive"):
        Detector(1000.0, 10, 10, 0.0, 1.0)
    with pytest.raises(ValueError, match="3×3"):
        Intrinsics.from_matrix(np.eye(4), 10, 10)


# ---- projection, back-projection, frustum --------------------------------------------------------


def test_projection_and_backprojection_are_inverse():
    k = Intrinsics(-900.0, 950.0, 40.3, 30.7, 80, 64)
    c2w = _pose([20.0, -10.0, 5.0, 3.0, 700.0, -4.0])
    pix = pixel_grid(64, 80, step=7, dtype=D).reshape(-1, 2)
    src, dirs = backproject(c2w, k, pix)
    pts = src[:, None] + dirs * 650.0
    uv, depth = project(pts[0], world_to_camera(c2w), k)
    assert torch.allclose(uv[0], pix, atol=1e-8)
    assert (depth > 0).all()


def test_projection_matrix_matches_project():
    k = Intrinsics(1200.0, 1200.0, 10.0, 20.0, 30, 40)
    c2w = _pose([5.0, 5.0, 5.0, 0.0, 600.0, 0.0])
    p = projection_matrix(world_to_camera(c2w), k)[0]
    x = torch.tensor([[1.0, 2.0, 900.0], [-30.0, 15.0, 870.0]], dtype=D)
    h = torch.cat([x, torch.ones(2, 1, dtype=D)], 1) @ p.T
    uv, _ = project(x, world_to_camera(c2w), k)
    assert torch.allclose(h[:, :2] / h[:, 2:], uv[0], atol=1e-9)


def test_frustum_corners_lie_on_the_detector_plane():
    det = Detector(1000.0, 60, 80, 0.5, 0.5)
    c2w = _pose([30.0, 10.0, 0.0, 0.0, 650.0, 0.0])
    corners = frustum_corners(c2w, det.intrinsics(), det.sdd)[0]
    assert torch.allclose(corners[0], c2w[:3, 3])
    beam = _beam(c2w)
    depth = (corners[1:] - corners[0]) @ beam
    assert torch.allclose(depth, torch.full((4,), 1000.0, dtype=D))
    # Detector edges are 40 mm × 30 mm.
    assert float((corners[2] - corners[1]).norm()) == pytest.approx(40.0)  # along the first row
    assert float((corners[3] - corners[2]).norm()) == pytest.approx(30.0)  # down the last column
    # The first corner projects to the outer edge of the first pixel.
    uv, _ = project(corners[1:2], world_to_camera(c2w), det.intrinsics())
    assert torch.allclose(uv[0, 0], torch.tensor([-0.5, -0.5], dtype=D), atol=1e-9)


# ---- the paper's C-arm parameters ----------------------------------------------------------------


def test_ap_zero_angles_source_anterior_beam_posterior_head_up():
    c2w = _pose([0.0, 0.0, 0.0, 0.0, 850.0, 0.0])
    assert torch.allclose(c2w[:3, 3], ISO + torch.tensor([0.0, 850.0, 0.0], dtype=D))
    assert torch.allclose(_beam(c2w), torch.tensor([0.0, -1.0, 0.0], dtype=D), atol=1e-12)
    # +y of the camera (increasing rows) points to the feet: row 0 is superior.
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 0.0, -1.0], dtype=D), atol=1e-12)
    # Detector-side (mirrored) AP image: columns run along -x of the camera = patient right (+x RAS).
    assert torch.allclose(-c2w[:3, 0], torch.tensor([1.0, 0.0, 0.0], dtype=D), atol=1e-12)
    assert abs(float(torch.det(c2w[:3, :3])) - 1) < 1e-12


def test_pa_positive_alpha_puts_the_source_at_patient_right_and_beta_tilts_the_detector_cranially():
    lateral = _pose([90.0, 0.0, 0.0, 0.0, -800.0, 0.0], "PA")
    assert torch.allclose(lateral[:3, 3] - ISO, torch.tensor([800.0, 0.0, 0.0], dtype=D), atol=1e-9)
    assert torch.allclose(_beam(lateral), torch.tensor([-1.0, 0.0, 0.0], dtype=D), atol=1e-12)
    cranial = _pose([0.0, 20.0, 0.0, 0.0, -800.0, 0.0], "PA")
    # The detector (along the beam from the isocentre) moves toward the head (+z).
    assert float(_beam(cranial)[2]) > 0.3
    assert float((cranial[:3, 3] - ISO)[2]) < 0  # and the source toward the feet
    assert abs(float(torch.det(lateral[:3, :3])) - 1) < 1e-12


def test_gamma_rotates_about_the_beam_and_y_is_the_source_isocentre_distance():
    base = _pose([15.0, -10.0, 0.0, 0.0, 700.0, 0.0])
    spun = _pose([15.0, -10.0, 30.0, 0.0, 700.0, 0.0])
    assert torch.allclose(_beam(base), _beam(spun), atol=1e-12)
    assert float((base[:3, 3] - ISO).norm()) == pytest.approx(700.0)
    # The principal ray passes through the isocentre when x = z = 0.
    to_iso = ISO - base[:3, 3]
    assert torch.allclose(to_iso / to_iso.norm(), _beam(base), atol=1e-12)


@pytest.mark.parametrize("orientation", ["AP", "PA"])
def test_carm_parameters_round_trip(orientation):
    g = torch.Generator().manual_seed(5)
    params = torch.rand(50, 6, generator=g, dtype=D) * 2 - 1
    params *= torch.tensor([170.0, 80.0, 170.0, 150.0, 200.0, 150.0], dtype=D)
    params[:, 4] += 800.0 if orientation == "AP" else -800.0
    c2w = carm_pose(params, orientation, ISO)
    assert torch.allclose(torch.det(c2w[:, :3, :3]), torch.ones(50, dtype=D), atol=1e-12)
    assert torch.allclose(carm_parameters(c2w, orientation, ISO), params, atol=1e-8)


@pytest.mark.parametrize("orientation", ["AP", "PA"])
@pytest.mark.parametrize("reverse", [False, True])
def test_diffdrr_mapping_round_trip(orientation, reverse):
    p = make_rigid(euler_to_matrix(torch.tensor([0.2, -0.3, 0.1], dtype=D), "ZXY"), torch.tensor([5.0, 600.0, -7.0], dtype=D))
    ours, mirrored = from_diffdrr(p, orientation, reverse, ISO)
    assert abs(float(torch.det(ours[:3, :3])) - 1) < 1e-12
    back, rev = to_diffdrr(ours, mirrored, orientation, ISO)
    assert rev == reverse
    assert torch.allclose(back, p, atol=1e-12)
    # The DiffDRR defaults (AP, no reverse) give the detector-side view, like DICOM.
    assert from_diffdrr(p, "AP", False)[1] is True
    assert from_diffdrr(p, "PA", True)[1] is True


# ---- result JSON ---------------------------------------------------------------------------------


def _example_pose(mirrored=True):
    k = Detector(1020.0, 96, 128, 0.8, 0.7, principal_offset=(3.0, -2.0), mirrored=mirrored).intrinsics()
    return camera_pose(k, _pose([12.0, -7.0, 3.0, 4.0, 760.0, -2.0]), similarity=0.93)


@pytest.mark.parametrize("handedness", ["left", "right"])
def test_result_json_round_trip_and_contents(tmp_path, handedness):
    pose = _example_pose()
    path = write_pose_json(tmp_path / "r.json", pose, handedness)
    data = json.loads(path.read_text())
    k, w2c, p = (np.array(data[key]) for key in ("intrinsics", "world_to_camera", "projection"))
    assert k.shape == (3, 3) and w2c.shape == (4, 4) and p.shape == (3, 4)
    assert np.allclose(k @ w2c[:3], p)
    assert data["handedness"] == handedness
    assert np.sign(np.linalg.det(w2c[:3, :3])) == (-1 if handedness == "left" else 1)
    assert (k[0, 0] > 0) == (handedness == "left")
    assert np.allclose(p, pose.projection)  # same projection whichever handedness
    back = read_pose_json(path)
    assert back.intrinsics.fx == pytest.approx(pose.intrinsics.fx)
    assert back.intrinsics.cx == pytest.approx(pose.intrinsics.cx)
    assert np.allclose(back.camera_to_world, pose.camera_to_world, atol=1e-9)
    assert back.extra == {"similarity": 0.93}


def test_projection_alone_is_enough(tmp_path):
    pose = _example_pose()
    d = pose_to_dict(pose)
    slim = {"projection": (np.array(d["projection"]) * 3.7).tolist(), "image_size": d["image_size"]}
    (tmp_path / "p.json").write_text(json.dumps(slim))
    back = read_pose_json(tmp_path / "p.json")
    assert np.allclose(back.camera_to_world, pose.camera_to_world, atol=1e-8)
    assert back.intrinsics.mirrored


def test_non_mirrored_pose_is_right_handed(tmp_path):
    pose = _example_pose(mirrored=False)
    d = pose_to_dict(pose)
    assert d["handedness"] == "right"
    with pytest.raises(ValueError, match="right-handed"):
        pose_to_dict(pose, "left")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("image_size"), "image_size"),
        (lambda d: d.update(intrinsics=[[1, 0], [0, 1]]), "3×3"),
        (lambda d: d.update(world_to_camera=(np.array(d["world_to_camera"]) * 1.1).tolist()), "not rigid"),
        (lambda d: d.update(projection=(np.array(d["projection"]) + 5).tolist()), "inconsistent"),
        (lambda d: d["projection"][0].__setitem__(0, float("nan")), "NaN"),
        (lambda d: [d.pop(k) for k in ("projection", "intrinsics")], "needs 'projection'"),
    ],
)
def test_bad_result_json_is_rejected_with_the_file_name(tmp_path, mutate, message):
    d = pose_to_dict(_example_pose())
    mutate(d)
    path = tmp_path / "bad_pose.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PoseFileError, match=message) as err:
        read_pose_json(path)
    assert "bad_pose.json" in str(err.value)


def test_unreadable_json_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(PoseFileError, match="x.json"):
        read_pose_json(tmp_path / "x.json")
    with pytest.raises(PoseFileError, match="not found"):
        read_pose_json(tmp_path / "missing.json")


def test_camera_pose_rejects_reflections():
    with pytest.raises(ValueError, match="proper"):
        camera_pose(Intrinsics(1, 1, 0, 0, 2, 2), np.diag([-1.0, 1, 1, 1]))
    assert isinstance(_example_pose(), CameraPose)
    assert math.isclose(np.linalg.det(_example_pose().world_to_camera[:3, :3]), 1.0)
