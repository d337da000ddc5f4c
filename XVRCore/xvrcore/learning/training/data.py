"""The training data: CTs (or MRAs) prepared for rendering, and the batches of DRRs drawn from them.

A CT renders its anatomy (tissue and bone, the bone multiplier as contrast augmentation); an MRA, or
a volume with a vessel segmentation, renders its vessels only (:mod:`xvrcore.volume.vessels`), as
DSA-like images. The modality is decided per volume (:func:`xvrcore.volume.modality.resolve_modality`),
must be the same for all volumes of a run, and is recorded in the model.

Batch ``i`` of rank ``r`` comes from one generator keyed on ``(seed, i, r)``
(:func:`xvrcore.learning.sampling.keyed_generator`): the CT (several in pretraining), the bone
multiplier, the poses and the augmentation, so a resumed run draws exactly the batches an
uninterrupted one would. Poses are ``camera_to_world`` (:mod:`xvrcore.conventions`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...drr import DRRVolume, render
from ...geometry.camera import Intrinsics
from ...volume import Volume, load_labelmap
from ...volume.attenuation import MU_WATER_PER_MM, hu_to_attenuation
from ...volume.fingerprint import volume_fingerprint
from ...volume.labels import structure_mask
from ...volume.modality import ModalityWarning
from ...volume.vessels import RenderedVolume, load_rendered_volume
from ..augment import AugmentSettings
from ..network import InputSpec
from ..preprocess import training_input
from ..sampling import PoseRanges, Preset, get_preset, keyed_generator, sample_poses, with_orientation
from .settings import TrainSettings

__all__ = [
    "VALIDATION_KEY",
    "Batch",
    "BatchSource",
    "TrainingTarget",
    "coverage",
    "draw_multiplier",
    "load_targets",
    "pose_ranges",
    "prepare_training_target",
    "render_level",
    "run_modality",
]

VALIDATION_KEY = -1  # generator key of the held-out poses (iterations are >= 0)


@dataclass
class TrainingTarget:
    """A CT prepared for rendering: tissue and bone attenuation as two channels of one pyramid."""

    pyramid: DRRVolume
    center: torch.Tensor  # (3,) float64 RAS of the voxel-box centre
    fingerprint: str
    points: torch.Tensor  # (N, 3) float64 validation targets inside the body
    name: str
    shape: tuple[int, int, int]
    spacing: list[float]
    modality: str = "ct"  # "ct": tissue and bone channels; "mra" or vessels: the vessels in the first, 0 bone
    attenuation_model: str = "CT water/bone model of HU"

    def at(self, level: int, bone_multiplier: float) -> DRRVolume:
        """Single-channel attenuation ``tissue + m · bone`` on one pyramid level (renders ~2× faster)."""
        lvl = self.pyramid.level(level)
        data = lvl.data[0] + bone_multiplier * lvl.data[1]
        return DRRVolume(data, lvl.ijk_to_world.cpu(), device=data.device, crop_threshold=None, max_levels=1)

    def render(self, poses: torch.Tensor, intrinsics: Intrinsics, level: int, bone_multiplier: float) -> torch.Tensor:
        """DRRs ``(B, 1, H, W)`` at ``camera_to_world`` poses ``(B, 4, 4)`` (differentiable in the poses)."""
        return render(self.at(level, bone_multiplier), poses.to(self.pyramid.dtype), intrinsics, level=0)


def prepare_training_target(ct: Volume, device, labelmap: Volume | None = None, labels=None, n_points: int = 256,
                            rendered: RenderedVolume | None = None) -> TrainingTarget:
    """Split the CT's attenuation into a tissue channel and a bone-excess channel (linear in the multiplier).

    ``rendered`` (of this volume), if it shows vessels only (an MRA, a vessel segmentation): its
    attenuation is the first channel and the bone channel is 0, so the multiplier changes nothing.
    """
    if rendered is not None and rendered.vessel_only:
        tissue = torch.as_tensor(np.asarray(rendered.attenuation.data, dtype=np.float32))
        bone = torch.zeros_like(tissue)
    else:
        hu = torch.as_tensor(np.asarray(ct.data, dtype=np.float32))
        tissue = hu_to_attenuation(hu, 0.0)
        bone = hu_to_attenuation(hu, 1.0) - tissue
    if labelmap is not None:
        mask = torch.as_tensor(structure_mask(labelmap, labels))
        tissue, bone = tissue * mask, bone * mask
    points = _points_inside(tissue, torch.as_tensor(ct.affine, dtype=torch.float64), n_points, ct.source)
    pyramid = DRRVolume(torch.stack([tissue, bone]), ct.affine, device=device)
    model = {} if rendered is None else {"modality": rendered.record["modality"],
                                          "attenuation_model": rendered.record["attenuation_model"]}
    return TrainingTarget(
        pyramid, torch.as_tensor(ct.center, dtype=torch.float64), volume_fingerprint(ct), points, Path(ct.source).name,
        tuple(int(n) for n in ct.shape_ijk), [float(s) for s in ct.spacing], **model,
    )


def _points_inside(tissue: torch.Tensor, affine: torch.Tensor, n: int, source: str) -> torch.Tensor:
    """``(n, 3)`` RAS centres of random voxels denser than fat (validation targets for mTRE)."""
    inside = (tissue > 0.8 * MU_WATER_PER_MM).reshape(-1)
    gen = keyed_generator(0, VALIDATION_KEY, 7)
    # Rejection sampling: no index list of the whole body (hundreds of MB for a 512² CT).
    candidates = torch.randint(inside.numel(), (max(50 * n, 10_000),), generator=gen)
    picked = candidates[inside[candidates]][:n]
    if picked.numel() < n:
        picked = inside.nonzero()[:, 0]
        picked = picked[torch.randperm(picked.numel(), generator=gen)[:n]]
    if picked.numel() == 0:
        raise ValueError(f"{source}: no voxel denser than fat (nor a bright vessel); is this a CT in HU, or an MRA "
                         "(--modality mra)?")
    k, j, i = torch.unravel_index(picked, tissue.shape)
    ijk = torch.stack([i, j, k], -1).double()
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def load_targets(settings: TrainSettings, device: torch.device) -> list[TrainingTarget]:
    """The run's CTs (and label map), read and prepared on ``device``."""
    if not settings.volumes:
        raise ValueError("no training volume given")
    if settings.labelmap and len(settings.volumes) > 1:
        raise ValueError("a label map can only be used with a single CT")
    if settings.vessels and len(settings.volumes) > 1:
        raise ValueError("a vessel segmentation can only be used with a single volume")
    prepared = []
    for path in settings.volumes:
        rendered = load_rendered_volume(path, settings.modality, settings.vessels)
        if rendered.warning:
            warnings.warn(rendered.warning, ModalityWarning, stacklevel=2)
        labelmap = load_labelmap(settings.labelmap, reference=rendered.volume) if settings.labelmap else None
        prepared.append(prepare_training_target(rendered.volume, device, labelmap, settings.labels, rendered=rendered))
    run_modality(prepared)
    return prepared


