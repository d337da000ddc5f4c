"""Pinhole geometry: intrinsics, detectors, projection, backprojection and the frustum."""


import numpy as np
import pytest
import torch
from core_helpers import D, beam, carm_view
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
    c2w = carm_view([20.0, -10.0, 5.0, 3.0, 700.0, -4.0])
    pix = pixel_grid(64, 80, step=7, dtype=D).reshape(-1, 2)
    src, dirs = backproject(c2w, k, pix)
    pts = src[:, None] + dirs * 650.0
    uv, depth = project(pts[0], world_to_camera(c2w), k)
    assert torch.allclose(uv[0], pix, atol=1e-8)
    assert (depth > 0).all()


def test_projection_matrix_matches_project():
    k = Intrinsics(1200.0, 1200.0, 10.0, 20.0, 30, 40)
    c2w = carm_view([5.0, 5.0, 5.0, 0.0, 600.0, 0.0])
    p = projection_matrix(world_to_camera(c2w), k)[0]
    x = torch.tensor([[1.0, 2.0, 900.0], [-30.0, 15.0, 870.0]], dtype=D)
    h = torch.cat([x, torch.ones(2, 1, dtype=D)], 1) @ p.T
    uv, _ = project(x, world_to_camera(c2w), k)
    assert torch.allclose(h[:, :2] / h[:, 2:], uv[0], atol=1e-9)


def test_frustum_corners_lie_on_the_detector_plane():
    det = Detector(1000.0, 60, 80, 0.5, 0.5)
    c2w = carm_view([30.0, 10.0, 0.0, 0.0, 650.0, 0.0])
    corners = frustum_corners(c2w, det.intrinsics(), det.sdd)[0]
    assert torch.allclose(corners[0], c2w[:3, 3])
    axis = beam(c2w)
    depth = (corners[1:] - corners[0]) @ axis
    assert torch.allclose(depth, torch.full((4,), 1000.0, dtype=D))
    # Detector edges are 40 mm × 30 mm.
    assert float((corners[2] - corners[1]).norm()) == pytest.approx(40.0)  # along the first row
    assert float((corners[3] - corners[2]).norm()) == pytest.approx(30.0)  # down the last column
    # The first corner projects to the outer edge of the first pixel.
    uv, _ = project(corners[1:2], world_to_camera(c2w), det.intrinsics())
    assert torch.allclose(uv[0, 0], torch.tensor([-0.5, -0.5], dtype=D), atol=1e-9)


# ---- the paper's C-arm parameters ----------------------------------------------------------------
