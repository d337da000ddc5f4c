"""One registration problem, and the clock that bounds it: what the search and the stages share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..drr import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..metrics.similarity import RegistrationObjective
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
    # per (stage size, similarity weight): the stage's intrinsics and the objective against its X-ray
    _objectives: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def at(self, stage: Stage):
        """The X-ray, intrinsics and mask at ``stage``'s resolution."""
        return stage_inputs(self.xray, self.intrinsics, self.mask, stage.size)

    def objective(self, stage: Stage) -> tuple[Intrinsics, RegistrationObjective]:
        """The intrinsics at ``stage``'s resolution and the similarity against the X-ray there; the X-ray's
        half of the similarity is computed once per stage (:class:`~xvrcore.metrics.RegistrationObjective`)."""
        key = (stage.size, stage.similarity_weight)
        if key not in self._objectives:
            image, k, mask = self.at(stage)
            self._objectives[key] = (k, RegistrationObjective(image, mask, stage.similarity_weight))
        return self._objectives[key]

    def score(self, poses: torch.Tensor, stage: Stage) -> torch.Tensor:
        """The objective ``(B,)`` of the DRRs of ``poses`` ``(B, 4, 4)`` (or ``(4, 4)``) at ``stage``
        (differentiable unless called under ``no_grad``)."""
        k, objective = self.objective(stage)
        return objective(self.render(poses, k, stage))

    def render(self, poses: torch.Tensor, k: Intrinsics, stage: Stage) -> torch.Tensor:
        """DRRs ``(B, 1, h, w)`` of ``poses`` ``(B, 4, 4)`` (or ``(4, 4)``) at a stage's CT level."""
        return render(self.volume, poses.to(self.volume.dtype), k, method=self.method, lod_bias=stage.lod_bias)

    def similarity(self, pose: torch.Tensor, stage: Stage) -> float:
        """The objective at ``stage``'s resolution and weighting, without gradients."""
        with torch.no_grad():
            return float(self.score(pose, stage)[0])


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
