"""Label-map helpers: which structures exist, their masks and boxes, and masked attenuation.

A label map holds structure ids: whole numbers >= 0 (0 = background), a few dozen to a few hundred
of them (TotalSegmentator: 117, FreeSurfer's aparc+aseg: about 190). :func:`check_label_map` refuses
one with negative values or more than :data:`MAX_STRUCTURES` ids — an image given as a label map (a
CT in HU holds thousands of values), whose structures would take hours to build. The boxes of all
structures come from one pass per axis (:func:`structure_volumes`), and ``should_stop`` is polled
between structures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .grid import Volume, VolumeError, mask_bounds

__all__ = [
    "MAX_STRUCTURES",
    "check_label_map",
    "label_values",
    "masked_attenuation",
    "structure_bounding_box",
    "structure_mask",
    "structure_volumes",
]

MAX_STRUCTURES = 300  # distinct non-zero ids a label map may hold
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


def check_label_map(labelmap: Volume) -> list[int]:
    """The label map's sorted non-zero ids; refuses negative values and more than :data:`MAX_STRUCTURES` ids."""
    data = _require_labels(labelmap)
    lowest = int(data.min()) if data.size else 0
    if lowest < 0:
        raise VolumeError(f"{labelmap.source}: a label map holds structure ids >= 0, but this one has values down "
                          f"to {lowest}; is it an image (a CT in HU) rather than a label map?")
    present = label_values(labelmap)
    if len(present) > MAX_STRUCTURES:
        raise VolumeError(f"{labelmap.source}: {len(present)} distinct labels, more than the {MAX_STRUCTURES} "
                          "structures a label map may hold; is it an image rather than a label map?")
    return present


def _as_label_list(labels: Iterable[int] | int) -> list[int]:
    return [int(labels)] if np.isscalar(labels) else [int(v) for v in labels]


def structure_mask(labelmap: Volume, labels: Iterable[int] | int) -> np.ndarray:
    """Bool (K, J, I) mask of the voxels carrying any of ``labels``; every label must be present."""
    wanted = _as_label_list(labels)
    if not wanted:
        raise VolumeError(f"{labelmap.source}: no labels requested")
    _check_present(labelmap, wanted)
    return np.isin(labelmap.data, wanted)


def _check_present(labelmap: Volume, wanted: list[int]) -> None:
    present = label_values(labelmap)
    missing = sorted(set(wanted) - set(present))
    if missing:
        shown = ", ".join(map(str, present[:40])) + (" ..." if len(present) > 40 else "")
        raise VolumeError(
            f"{labelmap.source}: label(s) {missing} not found; labels present: {shown or 'none'}"
        )


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


def _boxes(labelmap: Volume, labels: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(ijk_min, ijk_max), inclusive-exclusive, of each of ``labels`` (present, >= 1), from one pass per axis."""
    data = labelmap.data
    if int(data.min()) < 0 or int(data.max()) >= _BINCOUNT_MAX:  # ids that cannot be counted: one mask per label
        return {label: tuple(np.array(b) for b in structure_bounding_box(labelmap, label)) for label in labels}
    codes = np.zeros(int(data.max()) + 1, dtype=np.uint16)
    codes[labels] = np.arange(1, len(labels) + 1)
    extents = []
    for axis in (2, 1, 0):  # i, j, k: data is (K, J, I)
        slabs = np.moveaxis(data, axis, 0)
        present = np.stack([np.bincount(codes[slab].ravel(), minlength=len(labels) + 1)[1:] > 0 for slab in slabs])
        extents.append((present.argmax(0), len(present) - present[::-1].argmax(0)))
    return {label: (np.array([lo[n] for lo, _ in extents]), np.array([hi[n] for _, hi in extents]))
            for n, label in enumerate(labels)}


def structure_volumes(
    labelmap: Volume, labels: Iterable[int] | int, attenuation: Volume | None = None, *,
    should_stop: Callable[[], bool] | None = None,
) -> dict[int, Volume]:
    """One small volume per structure, cropped to its bounding box (plus one empty voxel).

    Without ``attenuation`` each holds the structure's binary mask (1 inside), whose DRR is the
    structure's thickness along each ray in mm — what reprojected outlines are drawn from. With
    it, the structure's attenuation. Cropping keeps the memory to the structures' size, however
    many there are. ``should_stop`` is polled before each structure: True returns those built so far.
    """
    if attenuation is not None and not attenuation.same_grid(labelmap):
        raise VolumeError(f"{labelmap.source}: label map grid differs from {attenuation.source}")
    wanted = _as_label_list(labels)
    if not wanted:
        return {}
    _check_present(labelmap, wanted)
    boxes = _boxes(labelmap, sorted(set(wanted)))
    out = {}
    shape = np.array(labelmap.shape_ijk)
    for label in wanted:
        if should_stop is not None and should_stop():
            break
        lo, hi = boxes[label]
        lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, shape)
        box = labelmap.crop(lo, hi)
        inside = box.data == label
        values = attenuation.crop(lo, hi).data if attenuation is not None else np.ones(inside.shape, np.float32)
        data = np.where(inside, values, 0).astype(np.float32)
        out[label] = box.with_data(data, kind="attenuation" if attenuation is not None else "generic")
    return out
