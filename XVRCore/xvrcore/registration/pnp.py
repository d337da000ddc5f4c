"""A C-arm pose from 2D–3D landmark pairs with known intrinsics (perspective-n-point).

The user marks the same anatomical points on the X-ray (pixels) and in the CT (RAS mm); with
the intrinsics known from the DICOM header, four or more pairs fix the pose. This gives a
registration a start when the positioner angles are missing, wrong, or far off.

Method: image points are first turned into normalised camera rays ``K⁻¹ (u, v, 1)`` (so a
mirrored image, ``fx < 0``, needs no special case), then every closed-form start that suits the
configuration is refined by Levenberg–Marquardt on the reprojection error in pixels, and the
start whose refinement fits best wins:

* **DLT** (≥ 6 non-coplanar points): the 3×4 matrix ``[R | t]`` by linear least squares on
  normalised coordinates, then the nearest rotation.
* **POSIT** (DeMenthon & Davis; ≥ 4 non-coplanar points): scaled orthographic projection,
  corrected iteratively toward perspective — good for C-arms, whose objects are small compared
  with their distance from the source.
* **Planar** (coplanar or nearly coplanar points, ≥ 4): the homography between the landmarks'
  plane and the image gives ``R`` and ``t``; the mirror-symmetric pose a plane seen from afar
  also fits (the plane tilted the other way) is tried too.

Collinear 3D points, collinear image points (a plane through the source), duplicated points,
fewer than four pairs and mismatched counts are refused with a message saying what to change.

A fit far above the noise of marking points is refused too (:func:`check_fit`): a correct pairing
marked to within a few pixels leaves an RMS of about that much, so an RMS above
:func:`fit_limit_px` — max(5 px, 1 % of the image's longer side) — means a pair joins two different points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.camera import Intrinsics
from ..geometry.pose import as_pose

__all__ = [
    "LandmarkError",
    "LandmarkPose",
    "check_fit",
    "check_inputs",
    "fit_limit_px",
    "reprojection_errors",
    "solve_pnp",
]

_MIN_POINTS = 4
_COLLINEAR = 1e-3  # second singular value of the centred points relative to the first
_PLANAR = 1e-3  # third singular value below this (relative): the points are treated as coplanar
_NEAR_PLANAR = 0.1  # below this the planar start is tried as well
_FIT_LIMIT_PX = 5.0  # clicking the same point twice differs by 1-3 px; a wrong pair misses by tens
_FIT_LIMIT_FRACTION = 0.01  # of the image's longer side: a large detector's pixels are small, clicks as coarse


class LandmarkError(ValueError):
    """Landmarks that cannot determine a pose; the message says what to change."""


@dataclass
class LandmarkPose:
    camera_to_world: torch.Tensor  # (4, 4) float64 proper rigid, camera → world RAS
    rms_px: float  # root-mean-square reprojection error
    residuals_px: np.ndarray  # (N,) reprojection distance of each pair
    method: str  # the closed-form start that won: "dlt", "posit" or "planar"
    iterations: int = 0
    warnings: list[str] = field(default_factory=list)


# ---- small rigid-motion helpers (numpy) -------------------------------------------------------------


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _exp_so3(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    k = _skew(w)
    if theta < 1e-12:
        return np.eye(3) + k
    return np.eye(3) + math.sin(theta) / theta * k + (1 - math.cos(theta)) / theta**2 * (k @ k)


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _camera_to_world(rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot.T, -rot.T @ t
    return pose


def _k_matrix(intrinsics: Intrinsics) -> np.ndarray:
    return np.array([[intrinsics.fx, 0, intrinsics.cx], [0, intrinsics.fy, intrinsics.cy], [0, 0, 1.0]])


def _project(rot, t, pts3, k) -> tuple[np.ndarray, np.ndarray]:
    cam = pts3 @ rot.T + t
    img = cam @ k.T
    return img[:, :2] / img[:, 2:], cam[:, 2]


def reprojection_errors(camera_to_world, intrinsics: Intrinsics, points_2d, points_3d) -> np.ndarray:
    """Distance in pixels between each observed point and its 3D partner's projection."""
    w2c = np.linalg.inv(np.asarray(as_pose(camera_to_world).reshape(4, 4).cpu()))
    uv, _ = _project(w2c[:3, :3], w2c[:3, 3], np.asarray(points_3d, float), _k_matrix(intrinsics))
    return np.linalg.norm(uv - np.asarray(points_2d, float), axis=1)


