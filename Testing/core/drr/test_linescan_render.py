"""The line-scan (CT scout) renderer: closed-form line integrals, row-by-row agreement with the pinhole
renderer, batches and pixel subsets, and gradients in the pose."""

import math

import numpy as np
import pytest
import torch
from xvrcore.drr import DRRVolume, render, render_linescan
from xvrcore.geometry.camera import Intrinsics
from xvrcore.geometry.linescan import LineScanCamera, linescan_rays
from xvrcore.geometry.rotations import axis_angle_to_matrix, euler_to_matrix, make_rigid

D = torch.float64


def _oblique_affine(spacing, origin, angles=(0.3, -0.2, 0.15)):
    affine = np.eye(4)
    affine[:3, :3] = euler_to_matrix(torch.tensor(angles, dtype=D), "ZXY").numpy() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _gaussian_blob(n: int, sigma: float):
    """An isotropic Gaussian (voxel units) in an n³ grid: its line integral is √(2π) σ exp(−b²/2σ²)."""
    g = np.arange(n) - (n - 1) / 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    return np.exp(-(x**2 + y**2 + z**2) / (2 * sigma**2))


def _facing(centre, distance: float, angles=(0.5, 0.3, -0.2)):
    """A pose whose central ray (row cv, column cu) passes through ``centre`` from ``distance`` mm."""
    r = euler_to_matrix(torch.tensor(angles, dtype=D), "ZXY")
    return make_rigid(r, torch.as_tensor(centre, dtype=D) - distance * r[:, 2])


CAMERA = LineScanCamera(width=24, height=18, col_spacing=1.5, row_spacing=2.0, plane_distance=400.0, cu=11.3, cv=8.6)


@pytest.mark.parametrize("method", ["trilinear", "siddon"])
def test_gaussian_blob_matches_closed_form_line_integrals(method):
    n, sigma = 64, 6.0
    affine = _oblique_affine((1.0, 1.0, 1.0), (5.0, -3.0, 40.0))
    vol = DRRVolume(_gaussian_blob(n, sigma), affine, dtype=D, crop_threshold=None)
    centre = (affine @ np.array([(n - 1) / 2] * 3 + [1.0]))[:3]
    pose = _facing(centre, 380.0)
    img = render_linescan(vol, pose, CAMERA, method=method, level=0)[0, 0].reshape(-1).numpy()
    origins, dirs = linescan_rays(pose, CAMERA, CAMERA.pixels().reshape(-1, 2))
    offset = centre - origins[0].numpy()
    dirs = dirs[0].numpy()
    b = np.linalg.norm(offset - (offset * dirs).sum(1)[:, None] * dirs, axis=1)  # ray-centre distance (mm)
    exact = math.sqrt(2 * math.pi) * sigma * np.exp(-(b**2) / (2 * sigma**2))
    seen = exact > 0.05 * exact.max()
    assert seen.sum() > 20  # the blob spans several rows and columns
    rel = np.abs(img[seen] - exact[seen]) / exact[seen]
    assert rel.max() < 1e-2, f"max rel error {rel.max():.2e}"


@pytest.mark.parametrize("method", ["trilinear", "siddon"])
def test_each_row_is_the_pinhole_view_from_that_rows_source(method):
    """Row v of a line scan = the pinhole image row through the principal point of a camera at row v's source.

    (Exact for the slice-wise integrators; "raymarch" spaces its samples by the longest ray of the call.)
    """
    g = torch.Generator().manual_seed(1)
    vol = DRRVolume(torch.rand(20, 22, 24, generator=g, dtype=D), _oblique_affine((2.0, 1.8, 2.2), (0.0, 5.0, -10.0)),
                    dtype=D)
    pose = _facing(vol.center, 300.0)
    lines = render_linescan(vol, pose, CAMERA, method=method, level=0)[0, 0]
    focal = CAMERA.plane_distance / CAMERA.col_spacing
    pinhole = Intrinsics(-focal, 1000.0, CAMERA.cu, 0.0, CAMERA.width, 1)  # mirrored, like the scout
    for v in (0, 7, 17):
        shift = make_rigid(torch.eye(3, dtype=D), torch.tensor([0.0, (v - CAMERA.cv) * CAMERA.row_spacing, 0.0], dtype=D))
        row = render(vol, pose @ shift, pinhole, method=method, level=0)[0, 0, 0]
        torch.testing.assert_close(lines[v], row, rtol=1e-9, atol=1e-9)


def test_batches_steps_and_pixel_lists_agree():
    g = torch.Generator().manual_seed(2)
    vol = DRRVolume(torch.rand(16, 18, 20, generator=g), _oblique_affine((2.0, 2.0, 2.0), (0.0, 0.0, 0.0)))
    poses = torch.stack([_facing(vol.center, 300.0), _facing(vol.center, 320.0, (0.2, -0.4, 0.1))])
    batch = render_linescan(vol, poses, CAMERA, level=0)
    assert batch.shape == (2, 1, CAMERA.height, CAMERA.width)
    for b in range(2):
        torch.testing.assert_close(batch[b], render_linescan(vol, poses[b], CAMERA, level=0)[0])
    every_third = render_linescan(vol, poses[0], CAMERA, 3, level=0)
    torch.testing.assert_close(every_third[0, 0], batch[0, 0, ::3, ::3])
    listed = torch.tensor([[4.0, 5.0], [20.0, 1.0]])
    values = render_linescan(vol, poses[0], CAMERA, listed, level=0)
    torch.testing.assert_close(values[0, 0], batch[0, 0, [5, 1], [4, 20]])
    with pytest.raises(ValueError, match="pixels"):
        render_linescan(vol, poses[0], CAMERA, torch.zeros(3, 3))


@pytest.mark.parametrize("method", ["trilinear", "siddon"])
def test_gradcheck_pose(method):
    g = torch.Generator().manual_seed(0)
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=D) for n in (9, 10, 11)), indexing="ij")
    blob = torch.exp(-(x**2 + (y - 0.2) ** 2 + z**2) * 3) + 0.3 * torch.rand(9, 10, 11, generator=g, dtype=D)
    vol = DRRVolume(blob, _oblique_affine((1.0, 1.2, 0.9), (3.0, -2.0, 10.0)), dtype=D)
    camera = LineScanCamera(5, 4, 1.2, 1.5, 60.0, 2.2, 1.4)
    base = _facing(vol.center, 60.0)

    def drr(twist):
        pose = make_rigid(axis_angle_to_matrix(twist[:3]) @ base[:3, :3], base[:3, 3] + twist[3:])
        return render_linescan(vol, pose, camera, method=method, level=0)

    twist = torch.tensor([0.01, -0.02, 0.015, 0.3, -0.2, 0.1], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(drr, (twist,), eps=1e-6, atol=1e-5, rtol=1e-3)
