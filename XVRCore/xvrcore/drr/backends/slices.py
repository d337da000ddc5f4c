"""What the slice-by-slice integrators share: rays in the index frame of the slices they cross.

A ray whose dominant index axis is ``axis`` crosses every slice across that axis once; its in-plane
coordinates change linearly from slice to slice. These helpers give those coordinates (normalised for
``grid_sample``), form them for all slices in one pass over memory, and keep only the slices in front
of the source.
"""

from __future__ import annotations

import torch

from ..pyramid import PyramidLevel

__all__ = ["OTHER_AXES", "affine_in_k", "front_weights", "plane_coordinates"]

# In-plane index axes (in increasing order) for each marching axis; the first is grid_sample's x.
OTHER_AXES = ((1, 2), (0, 2), (0, 1))


def plane_coordinates(lvl: PyramidLevel, axis: int, o: torch.Tensor, d: torch.Tensor):
    """Per ray: in-plane index coordinates at slice 0 and their change per slice (normalised)."""
    b, c = OTHER_AXES[axis]
    sizes = lvl.shape_ijk
    inv = 1.0 / d[:, axis]
    slope = d[:, [b, c]] * inv[:, None]
    base = o[:, [b, c]] - o[:, axis : axis + 1] * slope
    scale = torch.tensor([2.0 / (sizes[b] - 1), 2.0 / (sizes[c] - 1)], dtype=o.dtype, device=o.device)
    return base, slope, scale, inv


def affine_in_k(start: torch.Tensor, per_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``start + k · per_k`` for every k, ``(N, n, 2)``, as one rank-1 GEMM (a single pass over memory)."""
    flat = torch.addmm(start.reshape(1, -1), k[:, None], per_k.reshape(1, -1))
    return flat.reshape(k.shape[0], *start.shape)


def front_weights(o_axis: torch.Tensor, d_axis: torch.Tensor, n_slices: int):
    """Keep only slices in front of the source: a per-ray factor, or per-slice weights if the
    source lies inside the slice range (rare: a source inside the volume box)."""
    direction = torch.sign(d_axis)
    inside = (o_axis > -1) & (o_axis < n_slices)
    if bool(inside.any()):
        k = torch.arange(n_slices, dtype=o_axis.dtype, device=o_axis.device)
        return ((k[:, None] - o_axis[None]) * direction[None] > 0).to(o_axis.dtype)  # (N, n)
    return ((-o_axis) * direction > 0).to(o_axis.dtype)  # (n,): slice 0 in front => all are
