"""The attenuation volume a DRR is rendered from: cropped to its content and kept as a pyramid.

Cropping to the non-empty box is exact (empty voxels contribute nothing). Each pyramid level halves
the finest axes while conserving the line integrals, so a render can pick the level whose voxels
match the detector pixel's footprint at the volume (:func:`xvrcore.drr.render`): a 128×128 image does
not march through a 512³ grid, and does not alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DRRVolume", "PyramidLevel", "coarser_level"]

@dataclass
class PyramidLevel:
    """One level of the volume pyramid: ``data`` is ``(C, K, J, I)``, ``ijk_to_world`` maps (i, j, k)."""

    data: torch.Tensor
    ijk_to_world: torch.Tensor
    _stacks: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.world_to_ijk = torch.linalg.inv(self.ijk_to_world)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        _, k, j, i = self.data.shape
        return i, j, k

    @property
    def spacing(self) -> torch.Tensor:
        return self.ijk_to_world[:3, :3].norm(dim=0)

    def stack(self, axis: int) -> torch.Tensor:
        """The volume as slices across index ``axis`` (0=i, 1=j, 2=k): ``(N_axis, C, A, B)``.

        ``B`` is the lower and ``A`` the higher of the two remaining index axes, so a
        ``grid_sample`` coordinate (x, y) is (index along B, index along A).
        """
        if axis not in self._stacks:
            order = {0: (3, 0, 1, 2), 1: (2, 0, 1, 3), 2: (1, 0, 2, 3)}[axis]
            self._stacks[axis] = self.data.permute(*order).contiguous()
        return self._stacks[axis]


def coarser_level(level: PyramidLevel) -> PyramidLevel | None:
    """Halve the finest axes (those within 1.5× of the finest spacing), conserving the integral."""
    spacing = level.spacing
    sizes = level.shape_ijk
    halve = [bool(spacing[a] <= 1.5 * spacing.min() and sizes[a] >= 4) for a in range(3)]
    if not any(halve):
        return None
    kernel = tuple(2 if halve[a] else 1 for a in (2, 1, 0))  # data order (k, j, i)
    pad = []
    for a in (0, 1, 2):  # F.pad order: last dim (i) first
        pad += [0, sizes[a] % 2 if halve[a] else 0]
    data = F.avg_pool3d(F.pad(level.data[None], pad)[0], kernel, kernel)
    affine = level.ijk_to_world.clone()
    scale = torch.tensor([2.0 if h else 1.0 for h in halve], dtype=torch.float64, device=affine.device)
    shift = torch.tensor([0.5 if h else 0.0 for h in halve], dtype=torch.float64, device=affine.device)
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ shift
    affine[:3, :3] = affine[:3, :3] * scale
    return PyramidLevel(data.contiguous(), affine)


class DRRVolume:
    """An attenuation volume (1/mm, ``>= 0``) prepared for rendering.

    ``data``: ``(K, J, I)`` or ``(C, K, J, I)`` array (SimpleITK order, ``data[k, j, i]``); several
    channels render as several images at once (e.g. one per anatomical structure).
    ``affine``: 4×4 voxel index ``(i, j, k)`` → world RAS mm.
    ``crop_threshold``: voxels ``<=`` this value are empty; the volume is cropped to the bounding box
    of the others (exact for 0, since empty voxels contribute nothing).
    """

    def __init__(
        self,
        data,
        affine,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        crop_threshold: float | None = 0.0,
        max_levels: int = 6,
    ) -> None:
        tensor = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
        if tensor.dim() == 3:
            tensor = tensor[None]
        if tensor.dim() != 4:
            raise ValueError(f"volume data must be (K, J, I) or (C, K, J, I), got shape {tuple(tensor.shape)}")
        tensor = tensor.to(device=device, dtype=dtype)
        if not torch.isfinite(tensor).all():
            raise ValueError("volume data contains NaN or infinite values")
        affine = torch.as_tensor(np.asarray(affine, dtype=np.float64)).to(device)
        if affine.shape != (4, 4) or abs(float(torch.det(affine[:3, :3]))) < 1e-12:
            raise ValueError("affine must be an invertible 4×4 matrix")
        self.full_shape_ijk = tuple(tensor.shape[:0:-1])
        self.full_affine = affine
        if crop_threshold is not None:
            tensor, affine = _crop_to_content(tensor, affine, crop_threshold)
        self.levels: list[PyramidLevel] = [PyramidLevel(tensor, affine)]
        self.max_levels = max_levels

    @classmethod
    def from_volume(cls, volume, **kwargs) -> DRRVolume:
        """From an :class:`xvrcore.volume.Volume` holding attenuation values."""
        return cls(volume.data, volume.affine, **kwargs)

    @property
    def channels(self) -> int:
        return self.levels[0].data.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.levels[0].data.dtype

    @property
    def device(self) -> torch.device:
        return self.levels[0].data.device

    @property
    def center(self) -> torch.Tensor:
        """World position of the centre of the (uncropped) voxel box."""
        mid = torch.tensor([(n - 1) / 2 for n in self.full_shape_ijk] + [1.0], dtype=torch.float64)
        return (self.full_affine @ mid.to(self.full_affine.device))[:3]

    def level(self, index: int) -> PyramidLevel:
        while len(self.levels) <= index and len(self.levels) < self.max_levels:
            coarser = coarser_level(self.levels[-1])
            if coarser is None:
                break
            self.levels.append(coarser)
        return self.levels[min(index, len(self.levels) - 1)]

    def choose_level(self, footprint_mm: float, lod_bias: float = 1.0) -> int:
        """The coarsest level whose finest voxel spacing is at most ``lod_bias × footprint``."""
        chosen = 0
        for index in range(1, self.max_levels):
            lvl = self.level(index)
            if lvl is self.levels[chosen] or float(lvl.spacing.min()) > lod_bias * footprint_mm:
                break
            chosen = index
        return chosen


def _crop_to_content(data: torch.Tensor, affine: torch.Tensor, threshold: float):
    occupied = (data > threshold).any(0)  # (K, J, I)
    if not occupied.any():
        raise ValueError("the volume is empty: no voxel above the crop threshold")
    bounds = []
    for dim in range(3):
        other = tuple(d for d in range(3) if d != dim)
        idx = occupied.any(other[1]).any(other[0]).nonzero()[:, 0]
        # One voxel of margin keeps every axis >= 2 voxels (grid_sample needs that to tell
        # inside from outside) and costs nothing: the margin is empty.
        bounds.append((max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, occupied.shape[dim])))
    (k0, k1), (j0, j1), (i0, i1) = bounds
    shifted = affine.clone()
    shifted[:3, 3] = affine[:3, :3] @ torch.tensor([i0, j0, k0], dtype=affine.dtype, device=affine.device) + affine[:3, 3]
    return data[:, k0:k1, j0:j1, i0:i1].contiguous(), shifted
