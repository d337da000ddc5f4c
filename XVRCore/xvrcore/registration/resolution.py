"""The X-ray at a stage's resolution: area-downsampled with exactly rescaled intrinsics and exposure mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.camera import Intrinsics

__all__ = ["downsample_exposure_mask", "downsample_xray", "stage_inputs"]


def downsample_xray(image: torch.Tensor, intrinsics: Intrinsics, longer_side: int) -> tuple[torch.Tensor, Intrinsics]:
    """Area-average an image ``(..., H, W)`` so its longer side has ``longer_side`` pixels (never upsampled).

    Returns the image with the matching intrinsics.
    """
    h, w = image.shape[-2:]
    scale = max(1.0, max(h, w) / longer_side)
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    if size == (h, w):
        return image, intrinsics
    small = F.interpolate(image.reshape(1, -1, h, w), size=size, mode="area").reshape(*image.shape[:-2], *size)
    return small, intrinsics.resized(size[1], size[0])


def downsample_exposure_mask(mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """An exposure mask ``(H, W)`` on a coarser grid: 1 only where the whole coarse pixel was exposed."""
    if mask is None:
        return None
    frac = F.interpolate(mask.reshape(1, 1, *mask.shape[-2:]).float(), size=size, mode="area")[0, 0]
    return (frac > 0.999).float()  # only pixels fully inside the exposed field


def stage_inputs(xray: torch.Tensor, intrinsics: Intrinsics, mask: torch.Tensor | None, size: int):
    """The X-ray, its intrinsics and its exposure mask at a stage's resolution (longer side ``size``)."""
    image, k = downsample_xray(xray, intrinsics, size)
    return image, k, downsample_exposure_mask(mask, tuple(image.shape[-2:]))
