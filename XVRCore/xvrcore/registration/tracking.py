"""Tracking a multi-frame X-ray run (fluoroscopy, or a rotational run) frame by frame.

:func:`track_frames`: a full registration (:func:`~xvrcore.registration.optimizer.register` with the
full schedule: searches and retries) on a key frame, then each frame outwards from it warm-started
from its neighbour's result with a short schedule (``short``: no search, two stages). The warm
start carries the neighbour's *correction* of its C-arm pose over to this frame's C-arm pose
(``result_n @ start_n⁻¹ @ start``), so a rotational run's per-frame angles move the camera and a
fixed C-arm's patient motion is followed alike.

Every frame gets a quality (:func:`xvrcore.metrics.quality.assess`). A frame that looks **lost** —
its quality fails, or its similarity falls more than ``max_drop`` below the key frame's — is
registered again with the full schedule from the warm start, and the better result is kept; either
way the frame is **flagged** (``status`` ``"re-registered"``, or ``"lost"`` if even the full schedule
does not pass), never silently kept. A lost frame's result never warm-starts the next frame: the
last frame that was not lost does.

:func:`write_track` writes the per-frame results as JSON lines (one object per frame: the pose in
the shared result format of :mod:`xvrcore.conventions` plus frame, status, flag, similarity,
quality and seconds), atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..drr import DRRVolume
from ..geometry.camera import Intrinsics
from ..geometry.pose import camera_pose
from ..geometry.rotations import invert_rigid
from ..io.atomic import atomic_write_text
from ..io.pose_json import pose_to_dict
from ..metrics.quality import DEFAULT_MODEL, QualityModel, assess
from .optimizer import register
from .settings import RegistrationResult, RegistrationSettings, Stage

__all__ = ["TRACK_STAGES", "FrameResult", "SequenceFrame", "TrackSettings", "frame_record", "track_frames", "track_summary",
           "write_track"]

# From the neighbour's pose the frame is a few millimetres away: the capture range of the coarse
# stages is not needed, only the two finer stages, short. A patience of 3 ended 64² frames after ~8 iterations, up to 1 mm off across the beam;
# 5 with two drops kept them within 0.5 mm (Testing/core/registration/test_tracking.py).
TRACK_STAGES = (
    Stage(64, 30, 4e-3, 1.0, 0.5),
    Stage(128, 30, 1.5e-3, 0.3, 0.5, lod_bias=3.0),
)
SHORT_SCHEDULE = RegistrationSettings(stages=TRACK_STAGES, search=None, retry_searches=(), patience=5)


@dataclass(frozen=True)
class SequenceFrame:
    """One frame: its line-integral image ``(H, W)``, intrinsics, C-arm pose ``start`` (4, 4) and mask."""

    index: int
    xray: torch.Tensor
    intrinsics: Intrinsics
    start: torch.Tensor
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class TrackSettings:
    full: RegistrationSettings = field(default_factory=RegistrationSettings)  # the key frame and lost frames
    short: RegistrationSettings = field(default_factory=lambda: SHORT_SCHEDULE)  # every other frame
    key_frame: int = 0  # index into the frames (negative: from the end)
    max_drop: float = 0.1  # a similarity this far below the key frame's counts as lost
    quality: QualityModel = DEFAULT_MODEL


@dataclass
class FrameResult:
    index: int
    camera_to_world: torch.Tensor  # (4, 4) float64
    warm_start: torch.Tensor  # the pose it started from
    similarity: float
    quality: dict[str, Any]
    status: str  # "key", "tracked", "re-registered" (was lost, recovered) or "lost" (still fails)
    flag: str | None  # why the frame was taken for lost (None: it was not)
    seconds: float
    short_similarity: float | None = None  # what the short schedule reached, for a flagged frame


def _carried(neighbour: FrameResult, neighbour_start: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The neighbour's correction of its C-arm pose applied to this frame's C-arm pose."""
    return neighbour.camera_to_world @ invert_rigid(neighbour_start) @ start


def _registered(volume, frame: SequenceFrame, start: torch.Tensor, settings: RegistrationSettings, center,
                should_stop) -> RegistrationResult:
    return register(volume, frame.xray, frame.intrinsics, start.to(volume.device), mask=frame.mask, center=center,
                    settings=settings, should_stop=should_stop)


def _lost_because(similarity: float, quality: dict, key_similarity: float | None, settings: TrackSettings) -> str | None:
    if not quality["passed"]:
        return f"quality fails (similarity {similarity:.3f}, P(<1 mm) {quality['p_submillimetre']:.2f})"
    if key_similarity is not None and similarity < key_similarity - settings.max_drop:
        return (f"similarity {similarity:.3f} fell more than {settings.max_drop:g} below the key frame's "
                f"{key_similarity:.3f}")
    return None


