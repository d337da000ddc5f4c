"""Rotations and rigid transforms: batched, differentiable, float32 and float64.

Every function takes tensors with arbitrary leading batch dimensions (``(..., 3, 3)`` matrices,
``(..., 4, 4)`` rigid transforms) and returns tensors of the input's dtype and device.
Representations:

* axis-angle / so(3) vector ``(..., 3)``: direction = axis, norm = angle (radians);
* quaternion ``(..., 4)`` real part first ``(w, x, y, z)``, returned with ``w >= 0``;
* Euler angles ``(..., 3)`` for any of the 12 intrinsic conventions, ``R = R_a(θ0) R_b(θ1) R_c(θ2)``
  for convention ``"abc"`` (the xvr paper's C-arm uses ``"ZXY"``);
* 6D (first two columns, Gram–Schmidt) and 9D (nearest rotation by SVD) representations for
  networks (Zhou et al. 2019; Levinson et al. 2020);
* se(3) twist ``(..., 6)`` = ``(v, ω)`` with ``T = exp([ω]x, v)``.
"""

from __future__ import annotations

import torch

__all__ = [
    "axis_angle_to_matrix",
    "euler_to_matrix",
    "geodesic_angle",
    "invert_rigid",
    "make_rigid",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "matrix_to_rotation_9d",
    "quaternion_to_matrix",
    "rigidity_error",
    "rotation_6d_to_matrix",
    "rotation_9d_to_matrix",
    "se3_exp",
    "se3_log",
    "skew",
]

_AXES = {"X": 0, "Y": 1, "Z": 2}


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]x`` of ``(..., 3)`` vectors."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )


