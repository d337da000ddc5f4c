"""Registering CT scouts (line-scan views) to their CT: one rigid correction shared by the views.

A CT and its scouts share the scanner's patient frame, so the header poses
(:func:`xvrcore.xray.localizer.read_localizer`) should already align them; what is left is the
patient's motion between the scouts and the axial scan, plus any error in the scanner's geometry.
That is one rigid transform of the CT relative to the scanner, the same for every scout, which
:func:`register_linescan` finds by the differentiable line-scan renderer
(:func:`xvrcore.drr.render_linescan`) and the paper's similarity
(:func:`xvrcore.metrics.similarity.registration_similarity`), averaged over the views.

**Parameters.** A rotation (axis-angle, world axes) about the rotation centre (the CT's centre by
default) and a translation (world mm), applied to every view's camera:
``camera_to_world = correction @ header``. The CT's own motion is ``correction⁻¹``;
:func:`pose_change` gives its angle and the displacement of the centre.

**Schedule.** Adam (separate rotation and translation steps) at a few area-downsampled resolutions,
coarse to fine; each stage keeps its best correction and halves its steps after ``patience``
iterations without improvement.

**Mask.** Only image rows whose table position lies inside the CT's slab count
(:func:`covered_rows`): beyond it the scout sees anatomy the CT does not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..drr import DRRVolume, render_linescan
from ..geometry.linescan import LineScanCamera
from ..geometry.rotations import axis_angle_to_matrix, invert_rigid, make_rigid, matrix_to_axis_angle
from ..metrics.similarity import registration_similarity
from ..xray.localizer import Localizer
from .resolution import downsample_exposure_mask

__all__ = [
    "LineScanResult",
    "LineScanSettings",
    "LineScanStage",
    "LineScanView",
    "covered_rows",
    "linescan_similarity",
    "localizer_view",
    "pose_change",
    "register_linescan",
    "rigid_about",
    "view_at",
    "view_similarities",
]


@dataclass(frozen=True)
class LineScanView:
    """One scout: its line-integral image ``(H, W)``, camera, header pose (4, 4) and mask ``(H, W)`` (or None)."""

    image: torch.Tensor
    camera: LineScanCamera
    camera_to_world: torch.Tensor
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class LineScanStage:
    factor: int  # area-downsampling of the scouts
    iterations: int
    lr_rotation: float = 2e-3  # radians per step
    lr_translation: float = 0.5  # mm per step


@dataclass(frozen=True)
class LineScanSettings:
    stages: tuple[LineScanStage, ...] = (LineScanStage(8, 40), LineScanStage(4, 30, 1e-3, 0.25))
    patience: int = 5
    similarity_weight: float = 0.5  # weight of multiscale NCC; the rest is gradient NCC
    method: str = "trilinear"


@dataclass
class LineScanResult:
    correction: torch.Tensor  # (4, 4): registered camera_to_world = correction @ header, for every view
    header_similarity: list[float]  # per view, at the last stage's resolution
    similarity: list[float]
    rotation_deg: float  # of the CT's correction (pose_change)
    translation_mm: float
    trajectory: list[dict] = field(default_factory=list)


def rigid_about(rotation: torch.Tensor, translation: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """``(4, 4)``: turn by ``rotation`` (axis-angle, rad) about ``center`` (mm), then move by ``translation`` (mm)."""
    rot = axis_angle_to_matrix(rotation)
    return make_rigid(rot, center - rot @ center + translation)


def pose_change(correction: torch.Tensor, center: torch.Tensor) -> tuple[float, float]:
    """The CT's motion ``correction⁻¹``: its rotation angle (degrees) and how far it moves ``center`` (mm)."""
    motion = invert_rigid(correction.detach().to(torch.float64))
    angle = float(matrix_to_axis_angle(motion[:3, :3]).norm())
    centre = center.to(torch.float64)
    return math.degrees(angle), float((motion[:3, :3] @ centre + motion[:3, 3] - centre).norm())


