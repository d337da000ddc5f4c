"""Line-scan cameras: CT scouts (localizers, topograms), fan-beam across a row, parallel along the table.

A CT scout is taken with the gantry parked while the table moves: each image **row** is one table
position with its own source position, and within a row the rays fan out from that source through
the detector row. So the projection is a pinhole across the columns and orthographic along the rows.

**Camera frame** (right-handed, mm; the world, the pose and mirrored views as in
:mod:`xvrcore.conventions`): origin at the source of row ``cv``, **+z** along the central ray toward
the detector, **+y** along increasing image row (the direction the sources move), **+x** = y × z.
Row ``v``'s source sits at ``(0, (v − cv) · row_spacing, 0)``; column ``u``'s ray, in every row,
points along ``(s (u − cu) · col_spacing / plane_distance, 0, 1)``, where ``col_spacing`` is the
column spacing in the plane ``plane_distance`` mm from the source (the isocentre plane of a CT
scanner) and ``s = −1`` for a mirrored (detector-side) view, the way DICOM shows projections.
The pose is a proper ``camera_to_world`` like the pinhole's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .camera import pixel_grid

__all__ = ["LineScanCamera", "linescan_rays", "project_linescan"]


@dataclass(frozen=True)
class LineScanCamera:
    """A line-scan (CT scout) camera; see the module docstring for the frame and the parameters."""

    width: int  # columns: detector channels across the fan
    height: int  # rows: table positions
    col_spacing: float  # mm between columns, in the plane ``plane_distance`` from the source
    row_spacing: float  # mm of source travel between rows
    plane_distance: float  # source to the plane where ``col_spacing`` holds (the isocentre), mm
    cu: float  # column of the central ray
    cv: float  # row whose source is the frame's origin
    mirrored: bool = True  # columns increase along −x (detector-side view, as DICOM displays it)
    sdd: float | None = None  # source to detector, mm (recorded; the rays do not need it)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}×{self.height}")
        values = (self.col_spacing, self.row_spacing, self.plane_distance, self.cu, self.cv)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"line-scan camera parameters must be finite: {self}")
        if not (self.col_spacing > 0 and self.row_spacing > 0 and self.plane_distance > 0):
            raise ValueError(
                f"spacings and the plane distance must be positive, got col_spacing={self.col_spacing}, "
                f"row_spacing={self.row_spacing}, plane_distance={self.plane_distance}"
            )

    @property
    def column_sign(self) -> float:
        return -1.0 if self.mirrored else 1.0

    def resized(self, width: int, height: int) -> LineScanCamera:
        """The same field of view sampled on a ``width × height`` grid (e.g. area-downsampled)."""
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            width=width,
            height=height,
            col_spacing=self.col_spacing / sx,
            row_spacing=self.row_spacing / sy,
            cu=sx * (self.cu + 0.5) - 0.5,
            cv=sy * (self.cv + 0.5) - 0.5,
        )

    def pixels(self, step: int = 1, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """Pixel centres ``(u, v)`` of the image (every ``step``-th), ``(H', W', 2)``."""
        return pixel_grid(self.height, self.width, step=step, dtype=dtype, device=device)

    def rays(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame ray origins and directions (unit z-component) of ``pixels`` ``(..., 2)``."""
        u, v = pixels[..., 0], pixels[..., 1]
        zero = torch.zeros_like(u)
        origins = torch.stack([zero, (v - self.cv) * self.row_spacing, zero], -1)
        slope = self.column_sign * (u - self.cu) * (self.col_spacing / self.plane_distance)
        return origins, torch.stack([slope, zero, torch.ones_like(u)], -1)

    def footprint(self, depth: float) -> float:
        """The smaller pixel side (mm) at ``depth`` mm from the sources."""
        return min(self.col_spacing * depth / self.plane_distance, self.row_spacing)


def linescan_rays(
    camera_to_world: torch.Tensor, camera: LineScanCamera, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World ray origins ``(B, P, 3)`` and unit directions ``(B, P, 3)`` of ``pixels`` ``(P, 2)``."""
    pose = camera_to_world.reshape(-1, 4, 4)
    o_cam, d_cam = camera.rays(pixels.to(pose.dtype))
    rot, shift = pose[:, :3, :3], pose[:, None, :3, 3]
    origins = o_cam @ rot.transpose(-1, -2) + shift
    directions = d_cam @ rot.transpose(-1, -2)
    return origins, directions / directions.norm(dim=-1, keepdim=True)


def project_linescan(
    points: torch.Tensor, world_to_camera: torch.Tensor, camera: LineScanCamera
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``(B, N, 2)`` and depths along +z ``(B, N)`` of world points ``(N, 3)``/``(B, N, 3)``.

    The row is fixed by the point's position along the table (+y), the column by the fan (x / z).
    """
    w2c = world_to_camera.reshape(-1, 4, 4)
    cam = points.to(w2c.dtype) @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]
    x, y, z = cam.unbind(-1)
    u = camera.cu + camera.column_sign * (x / z) * (camera.plane_distance / camera.col_spacing)
    v = camera.cv + y / camera.row_spacing
    return torch.stack([u, v], -1), z
