"""Pinhole C-arm geometry: intrinsics, detectors, rays, projection and the camera frustum.

The world and camera frames, the intrinsics and the mirrored (detector-side) views these classes
implement are defined in :mod:`xvrcore.conventions`. In short: a mirrored view has ``fx < 0``
(:attr:`Intrinsics.mirrored`), and every pose stays a proper rigid ``camera_to_world``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .rotations import invert_rigid

__all__ = [
    "Detector",
    "Intrinsics",
    "backproject",
    "camera_directions",
    "frustum_corners",
    "pixel_grid",
    "project",
    "projection_matrix",
    "source_position",
    "world_to_camera",
]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; ``fx < 0`` marks a mirrored (detector-side) image."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}×{self.height}")
        if not all(math.isfinite(v) for v in (self.fx, self.fy, self.cx, self.cy)):
            raise ValueError(f"intrinsics must be finite: {self}")
        if self.fx == 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be non-zero (fy > 0), got fx={self.fx}, fy={self.fy}")

    @property
    def mirrored(self) -> bool:
        return self.fx < 0

    def matrix(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device
        )

    @classmethod
    def from_matrix(cls, matrix, width: int, height: int) -> Intrinsics:
        k = torch.as_tensor(matrix, dtype=torch.float64)
        if k.shape != (3, 3):
            raise ValueError(f"intrinsic matrix must be 3×3, got shape {tuple(k.shape)}")
        k = k / k[2, 2]
        if abs(k[0, 1]) > 1e-9 * abs(k[0, 0]) or k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0:
            raise ValueError("intrinsic matrix must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    def resized(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same field of view sampled on a ``width × height`` grid."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, sx * (self.cx + 0.5) - 0.5, sy * (self.cy + 0.5) - 0.5, width, height
        )

    def cropped(self, col0: int, row0: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of the sub-image whose first pixel is (col0, row0) of this image."""
        return Intrinsics(self.fx, self.fy, self.cx - col0, self.cy - row0, width, height)

    def with_mirror(self, mirrored: bool) -> Intrinsics:
        return replace(self, fx=abs(self.fx) * (-1.0 if mirrored else 1.0))


@dataclass(frozen=True)
class Detector:
    """A flat-panel C-arm in physical units.

    ``principal_offset`` is the (column, row) position in mm of the principal point (the foot
    of the perpendicular from the source) relative to the detector centre, measured along
    increasing columns and rows. ``mirrored`` is True for images displayed as seen from the
    detector (every DICOM X-ray), False for the pinhole view from the source.
    """

    sdd: float
    rows: int
    cols: int
    row_spacing: float
    col_spacing: float
    principal_offset: tuple[float, float] = (0.0, 0.0)
    mirrored: bool = True

    def __post_init__(self) -> None:
        if not (self.sdd > 0 and self.row_spacing > 0 and self.col_spacing > 0):
            raise ValueError(
                f"source-to-detector distance and pixel spacings must be positive, got sdd={self.sdd}, "
                f"spacing=({self.row_spacing}, {self.col_spacing})"
            )
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"detector size must be positive, got {self.rows}×{self.cols}")

    def intrinsics(self) -> Intrinsics:
        fx = self.sdd / self.col_spacing
        return Intrinsics(
            fx=-fx if self.mirrored else fx,
            fy=self.sdd / self.row_spacing,
            cx=(self.cols - 1) / 2 + self.principal_offset[0] / self.col_spacing,
            cy=(self.rows - 1) / 2 + self.principal_offset[1] / self.row_spacing,
            width=self.cols,
            height=self.rows,
        )

    def rescaled(self, factor: float) -> Detector:
        """The same detector read out with ``factor`` times fewer pixels per side (same field of view)."""
        rows, cols = max(1, round(self.rows / factor)), max(1, round(self.cols / factor))
        return replace(
            self,
            rows=rows,
            cols=cols,
            row_spacing=self.row_spacing * self.rows / rows,
            col_spacing=self.col_spacing * self.cols / cols,
        )

    @property
    def field_of_view(self) -> tuple[float, float]:
        """Detector height and width in mm."""
        return self.rows * self.row_spacing, self.cols * self.col_spacing


