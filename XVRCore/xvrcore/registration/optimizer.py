"""Intensity-based 2D/3D registration: refine a C-arm pose by differentiable DRR rendering.

The xvr paper's test-time optimisation (Methods M.6), made faster and more robust:

* **Similarity**: the paper's mean of multiscale NCC (global + 9×9 patches) and gradient NCC
  (11×11 patches), restricted to the exposed pixels (collimator and shutters masked out).
* **Coarse to fine**: the X-ray is area-downsampled (its intrinsics rescaled exactly) and the
  renderer picks the matching volume pyramid level, so early stages are cheap and smooth; the
  main fine stage draws on a coarser CT level still, and a short polish on the matching level comes last.
* **Pose parameters**: a rotation about the target's centre and a translation, both expressed in
  the camera axes of the stage's starting pose, so Adam's per-coordinate steps separate the
  in-plane motion from the poorly constrained depth (Fig. S3).
* **Schedule**: Adam with separate rotation/translation steps; the steps drop on plateaus and a
  stage ends after a set number of drops, a budget of iterations, or a time budget; each stage
  keeps its best pose.
* **Stages' similarity**: coarse stages weigh the smooth global NCC more; the final stages use
  the paper's 50/50 objective, whose gradient-NCC half pins the depth.

Before any of it, an X-ray without contrast or a start that is no view of the volume is refused
(:func:`~xvrcore.registration.checks.check_start`).

**Budget and cancel** (:class:`~xvrcore.registration.problem.Clock`): the time budget bounds the whole
registration, the searches and retries included, and ``should_stop`` ends it the same way. Both are
polled before every search chunk (``SearchSettings.batch`` DRRs at the first stage's size), before
every stage and after every iteration, and no retry starts once either has fired. The overshoot past
the budget (or past a cancel) is therefore the render under way — one search chunk or one iteration —
plus the two renders at the finest stage that score the result and the start for the record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ..drr import DRRVolume
from ..geometry.camera import Intrinsics
from ..io.trajectory import record_sample
from .checks import check_start
from .pose_update import PoseUpdate
from .problem import Clock, Problem
from .search import best_candidate
from .settings import RegistrationResult, RegistrationSettings, SearchSettings, Stage, StageLog

__all__ = ["register"]


def register(
    volume: DRRVolume,
    xray: torch.Tensor,
    intrinsics: Intrinsics,
    initial_camera_to_world: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    center: torch.Tensor | None = None,
    settings: RegistrationSettings = RegistrationSettings(),
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RegistrationResult:
    """Refine ``initial_camera_to_world`` ``(4, 4)`` so the DRR of ``volume`` matches ``xray``.

    Args:
        xray: ``(H, W)`` line-integral-like image (dense = high) on the grid of ``intrinsics``.
        mask: ``(H, W)``, 1 where the pixel shows anatomy (not collimator/shutter).
        center: rotation centre (world mm); the volume centre by default.
        progress: called with a dict after each iteration (attempt, stage, iteration, similarity, …).
        should_stop: polled before every search chunk and after every iteration; True ends the registration
            with the best pose so far.

    Raises :class:`~xvrcore.registration.checks.UnregistrableInput` for an X-ray without contrast or a
    start pose that is no view of the volume.
    """
    clock = Clock.start(settings, should_stop)
    xray = torch.as_tensor(xray, dtype=volume.dtype, device=volume.device)
    if mask is not None:
        mask = torch.as_tensor(mask, device=volume.device)
    start = torch.as_tensor(initial_camera_to_world, dtype=torch.float64).reshape(4, 4).to(volume.device)
    center = (volume.center if center is None else torch.as_tensor(center, dtype=torch.float64)).to(volume.device)
    problem = Problem(volume, xray, intrinsics, mask, center, settings.method)
    check_start(problem, start)
    searches = (settings.search, *settings.retry_searches)
    result = None
    for number, search in enumerate(searches, start=1):
        if result is not None and (result.similarity >= settings.retry_below or clock.stopped()):
            break
        attempt = _attempt(problem, start, search, clock, _numbered(progress, number, len(searches)))
        result = attempt if result is None else _better(result, attempt)
    result.initial_similarity = problem.similarity(start, settings.stages[-1])
    result.seconds = clock.elapsed()
    return result


def _better(previous: RegistrationResult, retry: RegistrationResult) -> RegistrationResult:
    """The retry if it scores higher, else the previous result; either way counting the attempt."""
    attempts = previous.attempts + 1
    if retry.similarity > previous.similarity:
        retry.attempts = attempts
        return retry
    return replace(previous, attempts=attempts)


def _numbered(progress, attempt: int, attempts: int):
    """``progress`` with each event tagged by its attempt (1: the first search, then the retries)."""
    if progress is None:
        return None
    return lambda event: progress({**event, "attempt": attempt, "attempts": attempts})


def _attempt(problem: Problem, start: torch.Tensor, search: SearchSettings | None, clock: Clock,
             progress) -> RegistrationResult:
    """One search (if any) followed by the coarse-to-fine stages."""
    stages = clock.settings.stages
    result = RegistrationResult(start.clone(), start.clone(), math.nan, math.nan)
    pose = start if search is None else best_candidate(problem, start, search, stages[0], clock.stopped)
    for index, stage in enumerate(stages):
        if clock.stopped():  # the budget or a cancel came during the search or the stage before
            break
        t_stage = time.perf_counter()
        run = _StageRun(problem, stage, index, clock, result, progress)
        pose, best, iterations = run.optimise(pose)
        result.stages.append(StageLog(run.size, iterations, best, time.perf_counter() - t_stage))
    result.camera_to_world = pose.detach()
    result.similarity = problem.similarity(pose, stages[-1])
    return result


class _StageRun:
    """Adam on one stage with separate rotation/translation steps, dropped on plateaus (ReduceLROnPlateau)."""

    def __init__(self, problem: Problem, stage: Stage, index: int, clock: Clock, result: RegistrationResult,
                 progress) -> None:
        self.problem, self.stage, self.index, self.clock = problem, stage, index, clock
        self.result, self.progress = result, progress
        k, _ = problem.objective(stage)
        self.size = (k.height, k.width)
        settings = clock.settings
        self.patience = settings.patience if stage.patience is None else stage.patience
        self.max_reductions = settings.max_reductions if stage.max_reductions is None else stage.max_reductions

    def optimise(self, pose: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """The best pose of the stage, its similarity and the iterations run."""
        stage, settings = self.stage, self.clock.settings
        update = PoseUpdate(pose, self.problem.center)
        optimizer = torch.optim.Adam([{"params": [update.rotation], "lr": stage.lr_rotation},
                                      {"params": [update.translation], "lr": stage.lr_translation}], maximize=True)
        best_value, best_pose = -math.inf, pose
        plateau = _Plateau(settings.threshold, self.patience, self.max_reductions)
        iteration = 0
        for iteration in range(1, stage.iterations + 1):
            optimizer.zero_grad()
            current = update()
            value = self.problem.score(current, stage)[0]
            value.backward()
            v = float(value.detach())
            if v > best_value:
                best_value, best_pose = v, current.detach()
            optimizer.step()
            self._report(iteration, v, best_value, current)
            verdict = plateau.update(v)
            if verdict == "stop":
                break
            if verdict == "reduce":
                for group in optimizer.param_groups:
                    group["lr"] *= settings.reduce_factor
            if self.clock.stopped():
                break
        return best_pose, best_value, iteration

    def _report(self, iteration: int, value: float, best: float, pose: torch.Tensor) -> None:
        record_sample(self.result.trajectory, {"stage": self.index, "stages": len(self.clock.settings.stages),
                                               "size": list(self.size), "iteration": iteration, "similarity": value,
                                               "camera_to_world": pose.detach().cpu()})  # thinned: io.trajectory
        if self.progress is not None:
            self.progress({"stage": self.index, "stages": len(self.clock.settings.stages), "iteration": iteration,
                           "iterations": self.stage.iterations, "similarity": value, "best": best})


class _Plateau:
    """Relative-improvement plateau detection, as ``ReduceLROnPlateau(mode="max")``, with a cap on drops."""

    def __init__(self, threshold: float, patience: int, max_reductions: int) -> None:
        self.threshold, self.patience, self.max_reductions = threshold, patience, max_reductions
        self.best, self.stale, self.reductions = -math.inf, 0, 0

    def update(self, value: float) -> str:
        """``"go"``, ``"reduce"`` (drop the steps) or ``"stop"`` (the stage has dropped enough)."""
        scale = abs(self.best) if math.isfinite(self.best) else 1.0
        if value > self.best + self.threshold * scale:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.stale <= self.patience:
            return "go"
        self.reductions += 1
        self.stale = 0
        return "stop" if self.reductions > self.max_reductions else "reduce"
