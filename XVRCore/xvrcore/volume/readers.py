"""Reading volumes: NIfTI, NRRD, MetaImage files and DICOM series, label maps on a reference grid, arrays.

Every reader returns a checked :class:`~xvrcore.volume.grid.Volume` (float32 intensities, integer
label maps) or raises :class:`~xvrcore.volume.grid.VolumeError` naming the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom_series import dicom_tag, is_dicom_file, read_dicom_header, read_dicom_series
from .file_checks import read_image_file
from .grid import (
    GRID_ATOL,
    Volume,
    VolumeError,
    check_kind,
    file_suffix,
    fmt,
    lps_geometry,
    ras_affine,
    sizes_text,
    validate,
)

__all__ = ["READ_SUFFIXES", "LabelGridWarning", "load_labelmap", "load_volume", "volume_from_array"]

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class LabelGridWarning(UserWarning):
    """A label map was on a different grid than its reference volume and was resampled."""


def _check_image_layout(image: sitk.Image, source: str) -> sitk.Image:
    """Reject 2-D, 4-D and vector images; a 4-D image with one time point becomes 3-D."""
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    elif image.GetDimension() != 3:
        hint = " (time series?)" if image.GetDimension() == 4 else ""
        raise VolumeError(
            f"{source}: expected a 3-D volume, found a {image.GetDimension()}-D image "
            f"of size {sizes_text(size)}{hint}"
        )
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise VolumeError(
            f"{source}: voxels have {components} components ({image.GetPixelIDTypeAsString()}: RGB, vector "
            "or multi-channel image); expected one scalar value per voxel"
        )
    return image


def _volume_from_image(image: sitk.Image, source: str, kind: str) -> Volume:
    image = _check_image_layout(image, source)
    affine = ras_affine(image)
    data = validate(sitk.GetArrayViewFromImage(image), affine, source, kind)
    if not data.flags.owndata:
        data = data.copy()  # never keep a view into SimpleITK's buffer
    return Volume(data, affine, source, kind)


def load_volume(path: str | os.PathLike, kind: str = "ct", series_uid: str | None = None) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file, or a DICOM series (folder or one of its files).

    For a folder, ``series_uid`` selects the series; by default the one with the most files.
    Intensities come back as float32, label maps (``kind="labels"``) as integers.
    """
    path = Path(path)
    check_kind(kind, str(path))
    if not path.exists():
        raise VolumeError(f"{path}: file or folder not found")
    if path.is_dir():
        image = read_dicom_series(path, series_uid, str(path))
    elif file_suffix(path) in READ_SUFFIXES:
        image = read_image_file(path)
    elif is_dicom_file(path):
        uid = series_uid or dicom_tag(read_dicom_header(path), "0020|000e")
        image = read_dicom_series(path.parent, uid, str(path))
    else:
        raise VolumeError(
            f"{path}: unsupported file type {file_suffix(path) or '(no suffix)'}; expected NIfTI, NRRD, "
            "MetaImage or a DICOM series folder"
        )
    return _volume_from_image(image, str(path), kind)


def volume_from_array(
    data_kji: np.ndarray, affine: np.ndarray, kind: str = "generic", source: str = "array"
) -> Volume:
    """Wrap a (K, J, I) array and a voxel-to-RAS affine, with the same checks as the loaders.

    The array is used as is (not copied) when it already has the dtype the kind needs.
    """
    data = np.asarray(data_kji)
    affine = np.asarray(affine, dtype=np.float64)
    return Volume(validate(data, affine, source, kind), affine.copy(), source, kind)


def load_labelmap(path: str | os.PathLike, reference: Volume | None = None) -> Volume:
    """Read an integer label map; resample it (nearest neighbour) onto ``reference``'s grid if needed."""
    labels = load_volume(path, kind="labels")
    if reference is None:
        return labels
    if labels.same_grid(reference):  # equal within float32 header precision: share the exact affine
        return Volume(labels.data, reference.affine.copy(), labels.source, "labels")
    warnings.warn(
        f"{labels.source}: label map grid differs from {reference.source} "
        f"({_grid_difference(labels, reference)}); resampled onto the reference grid "
        "with nearest-neighbour interpolation",
        LabelGridWarning,
        stacklevel=2,
    )
    resampled = _resample_nearest(labels, reference)
    if not resampled.any():
        raise VolumeError(f"{labels.source}: the label map does not overlap {reference.source}")
    return Volume(resampled, reference.affine.copy(), labels.source, "labels")


def _grid_difference(a: Volume, b: Volume) -> str:
    parts = []
    if a.shape_ijk != b.shape_ijk:
        parts.append(f"size {sizes_text(a.shape_ijk)} vs {sizes_text(b.shape_ijk)}")
    if not np.allclose(a.spacing, b.spacing, atol=GRID_ATOL):
        parts.append(f"spacing {fmt(a.spacing)} vs {fmt(b.spacing)} mm")
    if not np.allclose(a.direction, b.direction, atol=GRID_ATOL):
        parts.append("direction differs")
    shift = np.linalg.norm(a.origin - b.origin)
    if shift > GRID_ATOL:
        parts.append(f"origin {shift:.4g} mm apart")
    return ", ".join(parts) or "affine differs"


def _resample_nearest(labels: Volume, reference: Volume) -> np.ndarray:
    origin, spacing, direction = lps_geometry(reference.affine)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in reference.shape_ijk])
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    return sitk.GetArrayFromImage(resampler.Execute(labels.to_sitk()))
