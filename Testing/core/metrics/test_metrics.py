"""Pose errors and image similarities against known answers."""

import math

import numpy as np
import pytest
import torch
from xvrcore import metrics as M
from xvrcore.geometry.camera import Intrinsics, world_to_camera
from xvrcore.geometry.rotations import axis_angle_to_matrix, euler_to_matrix, make_rigid
from xvrcore.metrics import patches, similarity

D = torch.float64
K = Intrinsics(-1000.0, 1000.0, 63.5, 63.5, 128, 128)
CENTER = torch.tensor([5.0, -10.0, 900.0], dtype=D)


def _c2w(angles=(0.3, -0.2, 0.1), dist=800.0):
    r = euler_to_matrix(torch.tensor(angles, dtype=D), "ZXY")
    return make_rigid(r, CENTER - dist * r[:, 2])


def _points(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return CENTER + 40 * torch.randn(n, 3, generator=g, dtype=D)


def test_mtre_of_a_pure_translation_is_its_length():
    c2w = _c2w()
    moved = c2w.clone()
    moved[:3, 3] += torch.tensor([3.0, -4.0, 0.0], dtype=D)
    err = M.mtre(world_to_camera(c2w), world_to_camera(moved), _points())
    assert float(err) == pytest.approx(5.0, abs=1e-9)
    assert float(M.mtre(world_to_camera(c2w), world_to_camera(c2w), _points())) == 0.0


def test_mtre_of_a_rotation_about_a_target_is_zero_there_and_grows_with_distance():
    c2w = _c2w()
    rot = make_rigid(axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.01], dtype=D)), torch.zeros(3, dtype=D))
    about = make_rigid(torch.eye(3, dtype=D), CENTER) @ rot @ make_rigid(torch.eye(3, dtype=D), -CENTER)
    est = about @ c2w  # the whole C-arm turned 0.01 rad about the centre
    w_t, w_e = world_to_camera(c2w), world_to_camera(est)
    assert float(M.mtre(w_t, w_e, CENTER[None])) == pytest.approx(0.0, abs=1e-9)
    off = CENTER + torch.tensor([[100.0, 0.0, 0.0]], dtype=D)  # 100 mm from the axis
    assert float(M.mtre(w_t, w_e, off)) == pytest.approx(2 * 100 * math.sin(0.005), rel=1e-9)


def test_reprojection_and_projection_errors_of_a_lateral_shift():
    c2w = _c2w(dist=500.0)
    shift = 2.0
    moved = c2w.clone()
    moved[:3, 3] += shift * c2w[:3, 0]  # move the source along the camera's x axis
    pts = CENTER[None] + torch.zeros(1, 3, dtype=D)  # at depth 500 mm
    px = float(M.mrpe(world_to_camera(c2w), world_to_camera(moved), K, pts))
    assert px == pytest.approx(1000.0 * shift / 500.0, rel=1e-9)
    mm = float(M.mpe(world_to_camera(c2w), world_to_camera(moved), K, pts, (0.3, 0.3)))
    assert mm == pytest.approx(px * 0.3, rel=1e-12)
    # 2.5-D: the target lifts to the detector plane (1000 mm) at s + 1000·beam for the true pose and,
    # for the moved source s + δx, at (s + δx) + (-2δx) + 1000·beam (its image moved by -δ·1000/500):
    # the two detector points are δ apart.
    d25 = float(M.mrpe_detector_mm(world_to_camera(c2w), world_to_camera(moved), K, pts, sdd=1000.0))
    assert d25 == pytest.approx(shift, rel=1e-9)


def test_dgeo_rotation_about_the_isocentre_and_translation():
    c2w = _c2w(dist=800.0)
    theta = 0.02
    turn = make_rigid(axis_angle_to_matrix(torch.tensor([0.0, theta, 0.0], dtype=D)), torch.zeros(3, dtype=D))
    about = make_rigid(torch.eye(3, dtype=D), CENTER) @ turn @ make_rigid(torch.eye(3, dtype=D), -CENTER)
    rot, xyz, total = M.dgeo(world_to_camera(c2w), world_to_camera(about @ c2w), sdd=1020.0, center=CENTER)
    assert float(rot) == pytest.approx(510.0 * theta, rel=1e-9)
    assert float(xyz) == pytest.approx(0.0, abs=1e-9)
    moved = c2w.clone()
    moved[:3, 3] += torch.tensor([0.0, 6.0, 8.0], dtype=D)
    rot, xyz, total = M.dgeo(world_to_camera(c2w), world_to_camera(moved), sdd=1020.0, center=CENTER)
    assert float(rot) == pytest.approx(0.0, abs=1e-6) and float(xyz) == pytest.approx(10.0, rel=1e-9)
    assert float(total) == pytest.approx(10.0, rel=1e-6)


