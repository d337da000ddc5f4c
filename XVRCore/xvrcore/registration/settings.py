"""What a registration is told (the stages, the searches, the budget) and what it reports back.

The defaults are the measured schedule (README, "What we measured"): four coarse-to-fine stages sized
in pixels, a grid search around the start, and three wider searches for results that look wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "DEFAULT_STAGES",
    "RETRY_SEARCHES",
    "RegistrationResult",
    "RegistrationSettings",
    "SearchSettings",
    "Stage",
    "StageLog",
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
# unchanged (4.3 s), all at ≥ 95 % sub-millimetre (README, "What we measured"). Shorter middle stages, a
# coarser polish and coarser searches (benchmarks/bench_speed.py, "fast") are 1.3–2× faster but ended
# further from the truth on the pelvis in a first trial; they stay an experiment until 20 X-rays say.
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
    lod_bias: float | None = None  # the candidates' CT level (None: the first stage's); coarser is cheaper


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
    # per iteration: stage, stages, size, iteration, step, similarity, camera_to_world (4, 4) float64 on the CPU;
    # thinned to a bounded number of samples (xvrcore.io.trajectory.record_sample)
    trajectory: list[dict] = field(default_factory=list)
    attempts: int = 1  # 1 + the wider searches tried because the result looked wrong
