"""Inputs that cannot be registered, and results that are no registration: found before and after the work.

A registration of nonsense still ends somewhere and reports a similarity; these checks make such an
input fail with its reason instead. Before the refinement (:func:`check_start`, run by
:func:`~xvrcore.registration.optimizer.register`), each an :class:`UnregistrableInput` (the input's fault):

* **no contrast** — fewer than 0.5 % of the exposed pixels differ from their median (a constant
  image, perhaps with a burned-in label), or no pixel is exposed at all;
* **no C-arm pose** — the X-ray source farther than 10 m from the volume (a finite but absurd
  translation such as 1e308 mm);
* **the source inside the volume** — inside the box of the volume's content (the DRR volume's box
  after its empty voxels are cropped), where no projection of the volume exists;
* **the beam misses the volume** — fewer than 1 % of the exposed pixels' rays cross
  the box of the volume's content (a ray-box test, no rendering).

Positioner and C-arm angles beyond ±360° are refused where they enter (:func:`check_angles`): 1e308°
is a finite number, but its sine is noise, so the pose it gives is a random one.

After the refinement (:func:`result_failure`, run by the pipeline): the source inside the volume or
the beam off it at the result, or a final similarity at chance level
(:data:`~xvrcore.metrics.quality.CHANCE_SIMILARITY`): the registration failed, and no result is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..drr import DRRVolume
from ..geometry.camera import Intrinsics, backproject, pixel_grid
from ..metrics.quality import CHANCE_SIMILARITY, at_chance_level
from .problem import Problem
from .settings import RegistrationResult

__all__ = [
    "MAX_ANGLE_DEG",
    "MAX_SOURCE_DISTANCE_MM",
    "MIN_BEAM_COVERAGE",
    "MIN_CONTRAST_FRACTION",
    "UnregistrableInput",
    "beam_coverage",
    "check_angles",
    "check_contrast",
    "check_start",
    "pose_problem",
    "result_failure",
    "source_inside",
]

MAX_ANGLE_DEG = 360.0  # DICOM positioner angles lie within ±180°; a full turn either way is still a C-arm angle
MAX_SOURCE_DISTANCE_MM = 10_000.0  # no C-arm or radiography room puts the source 10 m from the patient
MIN_CONTRAST_FRACTION = 0.005  # of the exposed pixels that must differ from their median
MIN_BEAM_COVERAGE = 0.01  # of the exposed pixels whose ray must cross the volume
_COVERAGE_SAMPLES = 64  # rays per image side at most, for the coverage


class UnregistrableInput(ValueError):
    """An input no registration can use (the input's fault); the message says why."""


def check_angles(angles: Mapping[str, float | None], where: str, given_by: str | None = None) -> None:
    """Refuse an angle (degrees, by name) that is not finite or lies beyond ±:data:`MAX_ANGLE_DEG`;
    ``where`` names the input, ``given_by`` (optional) where the angles came from."""
    source = f" (from {given_by})" if given_by else ""
    for name, value in angles.items():
        if value is not None and not (math.isfinite(value) and abs(value) <= MAX_ANGLE_DEG):
            raise UnregistrableInput(f"{where}: the {name} {value:g}°{source} is not a C-arm angle "
                                     f"(expected within ±{MAX_ANGLE_DEG:g}°)")


def check_contrast(xray: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Refuse an X-ray whose exposed pixels hold (nearly) a single value, or that has no exposed pixel."""
    values = xray.reshape(-1) if mask is None else xray.reshape(-1)[mask.reshape(-1) > 0]
    if values.numel() == 0:
        raise UnregistrableInput("the X-ray has no exposed pixels (its exposure mask is empty); nothing to register")
    if not bool(torch.isfinite(values).all()):
        raise UnregistrableInput("the X-ray holds NaN or infinite pixel values")
    values = values.double()
    median = values.median()
    differ = (values - median).abs() > 1e-6 * float(values.abs().max())
    share = float(differ.double().mean())
    if share < MIN_CONTRAST_FRACTION:
        raise UnregistrableInput(
            f"the X-ray has no contrast: {share:.1%} of its {values.numel()} exposed pixels differ from the value "
            f"{float(median):g} (at least {MIN_CONTRAST_FRACTION:.1%} must); nothing to register")


def source_inside(volume: DRRVolume, source: torch.Tensor) -> bool:
    """Whether a world point (mm) lies inside the box of the volume's content (voxel centres ± half a voxel)."""
    level = volume.levels[0]
    point = torch.cat([source.to(level.world_to_ijk), source.new_ones(1).to(level.world_to_ijk)])
    ijk = (level.world_to_ijk @ point)[:3]
    size = torch.tensor(level.shape_ijk, dtype=ijk.dtype, device=ijk.device)
    return bool(((ijk >= -0.5) & (ijk <= size - 0.5)).all())


def beam_coverage(volume: DRRVolume, pose: torch.Tensor, intrinsics: Intrinsics,
                  mask: torch.Tensor | None = None) -> float:
    """The fraction of the exposed pixels whose ray, from the source toward the detector, crosses the box of
    the volume's content (every pixel of images up to 64 pixels a side, every ``n``-th of larger ones)."""
    level = volume.levels[0]
    to_ijk = level.world_to_ijk.to(torch.float64)
    step = max(1, max(intrinsics.width, intrinsics.height) // _COVERAGE_SAMPLES)
    pixels = pixel_grid(intrinsics.height, intrinsics.width, step, torch.float64, to_ijk.device)
    source, directions = backproject(pose.to(to_ijk), intrinsics, pixels.reshape(-1, 2))
    origin = to_ijk[:3, :3] @ source[0] + to_ijk[:3, 3]
    along = directions[0] @ to_ijk[:3, :3].T
    along = torch.where(along.abs() < 1e-12, torch.full_like(along, 1e-12), along)
    size = torch.tensor(level.shape_ijk, dtype=torch.float64, device=to_ijk.device)
    t_low, t_high = (-0.5 - origin) / along, (size - 0.5 - origin) / along  # the slabs of the box (ray-box test)
    near = torch.minimum(t_low, t_high).amax(-1)
    far = torch.maximum(t_low, t_high).amin(-1)
    hit = (far > near.clamp_min(0.0)).reshape(pixels.shape[:2])  # NaN (an absurd pose) is no hit
    if mask is None:
        return float(hit.double().mean())
    exposed = torch.as_tensor(mask, device=hit.device)[::step, ::step] > 0
    if not bool(exposed.any()):
        return float(hit.double().mean())
    return float((hit & exposed).double().sum() / exposed.double().sum())


def pose_problem(volume: DRRVolume, pose: torch.Tensor, intrinsics: Intrinsics,
                 mask: torch.Tensor | None = None) -> str | None:
    """What makes ``pose`` ``(4, 4)`` no view of the volume, or None when it is one."""
    source = pose[:3, 3].to(torch.float64)
    distance = float((source - volume.center.to(source)).norm())
    if not math.isfinite(distance) or distance > MAX_SOURCE_DISTANCE_MM:
        return (f"the X-ray source is {distance:.3g} mm from the volume's centre (more than "
                f"{MAX_SOURCE_DISTANCE_MM:g} mm): not a C-arm pose")
    if source_inside(volume, source):
        where = ", ".join(f"{v:.1f}" for v in source.tolist())
        return f"the X-ray source (RAS {where} mm) lies inside the volume, where nothing can be projected"
    coverage = beam_coverage(volume, pose, intrinsics, mask)
    if coverage < MIN_BEAM_COVERAGE:
        return (f"the beam misses the volume: {coverage:.1%} of the exposed pixels' rays cross it "
                f"(at least {MIN_BEAM_COVERAGE:.0%} must)")
    return None


def check_start(problem: Problem, start: torch.Tensor) -> None:
    """Refuse an X-ray without contrast, or a start pose that is no view of the volume (see the module docstring)."""
    check_contrast(problem.xray, problem.mask)
    failure = pose_problem(problem.volume, start, problem.intrinsics, problem.mask)
    if failure is not None:
        raise UnregistrableInput(f"at the start pose {failure}; check the start (header angles and SOD, pose "
                                 "file, landmarks or isocentre) and that the CT is this patient's")


def result_failure(volume: DRRVolume, intrinsics: Intrinsics, mask: torch.Tensor | None,
                   result: RegistrationResult) -> str | None:
    """Why a finished registration is no registration (see the module docstring), or None if it may be one."""
    failure = pose_problem(volume, result.camera_to_world.detach(), intrinsics, mask)
    if failure is not None:
        return f"at the result {failure}"
    if at_chance_level(result.similarity):
        return (f"the final similarity {result.similarity:.3f} is at chance level (at most {CHANCE_SIMILARITY:g}, "
                "what an image unrelated to the CT reaches): the DRR does not match the X-ray; check the start "
                "pose and that the X-ray shows this CT")
    return None