def test_success_rate_and_survival_auc():
    errors = [0.2, 0.5, 0.9, 1.0, 3.0, 20.0]
    assert M.success_rate(errors, 1.0) == pytest.approx(3 / 6)
    curve = M.survival_curve(errors, [0.0, 0.5, 1.0, 5.0, 25.0])
    assert np.allclose(curve, [1.0, 4 / 6, 2 / 6, 1 / 6, 0.0])
    assert M.survival_auc(errors, 10.0) == pytest.approx(np.mean([0.2, 0.5, 0.9, 1.0, 3.0, 10.0]) / 10)
    # The normalised area is the integral of the survival curve.
    t = np.linspace(0, 10, 200001)
    assert M.survival_auc(errors, 10.0) == pytest.approx(np.trapezoid(M.survival_curve(errors, t), t) / 10, abs=1e-4)


def _images(seed=0, shape=(2, 1, 48, 40)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=D)
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)  # spatially correlated


def test_ncc_known_values_and_invariances():
    a = _images()
    assert torch.allclose(M.ncc(a, a), torch.ones(2, dtype=D))
    assert torch.allclose(M.ncc(a, -a), -torch.ones(2, dtype=D))
    assert torch.allclose(M.ncc(a, 3.5 * a + 10), torch.ones(2, dtype=D))
    assert torch.allclose(M.patch_ncc(a, 2 * a - 1, 9), torch.ones(2, dtype=D), atol=1e-3)
    # Independent images are uncorrelated on average; half-and-half mixtures give 1/sqrt(2).
    b = _images(seed=1)
    mix = (a / a.std() + b / b.std())
    expected = float(M.ncc(a, mix)[0])
    direct = torch.corrcoef(torch.stack([a[0].flatten(), mix[0].flatten()]))[0, 1]
    assert expected == pytest.approx(float(direct), abs=1e-9)


def test_patch_ncc_matches_a_brute_force_definition():
    a, b = _images(2, (1, 1, 20, 17)), _images(3, (1, 1, 20, 17))
    p = 5
    an, bn = similarity._standardise(a, torch.ones_like(a)), similarity._standardise(b, torch.ones_like(b))
    vals = []
    for i in range(20 - p + 1):
        for j in range(17 - p + 1):
            x, y = an[0, 0, i : i + p, j : j + p].flatten(), bn[0, 0, i : i + p, j : j + p].flatten()
            x, y = x - x.mean(), y - y.mean()
            vx, vy = (x * x).mean(), (y * y).mean()
            vals.append(float((x * y).mean() / torch.sqrt((vx + patches.EPS) * (vy + patches.EPS))))
    assert float(M.patch_ncc(a, b, p)) == pytest.approx(np.mean(vals), abs=1e-9)


def test_mask_ignores_the_collimated_region():
    a = _images()
    b = a.clone()
    b[..., :, :10] = 50 * torch.rand_like(b[..., :, :10])  # garbage behind a collimator blade
    mask = torch.ones(48, 40, dtype=D)
    mask[:, :10] = 0
    assert float(M.ncc(a, b).min()) < 0.5
    assert torch.allclose(M.ncc(a, b, mask), torch.ones(2, dtype=D))
    assert torch.allclose(M.patch_ncc(a, b, 9, mask), torch.ones(2, dtype=D), atol=1e-3)
    assert torch.allclose(M.gradient_ncc(a, b, 11, mask=mask), torch.ones(2, dtype=D), atol=1e-3)
    assert float(M.gradient_ncc(a, b, 11).min()) < 0.95


def test_gradient_ncc_ignores_smooth_shading():
    a = _images()
    ramp = torch.linspace(0, 20, 40, dtype=D).expand(48, 40)
    shaded = a + ramp * a.std() / 4
    assert float(M.ncc(a, shaded).max()) < 0.9
    assert float(M.gradient_ncc(a, shaded, 11).min()) > 0.99
    assert float(M.registration_similarity(a, a).min()) == pytest.approx(1.0, abs=1e-3)


def test_image_gradients_of_a_ramp():
    x = torch.arange(10, dtype=D).expand(6, 10)  # increases along columns
    gx, gy = M.image_gradients(x)
    assert torch.allclose(gx[0, 0, :, 1:-1], torch.full((6, 8), -8.0, dtype=D))  # Sobel weights sum to 4, step -2
    assert torch.allclose(gy[0, 0, 1:-1, 1:-1], torch.zeros(4, 8, dtype=D))


def test_similarities_are_differentiable():
    a = _images(0, (1, 1, 16, 14))
    b = _images(1, (1, 1, 16, 14)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: M.registration_similarity(a, x), (b,), eps=1e-6, atol=1e-6)