def pixel_grid(
    height: int, width: int, step: int = 1, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Pixel centres ``(u, v)`` of a full image, or of every ``step``-th pixel, shape ``(H', W', 2)``."""
    v = torch.arange(0, height, step, dtype=dtype, device=device)
    u = torch.arange(0, width, step, dtype=dtype, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1)


def _as_batch(transform: torch.Tensor) -> torch.Tensor:
    if transform.shape[-2:] != (4, 4):
        raise ValueError(f"expected 4×4 transforms, got shape {tuple(transform.shape)}")
    return transform.reshape(-1, 4, 4)


def _as_k(intrinsics, dtype, device) -> torch.Tensor:
    if isinstance(intrinsics, Intrinsics):
        return intrinsics.matrix(dtype, device)
    return torch.as_tensor(intrinsics, dtype=dtype, device=device)


def camera_directions(intrinsics, pixels: torch.Tensor) -> torch.Tensor:
    """Camera-frame ray directions ``K⁻¹ (u, v, 1)`` with unit z-component.

    ``pixels``: ``(..., 2)``; ``intrinsics``: an :class:`Intrinsics`, a 3×3 matrix or ``(B, 3, 3)``
    matrices (then ``pixels`` is ``(P, 2)`` or ``(B, P, 2)``). Differentiable in ``K``.
    """
    k = _as_k(intrinsics, pixels.dtype, pixels.device)
    fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
    if k.dim() == 3:  # batched intrinsics: broadcast over the pixel dimension
        fx, fy, cx, cy = (x[:, None] for x in (fx, fy, cx, cy))
    x = (pixels[..., 0] - cx) / fx
    y = (pixels[..., 1] - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], -1)


def backproject(camera_to_world: torch.Tensor, intrinsics, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres: source positions ``(B, 3)`` and unit world directions ``(B, P, 3)``."""
    pose = _as_batch(camera_to_world)
    d_cam = camera_directions(intrinsics, pixels.to(pose.dtype))  # (P, 3) or (B, P, 3)
    d_world = d_cam @ pose[:, :3, :3].transpose(-1, -2)
    return pose[:, :3, 3], d_world / d_world.norm(dim=-1, keepdim=True)


def project(points: torch.Tensor, world_to_camera: torch.Tensor, intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``(B, N, 2)`` and camera depths ``(B, N)`` of world points ``(N, 3)`` or ``(B, N, 3)``."""
    w2c = _as_batch(world_to_camera)
    pts = points.to(w2c.dtype)
    cam = pts @ w2c[..., :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]
    k = _as_k(intrinsics, w2c.dtype, w2c.device)
    img = cam @ k.transpose(-1, -2)
    return img[..., :2] / img[..., 2:], cam[..., 2]


def projection_matrix(world_to_camera: torch.Tensor, intrinsics) -> torch.Tensor:
    """``P = K [R | t]`` of shape ``(B, 3, 4)``."""
    w2c = _as_batch(world_to_camera)
    return _as_k(intrinsics, w2c.dtype, w2c.device) @ w2c[:, :3, :]


def frustum_corners(camera_to_world: torch.Tensor, intrinsics: Intrinsics, depth: float) -> torch.Tensor:
    """World coordinates ``(B, 5, 3)`` of the source and the four image corners at ``depth`` mm.

    Corners are the outer pixel edges in the order (first row, first column), (first row, last
    column), (last row, last column), (last row, first column), so a panel can draw the
    detector outline and label its first pixel.
    """
    pose = _as_batch(camera_to_world)
    w, h = intrinsics.width, intrinsics.height
    corners = torch.tensor([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], dtype=pose.dtype)
    cam = camera_directions(intrinsics, corners.to(pose.device)) * depth
    cam = torch.cat([torch.zeros(1, 3, dtype=pose.dtype, device=pose.device), cam], 0)
    return cam @ pose[:, :3, :3].transpose(-1, -2) + pose[:, None, :3, 3]


def world_to_camera(camera_to_world: torch.Tensor) -> torch.Tensor:
    return invert_rigid(camera_to_world)


def source_position(camera_to_world: torch.Tensor) -> torch.Tensor:
    return _as_batch(camera_to_world)[:, :3, 3]
