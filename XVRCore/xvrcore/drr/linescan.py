"""DRRs of a line-scan camera (a CT scout): one source per image row, a fan within each row.

The same integrators, pyramid and chunking as :func:`xvrcore.drr.render` (its module docstring);
only the rays differ: they come from :class:`xvrcore.geometry.linescan.LineScanCamera` instead of
a pinhole's single source. Differentiable in the pose (autograd through the ray origins and
directions). The camera → world → voxel-index chain is formed in float64, then cast.
"""

from __future__ import annotations

import torch

from ..geometry.linescan import LineScanCamera
from ..geometry.rotations import invert_rigid
from .backends import get_backend
from .pyramid import DRRVolume, PyramidLevel
from .render import DEFAULT_CHUNK_SAMPLES, integrate_rays

__all__ = ["render_linescan"]


def _linescan_pixels(camera: LineScanCamera, pixels, device) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pixel coordinates ``(P, 2)`` (float64) and the output's trailing shape."""
    if pixels is None or isinstance(pixels, int):
        pixels = camera.pixels(step=1 if pixels is None else pixels, device=device)
    pixels = torch.as_tensor(pixels, device=device).to(torch.float64)
    if pixels.shape[-1] != 2 or pixels.dim() not in (2, 3):
        raise ValueError(f"pixels must have shape (H, W, 2) or (P, 2), got {tuple(pixels.shape)}")
    return pixels.reshape(-1, 2), tuple(pixels.shape[:-1])


def _footprint(volume: DRRVolume, pose: torch.Tensor, camera: LineScanCamera) -> float:
    """The pixel size (mm) at the depth of the volume centre, the smallest over the batch."""
    with torch.no_grad():
        centre = torch.cat([volume.center, volume.center.new_ones(1)]).to(pose.device)
        depth = (invert_rigid(pose.to(torch.float64)) @ centre)[:, 2].min()
    return camera.footprint(max(float(depth), 1e-6))


def _rays_in_index_frame(lvl: PyramidLevel, pose: torch.Tensor, camera: LineScanCamera, pixels, dtype):
    """Origins ``(B·P, 3)``, directions ``(B·P, 3)`` and world mm per unit parameter ``(B·P,)``."""
    device = lvl.data.device
    to_index = lvl.world_to_ijk.to(device) @ pose.to(device=device, dtype=torch.float64)
    o_cam, d_cam = camera.rays(pixels)
    rot, shift = to_index[:, :3, :3], to_index[:, None, :3, 3]
    origins = o_cam @ rot.transpose(-1, -2) + shift
    directions = d_cam @ rot.transpose(-1, -2)
    lengths = d_cam.norm(dim=-1).expand(pose.shape[0], -1)
    return tuple(x.reshape(-1, *x.shape[2:]).to(dtype) for x in (origins, directions, lengths))


def render_linescan(
    volume: DRRVolume,
    camera_to_world: torch.Tensor,
    camera: LineScanCamera,
    pixels: torch.Tensor | int | None = None,
    *,
    method: str = "trilinear",
    level: int | str = "auto",
    lod_bias: float = 1.25,
    step: float = 0.5,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
) -> torch.Tensor:
    """Render line-scan DRRs of ``volume`` for a batch of poses (the arguments as for ``render``).

    Args:
        camera_to_world: ``(4, 4)`` or ``(B, 4, 4)`` proper rigid poses of the line-scan frame.
        camera: the scout's geometry (:class:`LineScanCamera`).
        pixels: ``None`` (full image), an int step, or pixel coordinates ``(H, W, 2)`` / ``(P, 2)``.

    Returns:
        ``(B, C, H, W)`` for a grid of pixels, ``(B, C, P)`` for a list; line integrals.
    """
    backend = get_backend(method)
    pose = camera_to_world.reshape(-1, 4, 4)
    pix, out_shape = _linescan_pixels(camera, pixels, volume.device)
    if level == "auto":
        level = volume.choose_level(_footprint(volume, pose, camera), lod_bias)
    lvl = volume.level(int(level))
    rays = _rays_in_index_frame(lvl, pose, camera, pix, volume.dtype)
    values = integrate_rays(backend, lvl, *rays, chunk_samples=chunk_samples, step=step)
    return values.reshape(volume.channels, pose.shape[0], *out_shape).transpose(0, 1)
