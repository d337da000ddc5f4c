"""One registration problem, and the clock that bounds it: what the search and the stages share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..drr import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..metrics.similarity import registration_similarity
from .resolution import stage_inputs
from .settings import RegistrationSettings, Stage

__all__ = ["Clock", "Problem"]


@dataclass(frozen=True)
class Problem:
    """The volume, the X-ray ``(H, W)`` with its intrinsics and exposure mask, and the rotation centre (mm)."""

    volume: DRRVolume
    xray: torch.Tensor
    intrinsics: Intrinsics
    mask: torch.Tensor | None
    center: torch.Tensor
    method: str = "trilinear"

    def at(self, stage: Stage):
        """The X-ray, intrinsics and mask at ``stage``'s resolution."""
        return stage_inputs(self.xray, self.intrinsics, self.mask, stage.size)

    def render(self, poses: torch.Tensor, k: Intrinsics, stage: Stage) -> torch.Tensor:
        """DRRs ``(B, 1, h, w)`` of ``poses`` ``(B, 4, 4)`` (or ``(4, 4)``) at a stage's CT level."""
        return render(self.volume, poses.to(self.volume.dtype), k, method=self.method, lod_bias=stage.lod_bias)

    def similarity(self, pose: torch.Tensor, stage: Stage) -> float:
        """The objective at ``stage``'s resolution and weighting, without gradients."""
        image, k, mask = self.at(stage)
        with torch.no_grad():
            return float(registration_similarity(self.render(pose, k, stage), image, mask, stage.similarity_weight)[0])


@dataclass(frozen=True)
class Clock:
    """When to stop: the time budget of the whole registration (searches and retries included), or a
    cancel request. Polled by the search and the stages (see :mod:`xvrcore.registration.optimizer`)."""

    settings: RegistrationSettings
    started: float
    should_stop: Callable[[], bool] | None = None

    @classmethod
    def start(cls, settings: RegistrationSettings, should_stop=None) -> Clock:
        return cls(settings, time.perf_counter(), should_stop)

    def elapsed(self) -> float:
        """Seconds since the registration started."""
        return time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        budget = self.settings.time_budget_s
        return budget is not None and self.elapsed() > budget

    def stopped(self) -> bool:
        return self.out_of_time() or (self.should_stop is not None and self.should_stop())
