"""Rotation and rigid-transform conversions: round trips, known matrices, gradients."""

import math

import pytest
import torch
from xvrcore.geometry import rotations as rot

TAIT_BRYAN = ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]


def _random_rotations(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=dtype)
    return rot.quaternion_to_matrix(q)


def _special_rotations(dtype=torch.float64) -> torch.Tensor:
    """Identity, 180° turns and tiny rotations: where naive formulas break down."""
    vecs = torch.tensor(
        [[0, 0, 0], [math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi], [1e-9, 0, 0], [2.0, -1.0, 0.5],
         [math.pi / math.sqrt(2), math.pi / math.sqrt(2), 0]],
        dtype=dtype,
    )
    return rot.axis_angle_to_matrix(vecs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotations_are_orthonormal_with_det_one(dtype):
    r = _random_rotations(50, dtype)
    eye = torch.eye(3, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(r @ r.transpose(-1, -2), eye.expand_as(r), atol=tol)
    assert torch.allclose(torch.det(r), torch.ones(50, dtype=dtype), atol=tol)


def test_axis_rotation_matches_right_hand_rule():
    # +90° about z turns +x into +y.
    r = rot.euler_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64), "ZXY")
    assert torch.allclose(r @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)


def test_zxy_is_the_papers_product():
    a, b, c = 0.3, -0.7, 1.1
    rz = rot.euler_to_matrix(torch.tensor([a, 0, 0], dtype=torch.float64), "ZXY")
    rx = rot.euler_to_matrix(torch.tensor([0, b, 0], dtype=torch.float64), "ZXY")
    ry = rot.euler_to_matrix(torch.tensor([0, 0, c], dtype=torch.float64), "ZXY")
    full = rot.euler_to_matrix(torch.tensor([a, b, c], dtype=torch.float64), "ZXY")
    assert torch.allclose(full, rz @ rx @ ry, atol=1e-14)
    assert torch.allclose(rx[1:, 1:], torch.tensor([[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]], dtype=torch.float64))


@pytest.mark.parametrize("convention", TAIT_BRYAN)
def test_euler_round_trip(convention):
    g = torch.Generator().manual_seed(1)
    angles = torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1
    angles = angles * torch.tensor([math.pi * 0.99, math.pi / 2 * 0.99, math.pi * 0.99], dtype=torch.float64)
    back = rot.matrix_to_euler(rot.euler_to_matrix(angles, convention), convention)
    assert torch.allclose(back, angles, atol=1e-9)


def test_invalid_convention_is_rejected():
    with pytest.raises(ValueError, match="Euler convention"):
        rot.euler_to_matrix(torch.zeros(3), "ZZY")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quaternion_and_axis_angle_round_trips(dtype):
    r = torch.cat([_random_rotations(100, dtype), _special_rotations(dtype)])
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    q = rot.matrix_to_quaternion(r)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(rot.quaternion_to_matrix(q), r, atol=tol)
    v = rot.matrix_to_axis_angle(r)
    assert (v.norm(dim=-1) <= math.pi + 1e-5).all()
    assert torch.allclose(rot.axis_angle_to_matrix(v), r, atol=tol * 10)


def test_axis_angle_known_values():
    v = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    assert torch.allclose(rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(v)), v, atol=1e-14)
    assert torch.allclose(rot.matrix_to_axis_angle(torch.eye(3, dtype=torch.float64)), torch.zeros(3, dtype=torch.float64))


def test_6d_and_9d_round_trips():
    r = _random_rotations(64)
    assert torch.allclose(rot.rotation_6d_to_matrix(rot.matrix_to_rotation_6d(r)), r, atol=1e-12)
    assert torch.allclose(rot.rotation_9d_to_matrix(rot.matrix_to_rotation_9d(r)), r, atol=1e-12)
    # 9D: a noisy matrix maps to the nearest proper rotation (det +1, orthonormal).
    noisy = rot.rotation_9d_to_matrix(rot.matrix_to_rotation_9d(r) + 0.1 * torch.randn(64, 9, dtype=torch.float64))
    assert torch.allclose(torch.det(noisy), torch.ones(64, dtype=torch.float64), atol=1e-10)
    # 9D also repairs a reflection into a rotation.
    refl = -r
    fixed = rot.rotation_9d_to_matrix(rot.matrix_to_rotation_9d(refl))
    assert torch.allclose(torch.det(fixed), torch.ones(64, dtype=torch.float64), atol=1e-10)


def test_se3_exp_log_and_inverse():
    g = torch.Generator().manual_seed(3)
    twist = torch.randn(40, 6, generator=g, dtype=torch.float64)
    twist[:, 3:] *= 0.9
    twist[0] = 0
    transform = rot.se3_exp(twist)
    assert torch.allclose(rot.se3_log(transform), twist, atol=1e-9)
    eye = torch.eye(4, dtype=torch.float64).expand(40, 4, 4)
    assert torch.allclose(rot.invert_rigid(transform) @ transform, eye, atol=1e-12)
    assert float(rot.rigidity_error(transform).max()) < 1e-12


def test_gradients_are_finite_at_the_identity():
    for fn in (rot.axis_angle_to_matrix, lambda v: rot.geodesic_angle(torch.eye(3, dtype=v.dtype), rot.axis_angle_to_matrix(v))):
        v = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        fn(v).sum().backward()
        assert torch.isfinite(v.grad).all()


def test_gradcheck_conversions():
    v = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.axis_angle_to_matrix, (v,))
    assert torch.autograd.gradcheck(lambda x: rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(x)), (v,))
    e = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rot.euler_to_matrix(x, "ZXY"), (e,))
    d6 = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.rotation_6d_to_matrix, (d6,))


def test_geodesic_angle_known_value():
    r1 = rot.euler_to_matrix(torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64), "ZXY")
    r2 = rot.euler_to_matrix(torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64), "ZXY")
    assert float(rot.geodesic_angle(r1, r2)) == pytest.approx(0.3, abs=1e-12)