def _track_one(volume, frame: SequenceFrame, warm: torch.Tensor, key_similarity: float, settings: TrackSettings,
               center, should_stop) -> FrameResult:
    """One frame from its warm start: the short schedule, and the full one if it looks lost."""
    t0 = time.perf_counter()
    short = _registered(volume, frame, warm, settings.short, center, should_stop)
    quality = assess(short.similarity, settings.quality)
    flag = _lost_because(short.similarity, quality, key_similarity, settings)
    if flag is None:
        return FrameResult(frame.index, short.camera_to_world.cpu(), warm, short.similarity, quality, "tracked", None,
                           time.perf_counter() - t0)
    full = _registered(volume, frame, warm, settings.full, center, should_stop)
    best = full if full.similarity >= short.similarity else short
    quality = assess(best.similarity, settings.quality)
    recovered = _lost_because(best.similarity, quality, key_similarity, settings) is None
    return FrameResult(frame.index, best.camera_to_world.cpu(), warm, best.similarity, quality,
                       "re-registered" if recovered else "lost", flag, time.perf_counter() - t0, short.similarity)


def _key(volume, frame: SequenceFrame, settings: TrackSettings, center, should_stop) -> FrameResult:
    t0 = time.perf_counter()
    result = _registered(volume, frame, frame.start, settings.full, center, should_stop)
    quality = assess(result.similarity, settings.quality)
    flag = None if quality["passed"] else _lost_because(result.similarity, quality, None, settings)
    return FrameResult(frame.index, result.camera_to_world.cpu(), frame.start, result.similarity, quality,
                       "key" if flag is None else "lost", flag, time.perf_counter() - t0)


def track_frames(volume: DRRVolume, frames: Sequence[SequenceFrame], *, settings: TrackSettings = TrackSettings(),
                 center: torch.Tensor | None = None, progress: Callable[[FrameResult], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[FrameResult]:
    """Register every frame (module docstring); results in frame order. Stops early (fewer results) on a cancel."""
    if not frames:
        raise ValueError("track_frames needs at least one frame")
    frames = [_on_cpu(f) for f in frames]
    key = settings.key_frame % len(frames)
    results: dict[int, FrameResult] = {key: _key(volume, frames[key], settings, center, should_stop)}
    if progress is not None:
        progress(results[key])
    key_similarity = results[key].similarity
    for order in (range(key + 1, len(frames)), range(key - 1, -1, -1)):
        anchor = key  # the last frame that was not lost, on this side of the key frame
        for n in order:
            if should_stop is not None and should_stop():
                return [results[i] for i in sorted(results)]
            warm = _carried(results[anchor], frames[anchor].start, frames[n].start)
            results[n] = _track_one(volume, frames[n], warm, key_similarity, settings, center, should_stop)
            if results[n].status != "lost":
                anchor = n
            if progress is not None:
                progress(results[n])
    return [results[i] for i in sorted(results)]


def _on_cpu(frame: SequenceFrame) -> SequenceFrame:
    start = torch.as_tensor(frame.start, dtype=torch.float64).reshape(4, 4).cpu()
    return SequenceFrame(frame.index, frame.xray, frame.intrinsics, start, frame.mask)


def track_summary(results: Sequence[FrameResult], key_frame: int | None = None) -> dict[str, Any]:
    """Counts by status, the flagged frames and the tracking rate (frames per second after the key frame)."""
    statuses = [r.status for r in results]
    after_key = [r.seconds for r in results if r.status != "key"]
    rate = len(after_key) / sum(after_key) if after_key and sum(after_key) > 0 else math.nan
    return {"frames": len(results), **{s: statuses.count(s) for s in ("key", "tracked", "re-registered", "lost")},
            "flagged": [r.index for r in results if r.flag is not None],
            "frames_per_second": round(rate, 3) if math.isfinite(rate) else None}


def frame_record(result: FrameResult, intrinsics: Intrinsics, **extra: Any) -> dict[str, Any]:
    """One JSON line: the pose in the shared format and the frame's tracking record."""
    info = {"frame": result.index, "status": result.status, "flag": result.flag, "similarity": result.similarity,
            "short_similarity": result.short_similarity, "quality": result.quality,
            "seconds": round(result.seconds, 3), "warm_start": result.warm_start.tolist(), **extra}
    return pose_to_dict(camera_pose(intrinsics, result.camera_to_world, **info))


def write_track(path: str | Path, results: Sequence[FrameResult], intrinsics: Sequence[Intrinsics],
                **extra: Any) -> Path:
    """The per-frame results as JSON lines (``intrinsics``: each frame's), written atomically."""
    lines = [json.dumps(frame_record(r, k, **extra), separators=(",", ":")) + "\n"
             for r, k in zip(results, intrinsics, strict=True)]
    return atomic_write_text(path, "".join(lines))
