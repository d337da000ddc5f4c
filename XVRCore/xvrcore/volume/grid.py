"""The :class:`Volume`: a 3-D array on an exact voxel-to-RAS grid, and the checks every volume passes.

A :class:`Volume` holds a numpy array in SimpleITK order ``data[k, j, i]`` and a 4×4 affine that maps
the homogeneous voxel index ``(i, j, k, 1)`` to RAS millimetres (:mod:`xvrcore.conventions`). Index
``(0, 0, 0)`` is the centre of the first voxel. SimpleITK's physical frame is LPS, so the conversions
to and from its images flip x and y.

Every problem with a volume raises :class:`VolumeError`, whose message names the source and says what
is wrong in plain words. The readers are in :mod:`xvrcore.volume.readers`.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..conventions import LPS_TO_RAS
from ..io.atomic import atomic_write

__all__ = [
    "VOLUME_KINDS",
    "WRITE_SUFFIXES",
    "Volume",
    "VolumeError",
    "check_finite",
    "check_kind",
    "file_suffix",
    "itk_reason",
    "lps_geometry",
    "mask_bounds",
    "ras_affine",
    "validate",
]

VOLUME_KINDS = ("ct", "mra", "labels", "attenuation", "generic")
# Only single-file formats can be written atomically (.nhdr/.mhd write a second data file).
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

_LPS_TO_RAS = np.diag(LPS_TO_RAS)  # its own inverse
_DIRECTION_TOL = 1e-3  # NIfTI stores directions as float32, so allow a little slack
GRID_ATOL = 1e-4


class VolumeError(ValueError):
    """A volume (file or array) cannot be used; the message names the source and the problem."""


def file_suffix(path: Path) -> str:
    """The file's format suffix, ``.nii.gz`` counted as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def sizes_text(sizes) -> str:
    return "\u00d7".join(str(int(s)) for s in sizes)


