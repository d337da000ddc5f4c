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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..drr.render import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..geometry.rotations import axis_angle_to_matrix, make_rigid
from ..metrics.similarity import registration_similarity

__all__ = [
    "DEFAULT_STAGES",
    "RETRY_SEARCHES",
    "downsample",
    "downsample_mask",
    "PoseUpdate",
    "register",
    "RegistrationResult",
    "RegistrationSettings",
    "SearchSettings",
    "Stage",
    "StageLog",
    "updated_pose",
]


@dataclass(frozen=True)
class Stage:
    """One resolution of the coarse-to-fine schedule."""

    size: int  # the X-ray is area-downsampled so its longer side has about this many pixels (never upsampled)
    iterations: int
    lr_rotation: float  # radians per step
    lr_translation: float  # mm per step
    similarity_weight: float = 0.5  # weight of multiscale NCC; the rest is gradient NCC
    lod_bias: float = 1.25  # the renderer's volume level choice (larger: coarser CT level, faster)
    patience: int | None = None  # overrides RegistrationSettings.patience for this stage
    max_reductions: int | None = None  # overrides RegistrationSettings.max_reductions


# Sizes rather than factors: the cost and the capture range of a stage depend on its pixel count,
# whatever the detector; a 128² X-ray is refined at native resolution, a 1024² one at 1/6.
# The 128-px stage renders from a CT level up to 3× coarser than its pixels (a quarter of the cost
# of the fine level, where a 160-px iteration costs ~0.2 s on 2 CPU cores) and does most of the
# fine work; a short 160-px polish at the matching CT level then removes the coarse level's bias.
# Against a 160-px fine-level stage in its place: pelvis 9.0 → 6.9 s, a 278.6 mm field 11–13 → 5.6 s, head
# unchanged (4.3 s), all at ≥ 95 % sub-millimetre (README, "What we measured").
DEFAULT_STAGES = (
    Stage(40, 120, 2e-2, 4.0, 0.8),
    Stage(80, 120, 1e-2, 2.0, 0.5),
    Stage(128, 80, 4e-3, 0.8, 0.5, lod_bias=3.0),
    Stage(160, 30, 1.5e-3, 0.3, 0.5, patience=3, max_reductions=1),
)


@dataclass(frozen=True)
class SearchSettings:
    """A coarse grid search around the start before the gradient stages (widens the capture range).

    Candidates combine in-plane shifts on a square grid, depth shifts and rotations about the
    beam, all in the start pose's camera axes; they are scored at the first stage's resolution
    in batches (a few hundred 40-pixel DRRs cost well under a second) and the best one starts
    the refinement.
    """

    translation_mm: float = 40.0
    step_mm: float = 10.0
    depth_mm: tuple[float, ...] = (-30.0, 0.0, 30.0)
    roll_deg: tuple[float, ...] = (-8.0, 0.0, 8.0)
    tilt_deg: tuple[float, ...] = (0.0,)  # rotations about the image axes (both), out of plane
    batch: int = 64


# Wider searches for a result that looks wrong (final similarity below ``retry_below``): failures
# end far below successes (calibration data: successes >= 0.71, failures <= 0.46), so a retry
# costs time only where it is needed. The second one combines out-of-plane tilts with depth shifts:
# a network start off by 8° and 30 mm in depth failed both without it (README, "No header at all").
# The third tilts out of plane by up to 60°: a network can mistake a cranial for a caudal tilt (or
# LAO for RAO), whose views look alike; a start 67° off that way failed the first two.
RETRY_SEARCHES = (
    SearchSettings(translation_mm=90.0, step_mm=15.0, depth_mm=(-60.0, 0.0, 60.0),
                   roll_deg=(-24.0, -16.0, -8.0, 0.0, 8.0, 16.0, 24.0)),
    SearchSettings(translation_mm=60.0, step_mm=20.0, depth_mm=(-30.0, 0.0, 30.0), roll_deg=(-16.0, -8.0, 0.0, 8.0, 16.0),
                   tilt_deg=(-12.0, 0.0, 12.0)),
    SearchSettings(translation_mm=20.0, step_mm=20.0, depth_mm=(-40.0, 0.0, 40.0), roll_deg=(0.0,),
                   tilt_deg=(-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0)),
)


@dataclass(frozen=True)
class RegistrationSettings:
    stages: tuple[Stage, ...] = DEFAULT_STAGES
    search: SearchSettings | None = SearchSettings()
    retry_searches: tuple[SearchSettings, ...] = RETRY_SEARCHES
    retry_below: float = 0.6
    patience: int = 8  # iterations without relative improvement > threshold before the steps drop
    threshold: float = 2.5e-4  # relative; 1e-4 let noise in the 160-px similarity prolong the last stage
    reduce_factor: float = 0.3
    max_reductions: int = 2  # a stage ends after this many drops
    method: str = "trilinear"
    time_budget_s: float | None = None


@dataclass
class StageLog:
    size: tuple[int, int]
    iterations: int
    similarity: float
    seconds: float


