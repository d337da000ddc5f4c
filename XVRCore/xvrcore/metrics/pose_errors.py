"""Registration errors of a pose (xvr paper, Methods M.2).

Every metric takes ``world_to_camera`` transforms (proper, ``(B, 4, 4)``; conventions in
:mod:`xvrcore.conventions`), intrinsics and 3-D target points in world mm:

* :func:`mtre` — mean target registration error (mm): distance between the targets mapped
  into the camera frame by the true and the estimated pose, ``mean ‖T̂ X − T X‖``;
* :func:`mpe` — mean projection error (mm on the detector plane): pixel distance between the
  projections of the targets times the pixel size (the paper's mPE, Eq. 16);
* :func:`mrpe` — mean reprojection error in pixels;
* :func:`mrpe_detector_mm` — the 2.5-D variant of the paper/xvr: targets projected by each pose
  and lifted back onto that pose's detector plane, distance in mm;
* :func:`dgeo` — double geodesic distance (Eq. 18–21): rotation arc on a sphere of radius
  sdd/2 combined with the distance between the translations ``t = Rᵀ·(source − centre)``;
* :func:`success_rate`, :func:`survival_curve`, :func:`survival_auc` — summaries of many errors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry.camera import project
from ..geometry.rotations import geodesic_angle, invert_rigid

__all__ = ["dgeo", "mpe", "mrpe", "mrpe_detector_mm", "mtre", "success_rate", "survival_auc", "survival_curve"]


def _batch(transform: torch.Tensor) -> torch.Tensor:
    return transform.reshape(-1, 4, 4)


def mtre(w2c_true: torch.Tensor, w2c_est: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean target registration error (mm), ``(B,)``."""
    t, e = _batch(w2c_true), _batch(w2c_est)
    pts = points.to(t.dtype)
    a = pts @ t[:, :3, :3].transpose(-1, -2) + t[:, None, :3, 3]
    b = pts @ e[:, :3, :3].transpose(-1, -2) + e[:, None, :3, 3]
    return (a - b).norm(dim=-1).mean(-1)


def mrpe(w2c_true: torch.Tensor, w2c_est: torch.Tensor, intrinsics, points: torch.Tensor) -> torch.Tensor:
    """Mean reprojection error in pixels, ``(B,)``."""
    a, _ = project(points, w2c_true, intrinsics)
    b, _ = project(points, w2c_est, intrinsics)
    return (a - b).norm(dim=-1).mean(-1)


def mpe(w2c_true, w2c_est, intrinsics, points, pixel_spacing: tuple[float, float]) -> torch.Tensor:
    """Mean projection error in mm on the detector (pixel offsets × (column, row) spacing), ``(B,)``."""
    a, _ = project(points, w2c_true, intrinsics)
    b, _ = project(points, w2c_est, intrinsics)
    spacing = torch.tensor(pixel_spacing, dtype=a.dtype, device=a.device)
    return ((a - b) * spacing).norm(dim=-1).mean(-1)


def _lift_to_detector(w2c: torch.Tensor, intrinsics, points: torch.Tensor, sdd: float) -> torch.Tensor:
    """World position where each target's projection lands on the pose's detector plane."""
    _, depth = project(points, w2c, intrinsics)
    pose = _batch(w2c)
    cam = (points.to(pose.dtype) @ pose[:, :3, :3].transpose(-1, -2) + pose[:, None, :3, 3]) * (sdd / depth[..., None])
    return (cam - pose[:, None, :3, 3]) @ pose[:, :3, :3]  # back to world: Rᵀ (x − t)


def mrpe_detector_mm(w2c_true, w2c_est, intrinsics, points, sdd: float) -> torch.Tensor:
    """xvr's 2.5-D mRPE (mm): distance between the detector-plane points of the two poses, ``(B,)``."""
    a = _lift_to_detector(_batch(w2c_true), intrinsics, points, sdd)
    b = _lift_to_detector(_batch(w2c_est), intrinsics, points, sdd)
    return (a - b).norm(dim=-1).mean(-1)


def dgeo(
    w2c_true: torch.Tensor, w2c_est: torch.Tensor, sdd: float, center
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double geodesic distance: ``(rotation arc mm, translation mm, dGeo mm)``, each ``(B,)``.

    ``center`` is the isocentre (RAS mm) of the paper's frame, usually the volume centre;
    the translation term depends on it, so compare numbers computed with the same centre.
    """
    t, e = invert_rigid(_batch(w2c_true)), invert_rigid(_batch(w2c_est))  # camera_to_world
    c = torch.as_tensor(center, dtype=t.dtype, device=t.device)
    trans_t = ((t[:, :3, 3] - c)[:, None] @ t[:, :3, :3])[:, 0]  # Rᵀ (source − centre)
    trans_e = ((e[:, :3, 3] - c)[:, None] @ e[:, :3, :3])[:, 0]
    rot = (sdd / 2) * geodesic_angle(t[:, :3, :3], e[:, :3, :3])
    xyz = (trans_t - trans_e).norm(dim=-1)
    return rot, xyz, (rot**2 + xyz**2).sqrt()


def success_rate(errors, threshold: float = 1.0) -> float:
    """Fraction of errors strictly below ``threshold`` (sub-millimetre rate for 1 mm)."""
    err = np.asarray(errors, dtype=np.float64)
    return float((err < threshold).mean()) if err.size else math.nan


def survival_curve(errors, thresholds) -> np.ndarray:
    """Fraction of errors above each threshold (decreasing from 1 toward 0)."""
    err = np.sort(np.asarray(errors, dtype=np.float64))
    return 1.0 - np.searchsorted(err, np.asarray(thresholds, dtype=np.float64), side="right") / max(len(err), 1)


def survival_auc(errors, max_error: float = 10.0) -> float:
    """Area under the survival curve on [0, max_error], normalised to [0, 1] (0 = all errors 0).

    Equals ``mean(min(error, max_error)) / max_error``; lower is better. ``1 - survival_auc`` is
    the area under the cumulative success curve.
    """
    err = np.asarray(errors, dtype=np.float64)
    return float(np.minimum(err, max_error).mean() / max_error) if err.size else math.nan