# ---- input checks --------------------------------------------------------------------------------------


def check_inputs(points_2d, points_3d) -> tuple[np.ndarray, np.ndarray]:
    p2 = np.asarray(points_2d, dtype=np.float64)
    p3 = np.asarray(points_3d, dtype=np.float64)
    if p2.ndim != 2 or p2.shape[1] != 2:
        raise LandmarkError(f"image points must be a list of [u, v] pairs, got shape {p2.shape}")
    if p3.ndim != 2 or p3.shape[1] != 3:
        raise LandmarkError(f"CT points must be a list of [x, y, z] triples, got shape {p3.shape}")
    if len(p2) != len(p3):
        raise LandmarkError(f"{len(p2)} image points but {len(p3)} CT points; every image point needs its CT partner")
    if len(p2) < _MIN_POINTS:
        raise LandmarkError(f"a pose needs at least {_MIN_POINTS} landmark pairs, got {len(p2)}")
    if not (np.isfinite(p2).all() and np.isfinite(p3).all()):
        raise LandmarkError("landmark coordinates must be finite numbers")
    for pts, what in ((p3, "CT"), (p2, "image")):
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e300
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < 1e-6 * (1.0 + np.abs(pts).max()):
            raise LandmarkError(f"{what} points {i + 1} and {j + 1} coincide; each landmark must be a distinct point")
    return p2, p3


def _spread(pts: np.ndarray) -> np.ndarray:
    """Singular values of the centred points (how far they extend along their principal axes)."""
    return np.linalg.svd(pts - pts.mean(0), compute_uv=False)


# ---- closed-form starts ---------------------------------------------------------------------------------


def _normalising(pts: np.ndarray) -> np.ndarray:
    """Similarity that centres the points and scales their mean distance to √dim (Hartley)."""
    dim = pts.shape[1]
    centre = pts.mean(0)
    scale = math.sqrt(dim) / max(float(np.linalg.norm(pts - centre, axis=1).mean()), 1e-12)
    t = np.eye(dim + 1)
    t[:dim, :dim] *= scale
    t[:dim, dim] = -scale * centre
    return t


