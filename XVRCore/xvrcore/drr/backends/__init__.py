"""The line integrators behind :func:`xvrcore.drr.render`, one signature for all, chosen by name.

Every backend integrates rays given in the voxel-index frame of a pyramid level:
``integrate(level, axis, origins (N, 3), directions (N, 3), lengths (N,), step) -> (C, N)``
(``lengths``: world mm per unit ray parameter; ``axis``: the rays' dominant index axis for the
slice-wise backends; ``step``: sample spacing in voxels for the ray-marching reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..pyramid import PyramidLevel
from .raymarch import integrate_raymarch
from .siddon import integrate_siddon
from .trilinear import integrate_trilinear

__all__ = ["BACKENDS", "METHODS", "Backend", "get_backend"]


@dataclass(frozen=True)
class Backend:
    """A line integrator and what the renderer needs to know to feed it."""

    integrate: Callable[..., torch.Tensor]
    by_axis: bool  # rays must be grouped by their dominant index axis (slice-wise integration)
    light_backward: bool  # keeps no per-sample tensors for backward, so chunks need no recomputation

    def samples_per_ray(self, level: PyramidLevel, axis: int) -> int:
        """Samples one ray costs (bounds the rays per chunk)."""
        return level.shape_ijk[axis] if self.by_axis else max(level.shape_ijk) * 2


BACKENDS = {
    "trilinear": Backend(integrate_trilinear, by_axis=True, light_backward=True),
    "siddon": Backend(integrate_siddon, by_axis=True, light_backward=False),
    "raymarch": Backend(integrate_raymarch, by_axis=False, light_backward=False),
}
METHODS = tuple(BACKENDS)


def get_backend(method: str) -> Backend:
    if method not in BACKENDS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return BACKENDS[method]
