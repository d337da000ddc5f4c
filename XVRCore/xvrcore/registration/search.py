"""A coarse grid search around the start pose, before the gradient stages (widens the capture range).

Candidates combine in-plane shifts on a square grid, depth shifts, out-of-plane tilts and rotations
about the beam, all in the start pose's camera axes; they are scored in batches at the first stage's
resolution (a few hundred 40-pixel DRRs cost well under a second) and the best one starts the refinement.
The start pose is scored first, and ``stopped`` (the time budget or a cancel) is polled before every
batch: a search cut short returns the best pose scored so far, never one worse than the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from .pose_update import updated_pose
from .problem import Problem
from .settings import SearchSettings, Stage

__all__ = ["best_candidate", "candidates"]


def candidates(pose: torch.Tensor, center: torch.Tensor, search: SearchSettings) -> torch.Tensor:
    """Every candidate pose ``(N, 4, 4)`` of the grid around ``pose`` (``pose`` itself included)."""
    as_tensor = {"dtype": torch.float64, "device": pose.device}
    offsets = torch.arange(-search.translation_mm, search.translation_mm + 1e-9, search.step_mm, **as_tensor)
    tilts = torch.tensor(search.tilt_deg, **as_tensor)
    grid = torch.cartesian_prod(offsets, offsets, torch.tensor(search.depth_mm, **as_tensor), tilts, tilts,
                                torch.tensor(search.roll_deg, **as_tensor))
    rotations = torch.deg2rad(grid[:, 3:])  # about the image x, y axes and the beam
    return updated_pose(pose, center, rotations, grid[:, :3])


def best_candidate(problem: Problem, pose: torch.Tensor, search: SearchSettings, stage: Stage,
                   stopped: Callable[[], bool] | None = None) -> torch.Tensor:
    """The best-scoring candidate ``(4, 4)`` of the grid around ``pose``, scored at ``stage``, in batches of
    ``search.batch``; ``stopped`` is polled before each batch and True ends the search (see the module docstring)."""
    if search.lod_bias is not None:
        stage = replace(stage, lod_bias=search.lod_bias)
    poses = torch.cat([pose[None], candidates(pose, problem.center, search)])  # the start first
    scores = []
    with torch.no_grad():
        for chunk in poses.split(search.batch):
            if stopped is not None and stopped():
                break
            scores.append(problem.score(chunk, stage))
    if not scores:
        return pose
    return poses[torch.cat(scores).argmax()]
