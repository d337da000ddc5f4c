"""Registration error metrics (xvr paper, Methods M.2) and image similarities.

Pose metrics take ``world_to_camera`` transforms (proper, ``(B, 4, 4)``; see :mod:`xvrcore.geometry`),
intrinsics and 3-D target points in world mm:

* :func:`mtre` — mean target registration error (mm): distance between the targets mapped
  into the camera frame by the true and the estimated pose, ``mean ‖T̂ X − T X‖``;
* :func:`mpe` — mean projection error (mm on the detector plane): pixel distance between the
  projections of the targets times the pixel size (the paper's mPE, Eq. 16);
* :func:`mrpe` — mean reprojection error in pixels;
* :func:`mrpe_detector_mm` — the 2.5-D variant of the paper/xvr: targets projected by each pose
  and lifted back onto that pose's detector plane, distance in mm;
* :func:`dgeo` — double geodesic distance (Eq. 18–21): rotation arc on a sphere of radius
  sdd/2 combined with the distance between the translations ``t = Rᵀ·(source − centre)``.

Image similarities work on ``(B, C, H, W)`` tensors (or ``(H, W)``), are differentiable,
scale-invariant, accept an optional mask (1 = use the pixel, e.g. to exclude collimation) and
return one value per batch item in [-1, 1]. Patch statistics over all overlapping windows are
computed with box filters, so memory stays O(pixels) whatever the patch size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import project
from .rotations import geodesic_angle, invert_rigid

_EPS = 1e-4  # relative to unit image variance


# ---- pose errors ---------------------------------------------------------------------------------


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


# ---- image similarity ----------------------------------------------------------------------------


def _as_bchw(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:
        return x[:, None]
    return x


def _prepare(a, b, mask):
    a, b = _as_bchw(a), _as_bchw(b)
    a, b = torch.broadcast_tensors(a, b)
    w = torch.ones_like(a[:, :1]) if mask is None else _as_bchw(mask.to(a.dtype)).expand(a.shape[0], 1, *a.shape[-2:])
    return _standardise(a, w), _standardise(b, w), w


def _standardise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked pixels of each image (makes eps scale-free)."""
    total = w.sum((-1, -2), keepdim=True).clamp_min(1e-12)
    mean = (x * w).sum((-1, -2), keepdim=True) / total
    var = (((x - mean) ** 2) * w).sum((-1, -2), keepdim=True) / total
    return (x - mean) / (var + 1e-12).sqrt()


def ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global normalised cross-correlation, ``(B,)`` (averaged over channels)."""
    a, b, w = _prepare(a, b, mask)
    total = w.sum((-1, -2)).clamp_min(1e-12)
    return ((a * b * w).sum((-1, -2)) / total).mean(1)  # both are standardised: this is the NCC


def patch_ncc(a: torch.Tensor, b: torch.Tensor, patch_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NCC over all overlapping ``patch_size × patch_size`` windows, ``(B,)``.

    With a mask, each window's statistics use only its masked pixels and windows count in
    proportion to their masked fraction (windows less than half covered are ignored).
    """
    a, b, w = _prepare(a, b, mask)
    k = patch_size

    def box(x):
        return F.avg_pool2d(x, k, stride=1)

    sw = box(w)
    safe = sw.clamp_min(1e-6)
    ma, mb = box(a * w) / safe, box(b * w) / safe
    va = (box(a * a * w) / safe - ma * ma).clamp_min(0)
    vb = (box(b * b * w) / safe - mb * mb).clamp_min(0)
    cov = box(a * b * w) / safe - ma * mb
    local = cov / ((va + _EPS) * (vb + _EPS)).sqrt()
    weight = torch.where(sw >= 0.5, sw, torch.zeros_like(sw))
    return ((local * weight).sum((-1, -2)) / weight.sum((-1, -2)).clamp_min(1e-12)).mean(1)


def multiscale_ncc(a, b, patch_sizes=(None, 9), weights=(0.5, 0.5), mask=None) -> torch.Tensor:
    """Weighted sum of global (``None``) and patchwise NCC — the paper's mNCC."""
    total = 0
    for size, weight in zip(patch_sizes, weights, strict=True):
        total = total + weight * (ncc(a, b, mask) if size is None else patch_ncc(a, b, size, mask))
    return total


_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def image_gradients(x: torch.Tensor, sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives along columns and rows (same size; borders replicated)."""
    x = _as_bchw(x)
    if sigma > 0:
        x = _gaussian_blur(x, sigma)
    c = x.shape[1]
    kx = _SOBEL_X.to(x.dtype).to(x.device).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kx, groups=c)
    gy = F.conv2d(padded, kx.transpose(-1, -2), groups=c)
    return gx, gy


def gradient_ncc(a, b, patch_size: int | None = 11, sigma: float = 0.0, mask=None) -> torch.Tensor:
    """NCC of Sobel gradient images (mean of the column and row derivatives), ``(B,)``.

    With a mask, pixels next to the mask border are dropped too, so the edge of a collimator
    does not count as anatomy.
    """
    if mask is not None:
        mask = -F.max_pool2d(-_as_bchw(mask.float()), 3, stride=1, padding=1)  # erode by one pixel
    gxa, gya = image_gradients(a, sigma)
    gxb, gyb = image_gradients(b, sigma)
    score = ncc if patch_size is None else (lambda x, y, m: patch_ncc(x, y, patch_size, m))
    return 0.5 * (score(gxa, gxb, mask) + score(gya, gyb, mask))


def registration_similarity(a, b, mask=None, weight: float = 0.5) -> torch.Tensor:
    """The paper's refinement objective: ``weight · mNCC + (1 − weight) · gradNCC``.

    mNCC = ½ global NCC + ½ NCC over 9×9 patches; gradNCC over 11×11 patches without blur.
    """
    return weight * multiscale_ncc(a, b, mask=mask) + (1 - weight) * gradient_ncc(a, b, 11, 0.0, mask)