def covered_rows(volume: DRRVolume, camera: LineScanCamera, camera_to_world: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` float mask: 1 on rows whose whole table footprint lies inside the CT's extent along the table.

    The extent is that of the (uncropped) voxel box's faces along the camera's +y; for a CT whose
    slices are perpendicular to the table (every axial scan) this is its slab.
    """
    n = torch.tensor(volume.full_shape_ijk, dtype=torch.float64)
    corners = torch.cartesian_prod(*[torch.tensor([-0.5, float(s) - 0.5], dtype=torch.float64) for s in n])
    world = corners @ volume.full_affine[:3, :3].T.cpu() + volume.full_affine[:3, 3].cpu()
    to_camera = invert_rigid(camera_to_world.detach().to(torch.float64).cpu())
    along = world @ to_camera[1, :3] + to_camera[1, 3]
    y = (torch.arange(camera.height, dtype=torch.float64) - camera.cv) * camera.row_spacing
    half = camera.row_spacing / 2
    inside = (y - half >= along.min()) & (y + half <= along.max())
    return inside[:, None].expand(camera.height, camera.width).float()


def localizer_view(localizer: Localizer, volume: DRRVolume) -> LineScanView:
    """The scout as a registration view: its pixels, camera and header pose, masked to the CT's slab."""
    mask = covered_rows(volume, localizer.camera, localizer.camera_to_world) * torch.as_tensor(localizer.mask).float()
    return LineScanView(torch.as_tensor(localizer.pixels), localizer.camera, localizer.camera_to_world, mask)


def view_at(view: LineScanView, factor: int) -> LineScanView:
    """The view area-downsampled by ``factor`` (camera resized exactly; a coarse pixel counts if fully masked in)."""
    if factor <= 1:
        return view
    h, w = view.image.shape[-2:]
    size = (max(1, h // factor), max(1, w // factor))
    rows, cols = size[0] * factor, size[1] * factor
    image = F.avg_pool2d(view.image[None, None, :rows, :cols].float(), factor)[0, 0]
    camera = _cropped(view.camera, rows, cols).resized(size[1], size[0])
    mask = None if view.mask is None else downsample_exposure_mask(view.mask[:rows, :cols], size)
    return LineScanView(image, camera, view.camera_to_world, mask)


def _cropped(camera: LineScanCamera, rows: int, cols: int) -> LineScanCamera:
    """The first ``rows × cols`` pixels of the image (cropping keeps every pixel's ray)."""
    return replace(camera, width=cols, height=rows)


def linescan_similarity(volume: DRRVolume, view: LineScanView, camera_to_world: torch.Tensor,
                        weight: float = 0.5, method: str = "trilinear") -> torch.Tensor:
    """The registration similarity of the view's image and the DRR at ``camera_to_world`` (differentiable)."""
    image = view.image.to(device=volume.device, dtype=volume.dtype)
    drr = render_linescan(volume, camera_to_world, view.camera, method=method)
    mask = None if view.mask is None else view.mask.to(volume.device)
    return registration_similarity(drr, image, mask, weight)[0]


class _Correction(torch.nn.Module):
    """The shared correction's parameters: rotation (rad) and translation (mm), zero at the header pose."""

    def __init__(self, start: torch.Tensor, center: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("start", start)
        self.register_buffer("center", center)
        self.rotation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return rigid_about(self.rotation, self.translation, self.center) @ self.start


def view_similarities(volume: DRRVolume, views: list[LineScanView], correction: torch.Tensor,
                      settings: LineScanSettings = LineScanSettings()) -> list[float]:
    """Each view's similarity at ``correction @ header`` (no gradients)."""
    with torch.no_grad():
        return [float(linescan_similarity(volume, v, correction @ v.camera_to_world, settings.similarity_weight,
                                          settings.method)) for v in views]


def _mean_similarity(volume, views, correction, settings) -> torch.Tensor:
    values = [linescan_similarity(volume, v, correction @ v.camera_to_world, settings.similarity_weight,
                                  settings.method) for v in views]
    return torch.stack(values).mean()


def _run_stage(volume, views, start, center, stage: LineScanStage, settings: LineScanSettings, trajectory, index):
    """Adam on one resolution; the best correction of the stage."""
    params = _Correction(start, center)
    optimizer = torch.optim.Adam([{"params": [params.rotation], "lr": stage.lr_rotation},
                                  {"params": [params.translation], "lr": stage.lr_translation}], maximize=True)
    best_value, best, stale = -math.inf, start, 0
    for iteration in range(1, stage.iterations + 1):
        optimizer.zero_grad()
        correction = params()
        value = _mean_similarity(volume, views, correction, settings)
        value.backward()
        v = float(value.detach())
        trajectory.append({"stage": index, "iteration": iteration, "similarity": v})
        if v > best_value:
            best_value, best, stale = v, correction.detach(), 0
        else:
            stale += 1
        if stale > settings.patience:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            stale = 0
        optimizer.step()
    return best


def register_linescan(
    volume: DRRVolume,
    views: list[LineScanView],
    *,
    center: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    settings: LineScanSettings = LineScanSettings(),
) -> LineScanResult:
    """The rigid correction that best aligns ``volume``'s DRRs with every scout in ``views`` (module docstring).

    ``start``: the correction to start from (4, 4); the header poses (identity) by default.
    """
    if not views:
        raise ValueError("register_linescan needs at least one view")
    center = (volume.center if center is None else torch.as_tensor(center)).to(torch.float64).cpu()
    correction = torch.eye(4, dtype=torch.float64) if start is None else start.detach().to(torch.float64).cpu()
    trajectory: list[dict] = []
    for index, stage in enumerate(settings.stages):
        small = [view_at(v, stage.factor) for v in views]
        correction = _run_stage(volume, small, correction, center, stage, settings, trajectory, index)
    final = [view_at(v, settings.stages[-1].factor) for v in views]
    header = view_similarities(volume, final, torch.eye(4, dtype=torch.float64), settings)
    registered = view_similarities(volume, final, correction, settings)
    rotation, translation = pose_change(correction, center)
    return LineScanResult(correction, header, registered, rotation, translation, trajectory)