def run_modality(targets: list[TrainingTarget]) -> str:
    """The one modality of a run's volumes; a run mixing CTs and MRAs is refused."""
    found = {t.modality for t in targets}
    if len(found) > 1:
        listing = ", ".join(f"{t.name}: {t.modality}" for t in targets)
        raise ValueError(f"the training volumes mix modalities ({listing}); train one model per modality")
    return found.pop()


def pose_ranges(settings: TrainSettings) -> tuple[Preset | None, PoseRanges]:
    """The preset (if any) and the pose ranges to sample: custom ranges override the preset's."""
    preset = get_preset(settings.preset) if settings.preset else None
    if settings.ranges is not None:
        ranges = PoseRanges.from_dict(settings.ranges)
    elif preset is not None:
        ranges = preset.ranges
    else:
        raise ValueError("give a pose preset or custom ranges")
    if settings.orientation:
        ranges = with_orientation(ranges, settings.orientation.upper())
    return preset, ranges


def coverage(images: torch.Tensor) -> torch.Tensor:
    """Fraction of each image's pixels that see anatomy, ``(B,)`` for images ``(B, 1, H, W)``."""
    peak = images.detach().amax((-1, -2, -3), keepdim=True).clamp_min(1e-12)
    return (images.detach() > 0.02 * peak).float().mean((-1, -2, -3))


def draw_multiplier(gen: torch.Generator, bounds: tuple[float, float]) -> float:
    """A bone-attenuation multiplier, uniform in ``bounds``."""
    lo, hi = bounds
    return float(lo + (hi - lo) * torch.rand(1, generator=gen, dtype=torch.float64))


@dataclass
class Batch:
    """One iteration's training images and the poses they were rendered at."""

    target: TrainingTarget
    multiplier: float
    poses: torch.Tensor  # (B, 4, 4) float64 camera_to_world, on the run's device
    images: torch.Tensor  # (B, 1, H, W) DRRs at ``poses``
    weight: torch.Tensor  # (B,) 1 for images that see enough anatomy, else 0
    inputs: torch.Tensor  # (B, 1, H, W) augmented, normalised network input


@dataclass
class BatchSource:
    """Draws the batch of any iteration and rank, identically every time it is asked."""

    targets: list[TrainingTarget]
    ranges: PoseRanges
    intrinsics: Intrinsics
    level: int  # pyramid level every DRR is rendered from
    settings: TrainSettings
    augmentation: AugmentSettings
    input_spec: InputSpec
    device: torch.device

    def draw(self, iteration: int, rank: int) -> Batch:
        s = self.settings
        gen = keyed_generator(s.seed, iteration, rank)
        index = int(torch.randint(len(self.targets), (1,), generator=gen)) if len(self.targets) > 1 else 0
        target = self.targets[index]
        multiplier = draw_multiplier(gen, s.bone_multiplier)
        poses, _ = sample_poses(self.ranges, s.batch_size, gen, target.center)
        poses = poses.to(self.device)
        with torch.no_grad():
            images = target.render(poses, self.intrinsics, self.level, multiplier)
        weight = (coverage(images) >= s.min_coverage).float()
        inputs = training_input(images, gen, self.augmentation, self.input_spec)  # as inference: .preprocess
        return Batch(target, multiplier, poses, images, weight, inputs)


def render_level(target: TrainingTarget, ranges: PoseRanges, intrinsics: Intrinsics, lod_bias: float) -> int:
    """Pyramid level for the typical (middle) source distance: fixed, so every step costs the same."""
    y_mid = abs(sum(ranges.y) / 2)
    footprint = max(y_mid, 100.0) / abs(intrinsics.fx)  # detector pixel projected to the isocentre
    return target.pyramid.choose_level(footprint, lod_bias)
