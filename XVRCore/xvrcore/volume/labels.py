"""Label-map helpers: which structures exist, their masks and boxes, and masked attenuation."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .grid import Volume, VolumeError, mask_bounds

__all__ = ["label_values", "masked_attenuation", "structure_bounding_box", "structure_mask", "structure_volumes"]

_BINCOUNT_MAX = 1 << 16  # below this, counting is faster than sorting for np.unique


def _require_labels(labelmap: Volume) -> np.ndarray:
    if not np.issubdtype(labelmap.data.dtype, np.integer):
        raise VolumeError(
            f"{labelmap.source}: expected an integer label map, got {labelmap.data.dtype} voxels "
            "(load it with load_labelmap)"
        )
    return labelmap.data


def label_values(labelmap: Volume) -> list[int]:
    """Sorted non-zero labels present in the label map."""
    data = _require_labels(labelmap)
    if data.size and data.min() >= 0 and data.max() < _BINCOUNT_MAX:
        present = np.flatnonzero(np.bincount(data.ravel()))
    else:
        present = np.unique(data)
    return [int(v) for v in present if v != 0]


def _as_label_list(labels: Iterable[int] | int) -> list[int]:
    return [int(labels)] if np.isscalar(labels) else [int(v) for v in labels]


def structure_mask(labelmap: Volume, labels: Iterable[int] | int) -> np.ndarray:
    """Bool (K, J, I) mask of the voxels carrying any of ``labels``; every label must be present."""
    wanted = _as_label_list(labels)
    if not wanted:
        raise VolumeError(f"{labelmap.source}: no labels requested")
    present = label_values(labelmap)
    missing = sorted(set(wanted) - set(present))
    if missing:
        shown = ", ".join(map(str, present[:40])) + (" ..." if len(present) > 40 else "")
        raise VolumeError(
            f"{labelmap.source}: label(s) {missing} not found; labels present: {shown or 'none'}"
        )
    return np.isin(labelmap.data, wanted)


def structure_bounding_box(labelmap: Volume, label: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ijk_min, ijk_max), inclusive-exclusive in (i, j, k) order, of one label."""
    bounds = mask_bounds(structure_mask(labelmap, [label]))
    assert bounds is not None  # structure_mask guarantees the label is present
    return bounds


def masked_attenuation(attenuation: Volume, labelmap: Volume, labels: Iterable[int] | int) -> Volume:
    """Attenuation kept only inside the chosen structures (0 elsewhere); grids must match."""
    if attenuation.kind != "attenuation":
        raise VolumeError(
            f"{attenuation.source}: expected an attenuation volume, got kind {attenuation.kind!r} "
            "(convert it with to_attenuation first, so that 0 outside the structures means air)"
        )
    if not attenuation.same_grid(labelmap):
        raise VolumeError(
            f"{labelmap.source}: label map grid differs from {attenuation.source}; "
            "load it with load_labelmap(path, reference=...) to resample it first"
        )
    mask = structure_mask(labelmap, labels)
    data = np.where(mask, attenuation.data, np.zeros((), dtype=attenuation.data.dtype))
    return attenuation.with_data(data.astype(np.float32, copy=False), kind="attenuation")


def structure_volumes(
    labelmap: Volume, labels: Iterable[int] | int, attenuation: Volume | None = None
) -> dict[int, Volume]:
    """One small volume per structure, cropped to its bounding box (plus one empty voxel).

    Without ``attenuation`` each holds the structure's binary mask (1 inside), whose DRR is the
    structure's thickness along each ray in mm — what reprojected outlines are drawn from. With
    it, the structure's attenuation. Cropping keeps the memory to the structures' size, however
    many there are.
    """
    if attenuation is not None and not attenuation.same_grid(labelmap):
        raise VolumeError(f"{labelmap.source}: label map grid differs from {attenuation.source}")
    out = {}
    shape = np.array(labelmap.shape_ijk)
    for label in _as_label_list(labels):
        lo, hi = structure_bounding_box(labelmap, label)
        lo, hi = np.maximum(np.array(lo) - 1, 0), np.minimum(np.array(hi) + 1, shape)
        box = labelmap.crop(lo, hi)
        inside = box.data == label
        values = attenuation.crop(lo, hi).data if attenuation is not None else np.ones(inside.shape, np.float32)
        data = np.where(inside, values, 0).astype(np.float32)
        out[label] = box.with_data(data, kind="attenuation" if attenuation is not None else "generic")
    return out
