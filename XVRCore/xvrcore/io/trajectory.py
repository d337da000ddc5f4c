"""A registration's trajectory: the poses it went through, kept to a bounded number, and its file.

**Recording** (:func:`record_sample`): the optimizer appends one sample per iteration (stage, iteration,
similarity, the pose rendered at that iteration). Past :data:`TRAJECTORY_LIMIT` iterations the list
holds only the iterations whose running ``step`` count is a multiple of the smallest power of 2 that
keeps it within the limit, and each stage's first, best and latest sample. So a registration of any
length keeps at most the limit (or three samples per stage, if more) evenly spread over its
iterations, and a stage's best sample is the pose the stage handed on.

**The file** ``<name>_trajectory.json`` (:func:`write_trajectory`, atomic; :func:`read_trajectory`): the
X-ray's image size and intrinsics (:mod:`xvrcore.conventions`: ``K`` of the right-handed camera, so a
mirrored view has ``fx < 0``), the frame and mask frame the X-ray was read with, the stage logs, the
start, the samples and the result; poses are camera-to-world 4×4 in world RAS mm. It holds no file
name, identifier or pixel: nothing of the patient.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..conventions import UNITS, WORLD_FRAME
from ..geometry.camera import Intrinsics
from .atomic import atomic_write_text, read_json

__all__ = ["TRAJECTORY_FORMAT", "TRAJECTORY_LIMIT", "Trajectory", "TrajectoryFileError", "read_trajectory",
           "record_sample", "write_trajectory"]

TRAJECTORY_FORMAT = "xvrcore-trajectory"
TRAJECTORY_LIMIT = 200  # samples per registration (plus, past it, a stage's first, best and latest)
_VERSION = 1


class TrajectoryFileError(ValueError):
    """A trajectory file that cannot be used; the message names the file and the problem."""


def record_sample(samples: list[dict], sample: dict, limit: int = TRAJECTORY_LIMIT) -> None:
    """Append ``sample`` (``stage``, ``iteration``, ``similarity``, ``camera_to_world``, …) to ``samples``,
    numbering it by ``step``, and thin the list in place if it exceeds ``limit`` (module docstring)."""
    samples.append({**sample, "step": samples[-1]["step"] + 1 if samples else 1})
    if samples[-1]["step"] > limit:  # from then on every sample is kept only on the stride (or pinned)
        samples[:] = _thinned(samples, limit)


def _pinned(samples: list[dict]) -> set[int]:
    """Indices of each stage's first, best and latest sample."""
    first: dict[Any, int] = {}
    best: dict[Any, int] = {}
    latest: dict[Any, int] = {}
    for index, sample in enumerate(samples):
        stage = sample["stage"]
        first.setdefault(stage, index)
        latest[stage] = index
        if stage not in best or sample["similarity"] > samples[best[stage]]["similarity"]:
            best[stage] = index
    return set(first.values()) | set(best.values()) | set(latest.values())


def _thinned(samples: list[dict], limit: int) -> list[dict]:
    """The pinned samples and those whose step is a multiple of the smallest stride (a power of 2) at which
    all the steps so far would fit (so the stride never shrinks, and a step it drops is never needed again)."""
    pinned, last_step = _pinned(samples), samples[-1]["step"]
    stride = 2
    while True:
        extra = sum(samples[i]["step"] % stride != 0 for i in pinned)
        if last_step // stride + extra <= limit or stride > last_step:
            return [s for i, s in enumerate(samples) if i in pinned or s["step"] % stride == 0]
        stride *= 2


@dataclass
class Trajectory:
    """What a registration went through, for one X-ray (see the module docstring)."""

    intrinsics: Intrinsics  # the X-ray's, at its full size (image_size = width × height)
    samples: list[dict]  # stage, stages, size [h, w], iteration, step, similarity, camera_to_world (4, 4) float64
    initial: dict  # the start: similarity, camera_to_world
    result: dict  # the registered pose: similarity, camera_to_world
    stages: list[dict] = field(default_factory=list)  # the stage logs: size [h, w], iterations, similarity
    frame: int | str | None = None  # how the X-ray was read (xvrcore.xray.read_xray)
    mask_frame: int | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the X-ray the trajectory is of."""
        return self.intrinsics.width, self.intrinsics.height


def _pose_list(pose) -> list[list[float]]:
    return torch.as_tensor(pose, dtype=torch.float64).detach().cpu().reshape(4, 4).tolist()


def _pose_entry(entry: dict) -> dict:
    return {**entry, "camera_to_world": _pose_list(entry["camera_to_world"])}


def _text(trajectory: Trajectory) -> str:
    """The file's JSON text."""
    k = trajectory.intrinsics
    record = {
        "format": TRAJECTORY_FORMAT, "version": _VERSION, "world_frame": WORLD_FRAME, "units": UNITS,
        "image_size": list(trajectory.image_size), "intrinsics": k.matrix().tolist(),
        "frame": trajectory.frame, "mask_frame": trajectory.mask_frame, "stages": trajectory.stages,
        "initial": _pose_entry(trajectory.initial), "samples": [_pose_entry(s) for s in trajectory.samples],
        "result": _pose_entry(trajectory.result),
    }
    return json.dumps(record, indent=1, allow_nan=False) + "\n"


