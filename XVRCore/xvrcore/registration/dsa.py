"""DSA against a vessel-only volume: where the similarity looks (the dilated projection of the vessels).

A DSA is the mask-subtracted log image (:func:`xvrcore.xray.read_xray` with ``mask_frame``, or a
subtracted file): the contrast-filled vessels on a background of subtraction noise. Its partner DRR is
rendered from the vessels alone (an MRA's bright vessels, or a vessel segmentation:
:mod:`xvrcore.volume.vessels`). Almost all pixels of both are background, where the DRR is exactly 0
and the DSA is noise; left in, that noise dominates the gradient term of the similarity. So the
similarity is restricted to where vessels can be: the projection of the vessels at the start pose,
dilated by the distance they may still move (at the volume centre: :data:`DSA_MARGIN_MM`, or the
reach of the settings' searches if larger), within the exposed field. A second, shorter pass
re-centres that region on the first result with a tighter margin.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..drr import DRRVolume, render
from ..geometry.camera import Intrinsics
from .optimizer import register
from .settings import RegistrationResult, RegistrationSettings

__all__ = ["DSA_MARGIN_MM", "DSA_REFINE_MARGIN_MM", "VESSEL_THRESHOLD", "register_dsa", "search_margin",
           "vessel_region"]

DSA_MARGIN_MM = 12.0  # how far (at the volume centre) the vessels may lie from the start's projection
DSA_REFINE_MARGIN_MM = 4.0  # around the first pass's result, which is within a few mm
VESSEL_THRESHOLD = 0.05  # a DRR pixel shows a vessel above this fraction of the DRR's 99th percentile


def vessel_region(volume: DRRVolume, camera_to_world: torch.Tensor, intrinsics: Intrinsics,
                  exposure: torch.Tensor | None = None, margin_mm: float = DSA_MARGIN_MM) -> torch.Tensor:
    """``(H, W)`` float mask: the vessels' projection at the pose, dilated by ``margin_mm``, within ``exposure``."""
    pose = torch.as_tensor(camera_to_world, dtype=torch.float64).reshape(4, 4)
    with torch.no_grad():
        drr = render(volume, pose.to(volume.device, volume.dtype), intrinsics)[0, 0].float()
    positive = drr[drr > 0]
    if positive.numel() == 0:
        raise ValueError("the vessels do not project onto the X-ray at the start pose; check the start pose")
    vessels = drr > VESSEL_THRESHOLD * torch.quantile(positive, 0.99)
    distance = float((pose[:3, 3].to(volume.center.device) - volume.center).norm())
    radius = max(1, round(margin_mm * min(abs(intrinsics.fx), abs(intrinsics.fy)) / max(distance, 1.0)))
    region = F.max_pool2d(vessels[None, None].float(), 2 * radius + 1, stride=1, padding=radius)[0, 0]
    if exposure is not None:
        region = region * torch.as_tensor(exposure, device=region.device).float()
    return region


def search_margin(settings: RegistrationSettings) -> float:
    """How far (mm at the volume centre) the vessels may move in a registration with ``settings``."""
    searches = [s for s in (settings.search, *settings.retry_searches) if s is not None]
    reach = max((math.hypot(s.translation_mm, s.translation_mm) for s in searches), default=0.0)
    return max(DSA_MARGIN_MM, reach)


def register_dsa(volume: DRRVolume, dsa: torch.Tensor, intrinsics: Intrinsics, initial_camera_to_world: torch.Tensor,
                 *, mask: torch.Tensor | None = None, center: torch.Tensor | None = None,
                 settings: RegistrationSettings | None = None, margin_mm: float | None = None,
                 refine_margin_mm: float = DSA_REFINE_MARGIN_MM, progress=None,
                 should_stop=None) -> RegistrationResult:
    """:func:`~xvrcore.registration.optimizer.register` of a DSA on the vessels' region (see the module docstring).

    ``margin_mm``: the first pass's margin (default: :data:`DSA_MARGIN_MM` or the searches' reach).
    The second pass starts from the first result, without a search, on the finest stage only.
    """
    settings = settings or RegistrationSettings()
    if margin_mm is None:
        margin_mm = search_margin(settings)
    start = torch.as_tensor(initial_camera_to_world, dtype=torch.float64).reshape(4, 4)
    region = vessel_region(volume, start, intrinsics, mask, margin_mm)
    first = register(volume, dsa, intrinsics, start, mask=region, center=center, settings=settings,
                     progress=progress, should_stop=should_stop)
    if should_stop is not None and should_stop():
        return first
    refine = replace(settings, stages=settings.stages[-1:], search=None, retry_searches=())
    tight = vessel_region(volume, first.camera_to_world, intrinsics, mask, refine_margin_mm)
    second = register(volume, dsa, intrinsics, first.camera_to_world, mask=tight, center=center, settings=refine,
                      progress=progress, should_stop=should_stop)
    second.initial_camera_to_world = start
    second.initial_similarity = first.initial_similarity
    second.stages = first.stages + second.stages
    second.trajectory = first.trajectory + second.trajectory
    second.attempts = first.attempts
    second.seconds += first.seconds
    return second