@dataclass
class Volume:
    """A 3-D array ``data[k, j, i]`` with a voxel-index-to-RAS affine (mm)."""

    data: np.ndarray
    affine: np.ndarray
    source: str = "array"
    kind: str = "generic"

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if not isinstance(self.data, np.ndarray) or self.data.ndim != 3:
            raise VolumeError(f"{self.source}: volume data must be a 3-D numpy array in (K, J, I) order")
        if self.affine.shape != (4, 4):
            raise VolumeError(f"{self.source}: affine must be 4x4, got shape {self.affine.shape}")
        check_kind(self.kind, self.source)

    # --- geometry -----------------------------------------------------------------------
    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.data.shape
        return (i, j, k)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """RAS position of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def center(self) -> np.ndarray:
        """RAS position of the centre of the voxel box."""
        return self.ijk_to_ras((np.array(self.shape_ijk, dtype=np.float64) - 1.0) / 2.0)

    def corners(self) -> np.ndarray:
        """(8, 3) RAS corners of the voxel box, outer faces included (index -0.5 ... N-0.5).

        Order is ``itertools.product`` over the (low, high) ends of i, j, k.
        """
        ends = [(-0.5, n - 0.5) for n in self.shape_ijk]
        return self.ijk_to_ras(np.array(list(itertools.product(*ends)), dtype=np.float64))

    def ijk_to_ras(self, points) -> np.ndarray:
        """Map continuous voxel indices (..., 3) in (i, j, k) order to RAS mm (..., 3)."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_ijk(self, points) -> np.ndarray:
        """Map RAS mm points (..., 3) to continuous voxel indices (i, j, k)."""
        p = np.asarray(points, dtype=np.float64) - self.affine[:3, 3]
        return np.linalg.solve(self.affine[:3, :3], p.reshape(-1, 3).T).T.reshape(p.shape)

    def same_grid(self, other: Volume, atol: float = GRID_ATOL) -> bool:
        return self.shape_ijk == other.shape_ijk and bool(
            np.allclose(self.affine, other.affine, rtol=0.0, atol=atol)
        )

    # --- derived volumes ----------------------------------------------------------------
    def with_data(self, data: np.ndarray, kind: str | None = None) -> Volume:
        """A volume on the same grid with a new (K, J, I) array."""
        data = np.asarray(data)
        if data.shape != self.data.shape:
            raise VolumeError(
                f"{self.source}: new data has shape {data.shape}, the grid needs {self.data.shape} (K, J, I)"
            )
        return Volume(data, self.affine.copy(), self.source, kind or self.kind)

    def crop(self, ijk_min, ijk_max) -> Volume:
        """Sub-volume of index ranges [min, max) per i, j, k; kept voxels keep their RAS position."""
        lo = np.asarray(ijk_min, dtype=np.int64).reshape(3)
        hi = np.asarray(ijk_max, dtype=np.int64).reshape(3)
        shape = np.array(self.shape_ijk)
        if np.any(lo < 0) or np.any(hi > shape) or np.any(hi <= lo):
            raise VolumeError(
                f"{self.source}: crop range {tuple(lo)}..{tuple(hi)} is empty or outside the "
                f"volume of size {sizes_text(shape)} (I\u00d7J\u00d7K)"
            )
        data = self.data[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]].copy()
        affine = self.affine.copy()
        affine[:3, 3] = self.ijk_to_ras(lo.astype(np.float64))
        return Volume(data, affine, self.source, self.kind)

    def content_bounds(self, threshold: float) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """(ijk_min, ijk_max), inclusive-exclusive, of the voxels with data > threshold; None if none."""
        return mask_bounds(self.data > threshold)

    # --- output -------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with the same voxels and the geometry converted back to LPS."""
        data = self.data.astype(np.uint8) if self.data.dtype == bool else self.data
        image = sitk.GetImageFromArray(np.ascontiguousarray(data))
        origin, spacing, direction = lps_geometry(self.affine)
        image.SetOrigin(origin)
        image.SetSpacing(spacing)
        image.SetDirection(direction)
        return image

    def save(self, path: str | os.PathLike, compress: bool = True) -> Path:
        """Write NIfTI/NRRD/MetaImage atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        suffix = file_suffix(path)
        if suffix not in WRITE_SUFFIXES:
            what = suffix or "files without a suffix"
            raise VolumeError(f"{path}: cannot write {what}; use one of {WRITE_SUFFIXES}")
        if not path.parent.is_dir():
            raise VolumeError(f"{path}: the folder {path.parent} does not exist")
        image = self.to_sitk()

        def write(tmp: Path) -> None:
            writer = sitk.ImageFileWriter()
            writer.SetFileName(str(tmp))
            writer.SetUseCompression(compress)
            writer.Execute(image)

        try:
            atomic_write(path, write)
        except RuntimeError as exc:
            raise VolumeError(f"{path}: could not write the volume: {itk_reason(exc)}") from None
        return path


def mask_bounds(mask_kji: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Inclusive-exclusive (i, j, k) bounds of the True voxels of a (K, J, I) mask."""
    per_axis = [mask_kji.any(axis=(0, 1)), mask_kji.any(axis=(0, 2)), mask_kji.any(axis=(1, 2))]
    if not per_axis[0].any():
        return None
    lo = tuple(int(np.argmax(a)) for a in per_axis)
    hi = tuple(int(len(a) - np.argmax(a[::-1])) for a in per_axis)
    return lo, hi


def lps_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """SimpleITK (origin, spacing, direction) in LPS for a voxel-to-RAS affine."""
    linear = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = _LPS_TO_RAS @ affine[:3, 3]
    return tuple(map(float, origin)), tuple(map(float, spacing)), tuple(map(float, direction.ravel()))


