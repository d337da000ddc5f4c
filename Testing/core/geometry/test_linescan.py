"""The line-scan (CT scout) camera: its rays, its projection and its resampling, against closed forms."""

import math

import pytest
import torch
from xvrcore.geometry.linescan import LineScanCamera, linescan_rays, project_linescan
from xvrcore.geometry.rotations import euler_to_matrix, invert_rigid, make_rigid

D = torch.float64
CAMERA = LineScanCamera(width=40, height=30, col_spacing=0.6, row_spacing=0.5, plane_distance=540.0, cu=19.2, cv=14.5,
                        mirrored=True, sdd=950.0)


def _pose():
    return make_rigid(euler_to_matrix(torch.tensor([0.3, -0.2, 0.5], dtype=D), "ZXY"), torch.tensor([5.0, -600.0, 40.0], dtype=D))


@pytest.mark.parametrize("mirrored", [True, False])
def test_points_on_a_pixels_ray_project_to_that_pixel(mirrored):
    camera = LineScanCamera(40, 30, 0.6, 0.5, 540.0, 19.2, 14.5, mirrored=mirrored)
    pose = _pose()
    pixels = torch.tensor([[0.0, 0.0], [39.0, 29.0], [7.5, 21.25], [19.2, 3.0]], dtype=D)
    origins, directions = linescan_rays(pose, camera, pixels)
    for depth in (300.0, 540.0, 800.0):
        points = origins[0] + depth * directions[0]
        uv, z = project_linescan(points, invert_rigid(pose), camera)
        torch.testing.assert_close(uv[0], pixels, atol=1e-9, rtol=0)
        assert bool((z > 0).all())


def test_a_row_is_a_fan_and_the_rows_are_parallel():
    """Rows: one source each, spaced by the row spacing along +y; columns: a fan with the plane spacing."""
    pixels = torch.tensor([[3.0, 0.0], [3.0, 10.0], [23.0, 10.0]], dtype=D)
    origins, directions = CAMERA.rays(pixels)
    torch.testing.assert_close(origins[1] - origins[0], torch.tensor([0.0, 10 * 0.5, 0.0], dtype=D))
    torch.testing.assert_close(origins[1], origins[2])  # one source per row
    torch.testing.assert_close(directions[0], directions[1])  # same column: parallel along the table
    # at the plane distance, 20 columns are 20 column spacings apart, along −x (a mirrored view)
    spread = (directions[2] - directions[1]) * CAMERA.plane_distance
    torch.testing.assert_close(spread, torch.tensor([-20 * 0.6, 0.0, 0.0], dtype=D))
    centre = CAMERA.rays(torch.tensor([[CAMERA.cu, 5.0]], dtype=D))[1][0]
    torch.testing.assert_close(centre, torch.tensor([0.0, 0.0, 1.0], dtype=D))


def test_magnification_across_the_fan_only():
    """A 10 mm object twice as far from the source spans half the columns but the same number of rows."""
    w2c = torch.eye(4, dtype=D)
    near = torch.tensor([[0.0, 0.0, 270.0], [10.0, 10.0, 270.0]], dtype=D)
    far = near * torch.tensor([1.0, 1.0, 2.0], dtype=D)
    (uv_near,), _ = project_linescan(near, w2c, CAMERA)
    (uv_far,), _ = project_linescan(far, w2c, CAMERA)
    span_near, span_far = (uv_near[1] - uv_near[0]).abs(), (uv_far[1] - uv_far[0]).abs()
    assert math.isclose(float(span_near[0]), 10 * 2 / 0.6, rel_tol=1e-12)  # magnified 540/270 = 2
    assert math.isclose(float(span_far[0]), 10 / 0.6, rel_tol=1e-12)
    assert math.isclose(float(span_near[1]), 20.0, rel_tol=1e-12) and math.isclose(float(span_far[1]), 20.0, rel_tol=1e-12)


def test_resizing_keeps_the_field_of_view():
    """A coarse pixel's centre sees what the fine grid sees at the same place: u_fine = f (u + ½) − ½."""
    coarse = CAMERA.resized(10, 15)  # 4× across, 2× along the table
    pose = _pose()
    points = torch.tensor([[3.0, -40.0, 55.0], [-12.0, 80.0, 20.0]], dtype=D)
    fine_uv, _ = project_linescan(points, invert_rigid(pose), CAMERA)
    coarse_uv, _ = project_linescan(points, invert_rigid(pose), coarse)
    factor = torch.tensor([4.0, 2.0], dtype=D)
    torch.testing.assert_close(fine_uv, factor * (coarse_uv + 0.5) - 0.5)
    assert coarse.col_spacing == pytest.approx(2.4) and coarse.row_spacing == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [{"col_spacing": 0.0}, {"row_spacing": -1.0}, {"plane_distance": 0.0},
                                 {"cu": math.nan}, {"width": 0}])
def test_bad_parameters_are_refused(bad):
    values = {"width": 4, "height": 3, "col_spacing": 1.0, "row_spacing": 1.0, "plane_distance": 500.0,
              "cu": 1.5, "cv": 1.0}
    with pytest.raises(ValueError):
        LineScanCamera(**{**values, **bad})