def write_trajectory(path: str | Path, trajectory: Trajectory) -> Path:
    """Write ``trajectory`` to ``path`` atomically (:func:`xvrcore.io.atomic.atomic_write`)."""
    return atomic_write_text(path, _text(trajectory))


def _pose(value, where: str, path: Path) -> torch.Tensor:
    try:
        pose = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        pose = None
    if pose is None or pose.shape != (4, 4) or not bool(torch.isfinite(pose).all()):
        raise TrajectoryFileError(f"{path}: {where}: camera_to_world must be a finite 4×4 matrix")
    if not torch.allclose(pose[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)) or \
            not torch.allclose(pose[:3, :3].T @ pose[:3, :3], torch.eye(3, dtype=torch.float64), atol=1e-6):
        raise TrajectoryFileError(f"{path}: {where}: camera_to_world is not a rigid transform")
    return pose


def _entry(value, where: str, path: Path, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict) or any(key not in value for key in (*keys, "similarity", "camera_to_world")):
        raise TrajectoryFileError(f"{path}: {where} must be an object with {', '.join((*keys, 'similarity'))} "
                                  "and camera_to_world")
    similarity = value["similarity"]
    if not isinstance(similarity, (int, float)) or isinstance(similarity, bool) or not math.isfinite(similarity):
        raise TrajectoryFileError(f"{path}: {where}: similarity must be a finite number, got {similarity!r}")
    return {**value, "camera_to_world": _pose(value["camera_to_world"], where, path)}


def _intrinsics(record: dict, path: Path) -> Intrinsics:
    size = record.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
        raise TrajectoryFileError(f"{path}: 'image_size' must be [width, height] in pixels, got {size!r}")
    try:
        return Intrinsics.from_matrix(record.get("intrinsics"), *size)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TrajectoryFileError(f"{path}: 'intrinsics' is not a 3×3 camera matrix ({exc})") from None


def read_trajectory(path: str | Path) -> Trajectory:
    """Read and check a trajectory file; raises :class:`TrajectoryFileError` naming the file and the problem."""
    path = Path(path)
    record = read_json(path, TrajectoryFileError, "trajectory file")
    if not isinstance(record, dict) or record.get("format") != TRAJECTORY_FORMAT:
        raise TrajectoryFileError(f"{path}: not a registration trajectory (xvrcore register --save-trajectory "
                                  "writes <name>_trajectory.json)")
    if record.get("version") != _VERSION:
        raise TrajectoryFileError(f"{path}: trajectory version {record.get('version')!r}; this xvrcore reads "
                                  f"version {_VERSION}")
    intrinsics = _intrinsics(record, path)
    samples = record.get("samples")
    if not isinstance(samples, list):
        raise TrajectoryFileError(f"{path}: 'samples' must be a list")
    if not samples:
        raise TrajectoryFileError(f"{path}: the trajectory is empty (no samples: the registration stopped "
                                  "before its first iteration)")
    keys = ("stage", "stages", "size", "iteration")
    samples = [_entry(s, f"sample {i + 1}", path, keys) for i, s in enumerate(samples)]
    frame, mask_frame = record.get("frame"), record.get("mask_frame")
    if not isinstance(frame, (int, str, type(None))) or not isinstance(mask_frame, (int, type(None))):
        raise TrajectoryFileError(f"{path}: 'frame' must be a frame number, a reduction name or null, and "
                                  f"'mask_frame' a frame number or null; got {frame!r}, {mask_frame!r}")
    stages = record.get("stages")
    return Trajectory(intrinsics, samples, _entry(record.get("initial"), "'initial'", path, ()),
                      _entry(record.get("result"), "'result'", path, ()),
                      stages if isinstance(stages, list) else [], frame, mask_frame)