def ras_affine(image: sitk.Image) -> np.ndarray:
    """Voxel-index-to-RAS affine of a 3-D SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=np.float64)
    return affine


# --- validation (shared by every loader) -----------------------------------------------------
def validate(data: np.ndarray, affine: np.ndarray, source: str, kind: str) -> np.ndarray:
    """Check array and geometry; return the data converted to the dtype the kind needs."""
    check_kind(kind, source)
    _check_shape(data, source)
    _check_geometry(affine, source)
    if np.iscomplexobj(data) or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise VolumeError(f"{source}: voxel type {data.dtype} is not a real number; expected scalar voxels")
    check_finite(data, source)
    _check_not_constant(data, source, kind)
    if kind == "labels":
        return _as_labels(data, source)
    data = data.astype(np.float32, copy=False)
    if kind == "attenuation" and data.min() < 0:
        raise VolumeError(f"{source}: attenuation must not be negative, found minimum {data.min():.6g} /mm")
    return data


def check_kind(kind: str, source: str) -> None:
    if kind not in VOLUME_KINDS:
        raise VolumeError(f"{source}: unknown volume kind {kind!r}; expected one of {VOLUME_KINDS}")


def _check_shape(data: np.ndarray, source: str) -> None:
    if data.ndim != 3:
        raise VolumeError(
            f"{source}: expected a 3-D volume, found a {data.ndim}-D array of shape {data.shape} "
            "(K, J, I order)"
        )
    if min(data.shape) < 2:
        raise VolumeError(
            f"{source}: a 3-D volume needs at least 2 voxels along each axis, found size "
            f"{sizes_text(data.shape[::-1])} (I\u00d7J\u00d7K)"
        )


def _check_geometry(affine: np.ndarray, source: str) -> None:
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeError(f"{source}: the voxel-to-RAS affine must be a finite 4x4 matrix")
    if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise VolumeError(f"{source}: the affine's last row must be (0, 0, 0, 1), got {fmt(affine[3])}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise VolumeError(f"{source}: spacing must be positive, got {fmt(spacing)} mm")
    direction = affine[:3, :3] / spacing
    if abs(np.linalg.det(direction)) < 1e-6:
        raise VolumeError(f"{source}: the direction matrix is singular (two voxel axes are parallel)")
    skew = np.abs(direction.T @ direction - np.eye(3)).max()
    if skew > _DIRECTION_TOL:
        angle = np.degrees(np.arcsin(min(skew, 1.0)))
        raise VolumeError(
            f"{source}: the direction matrix is not orthonormal (voxel axes are skewed by about "
            f"{angle:.3g} degrees); resample the volume onto a rectilinear grid first"
        )


def check_finite(data: np.ndarray, source: str) -> None:
    if not np.issubdtype(data.dtype, np.floating):
        return
    finite = np.count_nonzero(np.isfinite(data))
    if finite != data.size:
        n_nan = int(np.count_nonzero(np.isnan(data)))
        n_inf = data.size - finite - n_nan
        counts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
        raise VolumeError(f"{source}: contains {' and '.join(counts)} voxel values; all must be finite")


def _check_not_constant(data: np.ndarray, source: str, kind: str) -> None:
    lo, hi = data.min(), data.max()
    if lo == hi:
        what = "no structures" if kind == "labels" else "nothing to render"
        raise VolumeError(f"{source}: every voxel has the value {lo}; the volume is empty ({what})")


def _as_labels(data: np.ndarray, source: str) -> np.ndarray:
    """Integer label array; float files are accepted only when every value is a whole number."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        return data
    fractional = data != np.round(data)
    if fractional.any():
        example = data[fractional].flat[0]
        raise VolumeError(
            f"{source}: a label map must hold whole numbers, found {int(fractional.sum())} non-integer "
            f"voxel values (e.g. {example:.6g})"
        )
    lo, hi = int(data.min()), int(data.max())
    dtype = np.promote_types(np.min_scalar_type(lo), np.min_scalar_type(hi))
    return data.astype(dtype)


def itk_reason(exc: Exception) -> str:
    """The human part of a SimpleITK/ITK exception, without source locations and addresses."""
    text = re.sub(r"^Exception thrown in SimpleITK \w+:\s*\S+:\d+:\s*", "", str(exc))
    text = re.sub(r"^(?:ITK |sitk::)?ERROR:\s*(?:\w+\s*\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    text = re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", text)
    return " ".join(text.split())[:400]