def _safe_norm(v: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm whose gradient stays finite (zero) at the zero vector."""
    return ((v * v).sum(-1, keepdim=keepdim) + 1e-30).sqrt()


def _sinc_terms(theta2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sin θ/θ``, ``(1-cos θ)/θ²`` and ``(θ - sin θ)/θ³`` from ``θ²``, with Taylor series near 0.

    The series keep gradients finite at the identity, where the closed forms divide 0 by 0.
    """
    small = theta2 < 1e-6
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2**2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2**2 / 720, (1 - torch.cos(theta)) / safe2)
    c = torch.where(small, 1 / 6 - theta2 / 120 + theta2**2 / 5040, (theta - torch.sin(theta)) / (safe2 * theta))
    return a, b, c


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula (the so(3) exponential map)."""
    a, b, _ = _sinc_terms((rotvec * rotvec).sum(-1))
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """so(3) logarithm, accurate for every angle in [0, π] (via the quaternion)."""
    q = matrix_to_quaternion(matrix)
    w, xyz = q[..., :1], q[..., 1:]
    sin_half = _safe_norm(xyz, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    # angle / sin(angle/2) -> 2 as the angle -> 0
    small = sin_half < 1e-7
    scale = torch.where(small, 2 / w.clamp_min(1e-12), angle / torch.where(small, torch.ones_like(sin_half), sin_half))
    return xyz * scale


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a (not necessarily unit) quaternion ``(w, x, y, z)``."""
    q = quat / quat.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0``.

    Each of the four candidate formulas is exact but ill-conditioned where its pivot is small;
    the candidate with the largest pivot is selected (Shepperd's method), so the result is
    stable at every rotation, 180° included.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    pivots = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    r = pivots.clamp_min(1e-12).sqrt()  # = 2|w|, 2|x|, 2|y|, 2|z| for the respective candidate
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    r0, r1, r2, r3 = r.unbind(-1)
    candidates = torch.stack(
        [
            torch.stack([r0 * r0, d21, d02, d10], -1) / (2 * r0[..., None]),
            torch.stack([d21, r1 * r1, s10, s02], -1) / (2 * r1[..., None]),
            torch.stack([d02, s10, r2 * r2, s21], -1) / (2 * r2[..., None]),
            torch.stack([d10, s02, s21, r3 * r3], -1) / (2 * r3[..., None]),
        ],
        -2,
    )
    best = pivots.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _check_convention(convention: str) -> str:
    conv = convention.upper()
    if len(conv) != 3 or any(a not in _AXES for a in conv) or conv[0] == conv[1] or conv[1] == conv[2]:
        raise ValueError(f"invalid Euler convention {convention!r}: expected three axes like 'ZXY'")
    return conv


def euler_to_matrix(angles: torch.Tensor, convention: str = "ZXY") -> torch.Tensor:
    """``R = R_a(θ0) R_b(θ1) R_c(θ2)`` for convention ``"abc"`` (intrinsic rotations, radians)."""
    conv = _check_convention(convention)
    mats = [_axis_rotation(axis, angles[..., n]) for n, axis in enumerate(conv)]
    return mats[0] @ mats[1] @ mats[2]


def matrix_to_euler(matrix: torch.Tensor, convention: str = "ZXY") -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix` for the six Tait–Bryan conventions.

    The middle angle is returned in [-π/2, π/2], the others in (-π, π].
    """
    conv = _check_convention(convention)
    if conv[0] == conv[2]:
        raise NotImplementedError(f"matrix_to_euler supports Tait–Bryan conventions only, not {conv}")
    i, j, k = (_AXES[a] for a in conv)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for cyclic (even) axis orders
    m = matrix
    middle = torch.asin((sign * m[..., i, k]).clamp(-1.0, 1.0))
    first = torch.atan2(-sign * m[..., j, k], m[..., k, k])
    last = torch.atan2(-sign * m[..., i, j], m[..., i, i])
    return torch.stack([first, middle, last], -1)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Rotation whose first two columns are the Gram–Schmidt orthonormalisation of ``d6``."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], -1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], -1)


def rotation_9d_to_matrix(d9: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (special orthogonal Procrustes) to the 3×3 matrix in ``d9`` (row-major)."""
    m = d9.reshape(*d9.shape[:-1], 3, 3)
    u, _, vh = torch.linalg.svd(m)
    det = torch.det(u @ vh)
    fix = torch.ones_like(m[..., 0])
    fix[..., 2] = det
    return u @ torch.diag_embed(fix) @ vh


def matrix_to_rotation_9d(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.reshape(*matrix.shape[:-2], 9)


def make_rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """4×4 transforms ``[[R, t], [0, 1]]`` from ``(..., 3, 3)`` and ``(..., 3)``."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    top = torch.cat([rotation.expand(*batch, 3, 3), translation.expand(*batch, 3)[..., None]], -1)
    bottom = torch.zeros(*batch, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid (or reflected-rigid) 4×4 transforms."""
    rt = transform[..., :3, :3].transpose(-1, -2)
    return make_rigid(rt, -(rt @ transform[..., :3, 3:])[..., 0])


def rigidity_error(transform: torch.Tensor) -> torch.Tensor:
    """Largest deviation of ``R Rᵀ`` from I and of the bottom row from ``[0, 0, 0, 1]``."""
    r = transform[..., :3, :3]
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    ortho = (r @ r.transpose(-1, -2) - eye).abs().amax((-1, -2))
    bottom = transform[..., 3, :] - torch.tensor([0, 0, 0, 1], dtype=r.dtype, device=r.device)
    return torch.maximum(ortho, bottom.abs().amax(-1))


def se3_exp(twist: torch.Tensor) -> torch.Tensor:
    """Exponential map of se(3) twists ``(v, ω)`` to 4×4 rigid transforms."""
    v, w = twist[..., :3], twist[..., 3:]
    a, b, c = _sinc_terms((w * w).sum(-1))
    k = skew(w)
    k2 = k @ k
    eye = torch.eye(3, dtype=twist.dtype, device=twist.device).expand(k.shape)
    rot = eye + a[..., None, None] * k + b[..., None, None] * k2
    jac = eye + b[..., None, None] * k + c[..., None, None] * k2
    return make_rigid(rot, (jac @ v[..., None])[..., 0])


def se3_log(transform: torch.Tensor) -> torch.Tensor:
    """Logarithm of 4×4 rigid transforms as twists ``(v, ω)`` (inverse of :func:`se3_exp`)."""
    w = matrix_to_axis_angle(transform[..., :3, :3])
    a, b, c = _sinc_terms((w * w).sum(-1))
    k = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(k.shape)
    jac = eye + b[..., None, None] * k + c[..., None, None] * (k @ k)
    v = torch.linalg.solve(jac, transform[..., :3, 3:])[..., 0]
    return torch.cat([v, w], -1)


def geodesic_angle(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of the relative rotation ``R1ᵀ R2``; accurate for small angles too."""
    return _safe_norm(matrix_to_axis_angle(r1.transpose(-1, -2) @ r2))
