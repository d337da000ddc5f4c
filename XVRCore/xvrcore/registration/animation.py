"""Watching a registration: its trajectory (:mod:`xvrcore.io.trajectory`) drawn as the DRR over the X-ray.

The animation has one frame per pose: the start, every recorded sample of the stages (the optimizer
keeps at most :data:`~xvrcore.io.trajectory.TRAJECTORY_LIMIT`, evenly spread, each stage's first and
best among them), and the result. The samples are those of the attempt that gave the result (a retry's
wider search replaces the first attempt's when it scores higher); the grid search itself is not
sampled, so the first stage's first frame shows the candidate it picked. Each frame is :func:`xvrcore.io.animation.animation_frame` of the
X-ray and the DRR at that pose, both at the animation's size (the X-ray area-downsampled, its
intrinsics rescaled exactly; never upsampled before rendering), captioned with the stage, the
iteration and the similarity. A sample's similarity is its stage's objective (that stage's resolution
and weights); the start's and the result's are at the finest stage, as in the result JSON.

``xvrcore register --save-trajectory`` writes ``<name>_trajectory.json`` beside each result, and
``--animate`` that and ``<name>_animation.gif`` (:func:`write_watch_outputs`); ``xvrcore animate``
draws the animation again from the files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..drr import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..io.animation import animation_frame, save_gif
from ..io.trajectory import Trajectory, write_trajectory
from .batch import PipelineSettings
from .resolution import stage_inputs
from .settings import RegistrationResult

__all__ = ["ANIMATION_SIZE", "animation_frames", "frame_captions", "trajectory_of", "watch_paths",
           "write_animation", "write_watch_outputs"]

ANIMATION_SIZE = 256  # pixels on the longer side of each panel
_BATCH = 16  # DRRs rendered at once


def trajectory_of(result: RegistrationResult, intrinsics: Intrinsics, *, frame=None, mask_frame=None) -> Trajectory:
    """The trajectory of ``result`` (a registration of an X-ray with ``intrinsics``, read with ``frame``)."""
    def pose(tensor) -> torch.Tensor:
        return torch.as_tensor(tensor).detach().cpu().to(torch.float64)

    stages = [{"size": list(s.size), "iterations": s.iterations, "similarity": s.similarity} for s in result.stages]
    return Trajectory(intrinsics, [{**s, "camera_to_world": pose(s["camera_to_world"])} for s in result.trajectory],
                      {"similarity": result.initial_similarity, "camera_to_world": pose(result.initial_camera_to_world)},
                      {"similarity": result.similarity, "camera_to_world": pose(result.camera_to_world)},
                      stages, frame, mask_frame)


def _poses(trajectory: Trajectory) -> torch.Tensor:
    entries = [trajectory.initial, *trajectory.samples, trajectory.result]
    return torch.stack([torch.as_tensor(e["camera_to_world"], dtype=torch.float64).reshape(4, 4) for e in entries])


def frame_captions(trajectory: Trajectory) -> list[tuple[str, str]]:
    """The two caption lines of each frame: the start, the samples, the result."""
    initial, result = trajectory.initial["similarity"], trajectory.result["similarity"]
    captions = [("start", f"similarity {initial:.3f} (finest stage)")]
    for s in trajectory.samples:
        size = "x".join(str(n) for n in s["size"][::-1])
        captions.append((f"stage {s['stage'] + 1}/{s['stages']} ({size} px), iteration {s['iteration']}",
                         f"similarity {s['similarity']:.3f}"))
    captions.append(("result", f"similarity {result:.3f} (start {initial:.3f})"))
    return captions


def animation_frames(volume: DRRVolume, xray, mask, trajectory: Trajectory, *, longer_side: int = ANIMATION_SIZE,
                     method: str = "trilinear", should_stop: Callable[[], bool] | None = None):
    """The frames (PIL images) of the animation of ``trajectory`` over ``xray`` ``(H, W)`` (its full size);
    None if ``should_stop`` fired (polled between batches of DRRs)."""
    image = torch.as_tensor(np.asarray(xray), dtype=torch.float64)
    exposure = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.float64)
    small, k, small_mask = stage_inputs(image, trajectory.intrinsics, exposure, longer_side)
    small_mask = None if small_mask is None else small_mask.numpy() > 0
    poses, captions = _poses(trajectory), frame_captions(trajectory)
    frames = []
    for first in range(0, len(poses), _BATCH):
        if should_stop is not None and should_stop():
            return None
        batch = poses[first:first + _BATCH].to(volume.device, volume.dtype)
        with torch.no_grad():
            drrs = render(volume, batch, k, method=method)[:, 0].cpu().numpy()
        frames += [animation_frame(small.numpy(), drr, mask=small_mask, caption=captions[first + i],
                                   longer_side=longer_side) for i, drr in enumerate(drrs)]
    return frames


def write_animation(path: str | Path, volume: DRRVolume, xray, mask, trajectory: Trajectory, *, fps: float = 10.0,
                    longer_side: int = ANIMATION_SIZE, should_stop=None) -> int | None:
    """Write the animation GIF atomically; returns its number of frames (None: cancelled, nothing written)."""
    frames = animation_frames(volume, xray, mask, trajectory, longer_side=longer_side, should_stop=should_stop)
    if frames is None:
        return None
    save_gif(path, frames, fps)
    return len(frames)


def watch_paths(output: str | Path, stem: str) -> dict[str, Path]:
    """Where :func:`write_watch_outputs` writes the trajectory and the animation of the result ``stem``."""
    out = Path(output)
    return {"trajectory": out / f"{stem}_trajectory.json", "animation": out / f"{stem}_animation.gif"}


def write_watch_outputs(settings: PipelineSettings, stem: str, xray, volume: DRRVolume, result: RegistrationResult,
                        should_stop=None) -> dict[str, Path] | None:
    """The trajectory (``settings.save_trajectory`` or ``settings.animate``) and the animation (``animate``)
    of one X-ray's result, each written atomically; returns the paths written, None if cancelled."""
    paths = watch_paths(settings.output, stem)
    trajectory = trajectory_of(result, xray.intrinsics, frame=settings.frame, mask_frame=settings.mask_frame)
    if settings.animate and write_animation(paths["animation"], volume, xray.pixels, xray.mask, trajectory,
                                            should_stop=should_stop) is None:
        return None
    write_trajectory(paths["trajectory"], trajectory)
    return paths if settings.animate else {"trajectory": paths["trajectory"]}
