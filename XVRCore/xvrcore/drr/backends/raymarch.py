"""Uniform trilinear samples every ``step`` voxels along each ray, clipped to the volume box (a reference).

Slower than the slice-wise integrators (3-D ``grid_sample``, eight voxels a sample); used to validate them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..pyramid import PyramidLevel

__all__ = ["integrate_raymarch"]


def _box_clip(lvl: PyramidLevel, o, d):
    """Ray parameters where each ray enters and leaves the voxel box [-½, N-½]³ (t >= 0)."""
    sizes = torch.tensor(lvl.shape_ijk, dtype=o.dtype, device=o.device)
    safe = torch.where(d == 0, torch.full_like(d, 1e-30), d)
    t1 = (-0.5 - o) / safe
    t2 = (sizes - 0.5 - o) / safe
    t_near = torch.minimum(t1, t2).amax(-1).clamp_min(0)
    t_far = torch.maximum(t1, t2).amin(-1)
    return t_near, torch.maximum(t_far, t_near)


def integrate_raymarch(lvl: PyramidLevel, axis: int, o, d, length, step: float = 0.5) -> torch.Tensor:
    """Line integrals ``(C, N)`` of rays ``o + t d`` (index frame) by uniform samples; ``axis`` unused."""
    t_near, t_far = _box_clip(lvl, o, d)
    per_voxel = d.detach().abs().amax(-1)  # index units per unit t along the fastest axis
    n_samples = math.ceil(float(((t_far - t_near).detach() * per_voxel).max()) / step) if o.shape[0] else 0
    n_samples = max(n_samples, 1)
    dt = (t_far - t_near) / n_samples
    m = torch.arange(n_samples, dtype=o.dtype, device=o.device) + 0.5
    t = t_near[None] + m[:, None] * dt[None]  # (S, n)
    pts = o[None] + t[..., None] * d[None]  # (S, n, 3) index (i, j, k)
    sizes = torch.tensor(lvl.shape_ijk, dtype=o.dtype, device=o.device)
    grid = pts * (2.0 / (sizes - 1)) - 1
    vals = F.grid_sample(lvl.data[None], grid[None, :, :, None], mode="bilinear", padding_mode="border", align_corners=True)
    return vals[0, :, :, :, 0].sum(1) * (dt * length)  # (C, n)