def _dlt(rays: np.ndarray, p3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t3 = _normalising(p3)
    x = np.c_[p3, np.ones(len(p3))] @ t3.T
    rows = []
    for (u, v), xh in zip(rays, x, strict=True):
        rows.append(np.r_[xh, np.zeros(4), -u * xh])
        rows.append(np.r_[np.zeros(4), xh, -v * xh])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    p = vt[-1].reshape(3, 4) @ t3
    if np.linalg.det(p[:, :3]) < 0:
        p = -p
    rot = _nearest_rotation(p[:, :3])
    scale = float(np.linalg.svd(p[:, :3], compute_uv=False).mean())
    return rot, p[:, 3] / scale


def _posit(rays: np.ndarray, p3: np.ndarray, iterations: int = 200) -> tuple[np.ndarray, np.ndarray]:
    ref = int(np.argmin(np.linalg.norm(p3 - p3.mean(0), axis=1)))  # the point nearest the centroid
    others = np.arange(len(p3)) != ref
    a = p3[others] - p3[ref]
    b = np.linalg.pinv(a)
    eps = np.zeros(len(a))
    x0, y0 = rays[ref]
    best = None
    for _ in range(iterations):
        i_vec = b @ (rays[others, 0] * (1 + eps) - x0)
        j_vec = b @ (rays[others, 1] * (1 + eps) - y0)
        ni, nj = np.linalg.norm(i_vec), np.linalg.norm(j_vec)
        if not (ni > 1e-12 and nj > 1e-12 and np.isfinite(ni + nj)):
            break
        z0 = 2.0 / (ni + nj)
        i_u, j_u = i_vec / ni, j_vec / nj
        k_u = np.cross(i_u, j_u)
        k_u /= max(np.linalg.norm(k_u), 1e-12)
        best = (np.vstack([i_u, j_u, k_u]), z0)
        new_eps = a @ k_u / z0
        # eps = depth offset / reference depth; <= -1 puts a point at the source: the iteration diverges
        if not np.isfinite(new_eps).all() or new_eps.min() <= -0.9:
            break
        done = np.abs(new_eps - eps).max() < 1e-12
        eps = new_eps
        if done:
            break
    if best is None:
        raise LandmarkError("the landmarks do not determine a pose (degenerate configuration)")
    rot = _nearest_rotation(best[0])
    z0 = best[1]
    return rot, np.array([x0 * z0, y0 * z0, z0]) - rot @ p3[ref]


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    ts, td = _normalising(src), _normalising(dst)
    s = np.c_[src, np.ones(len(src))] @ ts.T
    d = np.c_[dst, np.ones(len(dst))] @ td.T
    rows = []
    for (x, y, w), (u, v, _) in zip(s, d, strict=True):
        rows.append([x, y, w, 0, 0, 0, -u * x, -u * y, -u * w])
        rows.append([0, 0, 0, x, y, w, -v * x, -v * y, -v * w])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    return np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts


def _planar(rays: np.ndarray, p3: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pose from the plane's homography, and the pose with the plane tilted the other way."""
    centre = p3.mean(0)
    _, _, vt = np.linalg.svd(p3 - centre)
    e = vt.T.copy()
    e[:, 2] = np.cross(e[:, 0], e[:, 1])  # a proper plane frame
    plane = (p3 - centre) @ e[:, :2]
    h = _homography(plane, rays)
    h = h / ((np.linalg.norm(h[:, 0]) + np.linalg.norm(h[:, 1])) / 2)
    if h[2, 2] < 0:  # the plane's centre must lie in front of the source
        h = -h
    r_plane = _nearest_rotation(np.c_[h[:, 0], h[:, 1], np.cross(h[:, 0], h[:, 1])])
    rot = r_plane @ e.T
    t_centre = h[:, 2]  # camera position of the plane's centre
    poses = [(rot, t_centre - rot @ centre)]
    # Plane seen from afar: tilting its normal to the mirror side of the line of sight fits too.
    view = t_centre / np.linalg.norm(t_centre)
    normal = rot @ e[:, 2]
    axis = np.cross(normal, view)
    if np.linalg.norm(axis) > 1e-9:
        angle = 2 * math.atan2(np.linalg.norm(axis), float(normal @ view))
        flip = _exp_so3(axis / np.linalg.norm(axis) * angle)
        alt = flip @ rot
        poses.append((alt, t_centre - alt @ centre))
    return poses


# ---- Levenberg–Marquardt refinement --------------------------------------------------------------------


def _refine(rot, t, p2, p3, k, max_iterations: int = 100) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Minimise the squared reprojection error (pixels) over the pose; returns R, t, cost, iterations."""

    def residual(r, tt):
        uv, _ = _project(r, tt, p3, k)
        return (uv - p2).ravel()

    res = residual(rot, t)
    cost = float(res @ res)
    lam, iteration = 1e-3, 0
    for iteration in range(1, max_iterations + 1):
        cam = p3 @ rot.T + t
        x, y, z = cam.T
        z = np.where(np.abs(z) < 1e-9, 1e-9, z)
        d_uv = np.zeros((len(p3), 2, 3))  # d(u, v) / d(camera point)
        d_uv[:, 0, 0], d_uv[:, 0, 2] = k[0, 0] / z, -k[0, 0] * x / z**2
        d_uv[:, 1, 1], d_uv[:, 1, 2] = k[1, 1] / z, -k[1, 1] * y / z**2
        # camera point after the update exp(ω)·p + δ: d/dω = −[p]×, d/dδ = I
        d_pose = np.concatenate([-np.stack([_skew(p) for p in cam]), np.broadcast_to(np.eye(3), (len(cam), 3, 3))], 2)
        jac = (d_uv @ d_pose).reshape(-1, 6)
        jtj, jtr = jac.T @ jac, jac.T @ res
        improved = False
        while lam < 1e12:
            step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jtr)
            step_rot = _exp_so3(step[:3])
            new_rot, new_t = step_rot @ rot, step_rot @ t + step[3:]
            new_res = residual(new_rot, new_t)
            new_cost = float(new_res @ new_res)
            if new_cost < cost:
                improved = True
                break
            lam *= 10
        if not improved:
            break
        gain = cost - new_cost
        rot, t, res, cost = _nearest_rotation(new_rot), new_t, new_res, new_cost
        lam = max(lam / 10, 1e-12)
        if gain <= 1e-14 * (1 + cost) or np.abs(step).max() < 1e-13:
            break
    return rot, t, cost, iteration


def _starts(rays, p3, planar: bool, near_planar: bool) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    """Every closed-form start that suits the configuration (one failing does not stop the others)."""
    makers = []
    if not planar:
        if len(p3) >= 6:
            makers.append(("dlt", lambda: [_dlt(rays, p3)]))
        makers.append(("posit", lambda: [_posit(rays, p3)]))
    if near_planar:
        makers.append(("planar", lambda: _planar(rays, p3)))
    starts = []
    for method, make in makers:
        try:
            starts += [(method, pose) for pose in make()]
        except (np.linalg.LinAlgError, LandmarkError):
            continue
    return starts


def solve_pnp(points_2d, points_3d, intrinsics: Intrinsics, *, max_iterations: int = 100) -> LandmarkPose:
    """Pose of the C-arm from ≥ 4 pairs of X-ray pixels and CT points (RAS mm), see the module docstring."""
    p2, p3 = check_inputs(points_2d, points_3d)
    s3, s2 = _spread(p3), _spread(p2)
    if s3[1] < _COLLINEAR * s3[0]:
        raise LandmarkError("the CT points lie on one line; choose landmarks that span an area or a volume")
    if s2[1] < _COLLINEAR * s2[0]:
        raise LandmarkError(
            "the image points lie on one line (their CT points share a plane with the X-ray source); "
            "choose landmarks that spread out on the image"
        )
    k = _k_matrix(intrinsics)
    rays = (np.c_[p2, np.ones(len(p2))] @ np.linalg.inv(k).T)[:, :2]
    planar = s3[2] < _PLANAR * s3[0]
    starts = _starts(rays, p3, planar=planar, near_planar=s3[2] < _NEAR_PLANAR * s3[0])
    best = None
    for method, (rot, t) in starts:
        if not np.isfinite(rot).all() or not np.isfinite(t).all():
            continue
        rot, t, cost, iterations = _refine(rot, t, p2, p3, k, max_iterations)
        _, depth = _project(rot, t, p3, k)
        if (depth <= 0).any():
            continue  # a pose with landmarks behind the source is no solution
        if best is None or cost < best[2] - 1e-12:
            best = (rot, t, cost, iterations, method)
    if best is None:
        raise LandmarkError("no pose puts every CT landmark in front of the X-ray source; check that the pairs match")
    rot, t, cost, iterations, method = best
    pose = _camera_to_world(rot, t)
    residuals = reprojection_errors(pose, intrinsics, p2, p3)
    out = LandmarkPose(as_pose(pose, "the landmark pose"), float(np.sqrt(np.mean(residuals**2))), residuals, method, iterations)
    if len(p2) == _MIN_POINTS and not planar:
        out.warnings.append("4 non-coplanar landmarks fit exactly whatever their errors; add more to check them")
    return out


def fit_limit_px(intrinsics: Intrinsics) -> float:
    """The largest RMS reprojection error a correct pairing leaves: max(5 px, 1 % of the longer image side)."""
    return max(_FIT_LIMIT_PX, _FIT_LIMIT_FRACTION * max(intrinsics.width, intrinsics.height))


def check_fit(fit: LandmarkPose, intrinsics: Intrinsics, source: str = "the landmarks") -> None:
    """Refuse a fit whose RMS exceeds :func:`fit_limit_px`: the pairs do not describe one pose."""
    limit = fit_limit_px(intrinsics)
    if fit.rms_px <= limit:
        return
    worst = int(np.argmax(fit.residuals_px))
    raise LandmarkError(
        f"{source}: the landmarks fit with {fit.rms_px:.1f} px RMS, more than the {limit:.1f} px a correct pairing "
        f"leaves on a {intrinsics.width}×{intrinsics.height} X-ray (pair {worst + 1} is off by "
        f"{fit.residuals_px[worst]:.0f} px); check that each image point and its CT point mark the same landmark"
    )