@dataclass
class RegistrationResult:
    camera_to_world: torch.Tensor  # (4, 4) float64, the refined pose
    initial_camera_to_world: torch.Tensor
    similarity: float  # final objective (paper's 50/50 mix) at the finest stage
    initial_similarity: float
    stages: list[StageLog] = field(default_factory=list)
    seconds: float = 0.0
    trajectory: list[dict] = field(default_factory=list)
    attempts: int = 1  # 1 + the wider searches tried because the result looked wrong


def downsample(image: torch.Tensor, intrinsics: Intrinsics, longer_side: int):
    """Area-average an image so its longer side has ``longer_side`` pixels (or keep it if smaller).

    Returns the image with the matching intrinsics.
    """
    h, w = image.shape[-2:]
    scale = max(1.0, max(h, w) / longer_side)
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    if size == (h, w):
        return image, intrinsics
    small = F.interpolate(image.reshape(1, -1, h, w), size=size, mode="area").reshape(*image.shape[:-2], *size)
    return small, intrinsics.resized(size[1], size[0])


def downsample_mask(mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """An exposure mask on a coarser grid: 1 only where the whole coarse pixel was exposed."""
    if mask is None:
        return None
    frac = F.interpolate(mask.reshape(1, 1, *mask.shape[-2:]).float(), size=size, mode="area")[0, 0]
    return (frac > 0.999).float()  # only pixels fully inside the exposed field


def _stage_inputs(xray: torch.Tensor, intrinsics: Intrinsics, mask: torch.Tensor | None, size: int):
    """The X-ray, its intrinsics and its exposure mask at a stage's resolution."""
    image, k = downsample(xray, intrinsics, size)
    return image, k, downsample_mask(mask, tuple(image.shape[-2:]))


def updated_pose(base: torch.Tensor, center: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``base`` turned by ``rotation`` (axis-angle) about ``center`` and moved by ``translation`` (mm).

    Both are expressed in the base pose's camera axes (x, y in the image plane, z along the beam);
    batched over their leading dimensions.
    """
    axes = base[:3, :3]
    rot = axis_angle_to_matrix(rotation @ axes.T)
    moved = (rot @ (base[:3, 3] - center)[..., None])[..., 0] + center + translation @ axes.T
    return make_rigid(rot @ axes, moved)


class PoseUpdate(torch.nn.Module):
    """The differentiable :func:`updated_pose` of one base pose, with zero-initialised parameters."""

    def __init__(self, base: torch.Tensor, center: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("base", base.to(torch.float64))
        self.register_buffer("center", center.to(torch.float64))
        self.rotation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=base.device))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=base.device))

    def forward(self) -> torch.Tensor:
        return updated_pose(self.base, self.center, self.rotation, self.translation)


def _similarity(drr: torch.Tensor, xray: torch.Tensor, mask, weight: float) -> torch.Tensor:
    return registration_similarity(drr, xray, mask, weight)[0]


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
    """Refine ``initial_camera_to_world`` so the DRR of ``volume`` matches ``xray``.

    Args:
        xray: ``(H, W)`` line-integral-like image (dense = high) on the grid of ``intrinsics``.
        mask: ``(H, W)``, 1 where the pixel shows anatomy (not collimator/shutter).
        center: rotation centre (world mm); the volume centre by default.
        progress: called with a dict after each iteration (attempt, stage, iteration, similarity, …).
        should_stop: polled every iteration; True ends the registration with the best pose so far.
    """
    t_start = time.perf_counter()
    xray = torch.as_tensor(xray, dtype=volume.dtype, device=volume.device)
    if mask is not None:
        mask = torch.as_tensor(mask, device=volume.device)
    start = torch.as_tensor(initial_camera_to_world, dtype=torch.float64).reshape(4, 4).to(volume.device)
    center = (volume.center if center is None else torch.as_tensor(center, dtype=torch.float64)).to(volume.device)
    problem = (volume, xray, intrinsics, mask, center)
    attempts = 1 + len(settings.retry_searches)
    result = _attempt(problem, start, settings.search, settings, _numbered(progress, 1, attempts), should_stop, t_start)
    for number, wider in enumerate(settings.retry_searches, start=2):
        if result.similarity >= settings.retry_below or _stopped(settings, t_start, should_stop):
            break
        retry = _attempt(problem, start, wider, settings, _numbered(progress, number, attempts), should_stop, t_start)
        retry.attempts = result.attempts + 1
        result = retry if retry.similarity > result.similarity else replace(result, attempts=retry.attempts)
    result.initial_similarity = _final_similarity(volume, xray, intrinsics, mask, start, settings)
    result.seconds = time.perf_counter() - t_start
    return result


def _numbered(progress, attempt: int, attempts: int):
    """``progress`` with each event tagged by its attempt (1: the first search, then the retries)."""
    if progress is None:
        return None
    return lambda event: progress({**event, "attempt": attempt, "attempts": attempts})


def _stopped(settings: RegistrationSettings, t_start: float, should_stop) -> bool:
    return _out_of_time(settings, t_start) or (should_stop is not None and should_stop())


def _attempt(problem, start, search, settings, progress, should_stop, t_start) -> RegistrationResult:
    """One search (if any) followed by the coarse-to-fine stages."""
    volume, xray, intrinsics, mask, center = problem
    result = RegistrationResult(start.clone(), start.clone(), math.nan, math.nan)
    pose = start if search is None else _search(volume, xray, intrinsics, mask, start, center, search, settings)
    for index, stage in enumerate(settings.stages):
        image, k, stage_mask = _stage_inputs(xray, intrinsics, mask, stage.size)
        t_stage = time.perf_counter()
        pose, best, iterations = _run_stage(volume, image, k, stage_mask, pose, center, stage, settings, index,
                                            result, progress, should_stop, t_start)
        result.stages.append(StageLog(tuple(image.shape[-2:]), iterations, best, time.perf_counter() - t_stage))
        if _stopped(settings, t_start, should_stop):
            break
    result.camera_to_world = pose.detach()
    result.similarity = _final_similarity(volume, xray, intrinsics, mask, pose, settings)
    return result


def _search(volume, xray, intrinsics, mask, pose, center, search: SearchSettings, settings) -> torch.Tensor:
    """The best-scoring candidate of the coarse grid around ``pose`` (``pose`` itself included)."""
    stage = settings.stages[0]
    image, k, stage_mask = _stage_inputs(xray, intrinsics, mask, stage.size)
    as_tensor = {"dtype": torch.float64, "device": pose.device}
    offsets = torch.arange(-search.translation_mm, search.translation_mm + 1e-9, search.step_mm, **as_tensor)
    tilts = torch.tensor(search.tilt_deg, **as_tensor)
    grid = torch.cartesian_prod(offsets, offsets, torch.tensor(search.depth_mm, **as_tensor), tilts, tilts,
                                torch.tensor(search.roll_deg, **as_tensor))
    translations = grid[:, :3]
    rotations = torch.deg2rad(grid[:, 3:])  # about the image x, y axes and the beam
    candidates = updated_pose(pose, center, rotations, translations)
    scores = []
    with torch.no_grad():
        for chunk in candidates.split(search.batch):
            drr = render(volume, chunk.to(volume.dtype), k, method=settings.method, lod_bias=stage.lod_bias)
            scores.append(registration_similarity(drr, image, stage_mask, stage.similarity_weight))
    best = torch.cat(scores).argmax()
    return candidates[best]


def _out_of_time(settings: RegistrationSettings, t_start: float) -> bool:
    return settings.time_budget_s is not None and time.perf_counter() - t_start > settings.time_budget_s


def _final_similarity(volume, xray, intrinsics, mask, pose, settings) -> float:
    """Similarity at the finest stage's resolution and weighting (the one the result is judged by)."""
    last = settings.stages[-1]
    image, k, stage_mask = _stage_inputs(xray, intrinsics, mask, last.size)
    with torch.no_grad():
        drr = render(volume, pose.to(volume.dtype), k, method=settings.method, lod_bias=last.lod_bias)
        return float(_similarity(drr, image, stage_mask, last.similarity_weight))


def _run_stage(volume, image, k, mask, pose, center, stage, settings, index, result, progress, should_stop, t_start):
    update = PoseUpdate(pose, center)
    optimizer = torch.optim.Adam(
        [{"params": [update.rotation], "lr": stage.lr_rotation}, {"params": [update.translation], "lr": stage.lr_translation}],
        maximize=True,
    )
    patience = settings.patience if stage.patience is None else stage.patience
    max_reductions = settings.max_reductions if stage.max_reductions is None else stage.max_reductions
    best_value, best_pose = -math.inf, pose
    plateau_best, stale, reductions, iteration = -math.inf, 0, 0, 0
    for iteration in range(1, stage.iterations + 1):
        optimizer.zero_grad()
        current = update()
        drr = render(volume, current.to(volume.dtype), k, method=settings.method, lod_bias=stage.lod_bias)
        value = _similarity(drr, image, mask, stage.similarity_weight)
        value.backward()
        v = float(value.detach())
        if v > best_value:
            best_value, best_pose = v, current.detach()
        optimizer.step()
        result.trajectory.append({"stage": index, "iteration": iteration, "similarity": v})
        if progress is not None:
            progress({"stage": index, "stages": len(settings.stages), "iteration": iteration,
                      "iterations": stage.iterations, "similarity": v, "best": best_value})
        # Plateau detection (relative improvement), as ReduceLROnPlateau(mode="max").
        if v > plateau_best + settings.threshold * abs(plateau_best if math.isfinite(plateau_best) else 1.0):
            plateau_best, stale = v, 0
        else:
            stale += 1
        if stale > patience:
            reductions += 1
            stale = 0
            if reductions > max_reductions:
                break
            for group in optimizer.param_groups:
                group["lr"] *= settings.reduce_factor
        if _stopped(settings, t_start, should_stop):
            break
    return best_pose, best_value, iteration
