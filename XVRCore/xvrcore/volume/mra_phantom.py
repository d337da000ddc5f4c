"""An MRA-like volume built from a CT: the CT's head, coarsened, with synthetic vessels (tests, evaluation).

No open time-of-flight MRA small enough to ship with the tests is at hand, so one is made from the
head CT we have (README, "MRA and DSA"): the CT is block-averaged to a coarse grid, its tissues are
given TOF-like intensities (air 0, bone dark, soft tissue dim) and smooth tubes (cubic Bézier curves
through the brain) are drawn bright, with partial volume at their walls. The vessels' occupancy (the
fraction of each voxel inside a tube) is returned too: it is the truth a DSA-like image is made from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Volume, VolumeError

__all__ = ["MRAPhantom", "block_average", "mra_like_from_ct", "tube_occupancy", "vessel_curves"]

# TOF-MRA-like intensities (arbitrary units): flowing blood bright, stationary tissue suppressed,
# bone and air dark. Air is exactly 0, as in a background-masked MRA.
TISSUE_SIGNAL = 120.0
BONE_SIGNAL = 40.0
VESSEL_SIGNAL = 600.0
NOISE_SIGMA = 6.0
_AIR_HU, _BONE_HU = -500.0, 250.0


@dataclass
class MRAPhantom:
    """The MRA-like volume, its vessels as a label map (1 = vessel), and the vessels' occupancy (0…1)."""

    mra: Volume
    vessels: Volume
    occupancy: Volume


def block_average(volume: Volume, spacing_mm: float) -> Volume:
    """``volume`` averaged over blocks of whole voxels, each about ``spacing_mm`` wide (never finer)."""
    factors = [max(1, round(float(spacing_mm / s))) for s in volume.spacing]  # (i, j, k)
    fi, fj, fk = factors
    k, j, i = (n // f * f for n, f in zip(volume.data.shape, (fk, fj, fi), strict=True))
    if min(k, j, i) == 0:
        raise VolumeError(f"{volume.source}: too small to average over {factors} voxels")
    blocks = volume.data[:k, :j, :i].astype(np.float32).reshape(k // fk, fk, j // fj, fj, i // fi, fi)
    scale = np.diag([*map(float, factors), 1.0])
    scale[:3, 3] = [(f - 1) / 2 for f in factors]  # the block's centre, in old voxel indices
    return Volume(blocks.mean((1, 3, 5)), volume.affine @ scale, volume.source, "generic")


def vessel_curves(center: np.ndarray, half_extent: np.ndarray, count: int, rng: np.random.Generator,
                  radius_mm: tuple[float, float] = (2.0, 3.5), step_mm: float = 2.0) -> list[tuple[np.ndarray, float]]:
    """``count`` smooth tubes: ``(points (M, 3) RAS mm, radius mm)``, cubic Béziers inside a box about ``center``."""
    curves = []
    for _ in range(count):
        control = center + rng.uniform(-1.0, 1.0, (4, 3)) * half_extent
        chord = np.linalg.norm(np.diff(control, axis=0), axis=1).sum()  # bounds the curve's length
        t = np.linspace(0.0, 1.0, max(8, int(chord / step_mm)))[:, None]
        points = ((1 - t) ** 3 * control[0] + 3 * (1 - t) ** 2 * t * control[1]
                  + 3 * (1 - t) * t**2 * control[2] + t**3 * control[3])
        curves.append((points, float(rng.uniform(*radius_mm))))
    return curves


def tube_occupancy(grid: Volume, curves: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Fraction (K, J, I) of each voxel inside any tube: a linear ramp one voxel wide across the wall."""
    wall = float(np.mean(grid.spacing))
    occupancy = np.zeros(grid.data.shape, dtype=np.float32)
    for points, radius in curves:
        # short pieces of the curve, each with its own small box of voxels (the ramp is monotonic,
        # so the maximum over the pieces is the ramp of the distance to the whole curve)
        for first in range(0, len(points) - 1, _PIECE):
            _draw_piece(occupancy, grid, points[first:first + _PIECE + 1], radius, wall)
    return occupancy


_PIECE = 6  # segments per piece of a curve


def _draw_piece(occupancy: np.ndarray, grid: Volume, points: np.ndarray, radius: float, wall: float) -> None:
    reach = (radius + wall) / grid.spacing
    ijk = grid.ras_to_ijk(points)
    lo = np.maximum(np.floor(ijk.min(0) - reach).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(0) + reach).astype(int) + 1, grid.shape_ijk)
    if np.any(hi <= lo):
        return
    ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    xyz = grid.ijk_to_ras(np.stack([ii, jj, kk], -1).reshape(-1, 3).astype(np.float64))
    inside = np.clip((radius - _distance_to_polyline(xyz, points)) / wall + 0.5, 0.0, 1.0).astype(np.float32)
    view = occupancy[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    np.maximum(view, inside.reshape(ii.shape).transpose(2, 1, 0), out=view)


def _distance_to_polyline(xyz: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (N,) from each point of ``xyz`` (N, 3) to the polyline through ``points`` (M, 3)."""
    start, seg = points[:-1], np.diff(points, axis=0)
    length2 = np.maximum((seg * seg).sum(-1), 1e-12)
    rel = xyz[:, None, :] - start[None]
    t = np.clip((rel * seg[None]).sum(-1) / length2, 0.0, 1.0)
    return np.linalg.norm(rel - t[..., None] * seg[None], axis=-1).min(1)


def mra_like_from_ct(ct: Volume, spacing_mm: float = 3.0, vessels: int = 12, seed: int = 0) -> MRAPhantom:
    """A TOF-MRA-like volume of ``ct`` (HU) on a grid about ``spacing_mm`` coarse, with ``vessels`` tubes.

    The tubes run through a box about the centre of the soft tissue, 35 % of the head's extent to
    each side in x and y and 30 % in z (inside the skull for a head CT).
    """
    rng = np.random.default_rng(seed)
    coarse = block_average(ct, spacing_mm)
    hu = coarse.data
    head = hu > _AIR_HU
    if not head.any():
        raise VolumeError(f"{ct.source}: no voxel above {_AIR_HU:g} HU; is this a CT in HU?")
    soft = np.argwhere(head & (hu < 100.0))[:, ::-1].astype(np.float64)
    box = np.argwhere(head)[:, ::-1]
    center = coarse.ijk_to_ras(soft.mean(0))
    half = (box.max(0) - box.min(0)) * coarse.spacing * np.array([0.35, 0.35, 0.3])
    occupancy = tube_occupancy(coarse, vessel_curves(center, half, vessels, rng))
    base = np.where(hu > _BONE_HU, BONE_SIGNAL, TISSUE_SIGNAL)
    signal = base * (1 - occupancy) + VESSEL_SIGNAL * occupancy + rng.normal(0.0, NOISE_SIGMA, hu.shape)
    mra = np.where(head | (occupancy > 0), np.maximum(signal, 1.0), 0.0).astype(np.float32)
    return MRAPhantom(coarse.with_data(mra, kind="mra"),
                      coarse.with_data((occupancy >= 0.5).astype(np.int16), kind="labels"),
                      coarse.with_data(occupancy, kind="attenuation"))
