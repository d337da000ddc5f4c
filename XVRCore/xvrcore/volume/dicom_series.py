"""A CT or MRA given as a DICOM series: choosing the series and checking that its slices form a grid.

A folder with several series, none asked for, gives the series with the most files and says so with a
:class:`SeriesChoiceWarning` (a registration records it in the result's warnings).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .file_checks import read_image_file
from .grid import VolumeError, itk_reason

__all__ = ["SeriesChoiceWarning", "dicom_tag", "is_dicom_file", "read_dicom_header", "read_dicom_series"]

# DICOM modalities whose images are projections (radiography, fluoroscopy, angiography...).
_PROJECTION_MODALITIES = {"XA", "RF", "CR", "DX", "MG", "IO", "PX"}


class SeriesChoiceWarning(UserWarning):
    """A folder held several DICOM series and the one with the most files was used."""


def is_dicom_file(path: Path) -> bool:
    """Whether the file starts with the DICOM preamble (128 bytes, then ``DICM``)."""
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def read_dicom_header(path: str | Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read the DICOM header: {itk_reason(exc)}") from None
    return reader


def dicom_tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _pick_series(folder: Path, series_uid: str | None, source: str) -> list[str]:
    """File names of the requested series, or of the series with the most files."""
    where = "this folder" if source == str(folder) else str(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise VolumeError(f"{source}: no DICOM image series found in {where}")
    files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in uids}
    if series_uid is None:
        chosen = max(files, key=lambda uid: len(files[uid]))
        if len(files) > 1:
            others = ", ".join(str(len(names)) for uid, names in files.items() if uid != chosen)
            warnings.warn(f"{source}: {where} holds {len(files)} DICOM series; used the one with the most files "
                          f"({len(files[chosen])}; the others have {others}), series {chosen}; to use another, "
                          "give one of its files instead of the folder", SeriesChoiceWarning, stacklevel=2)
        return files[chosen]
    if series_uid not in files:
        listing = "; ".join(f"{uid} ({len(names)} files)" for uid, names in files.items())
        raise VolumeError(f"{source}: series {series_uid} is not in {where}; series found: {listing}")
    return files[series_uid]


def read_dicom_series(folder: Path, series_uid: str | None, source: str) -> sitk.Image:
    files = _pick_series(folder, series_uid, source)
    modality = dicom_tag(read_dicom_header(files[0]), "0008|0060")
    if modality in _PROJECTION_MODALITIES:
        raise VolumeError(f"{source}: a projection X-ray image (modality {modality}) is not a 3-D volume")
    if len(files) == 1:  # e.g. one multi-frame file: the series reader would stack it as 4-D
        return read_image_file(Path(files[0]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"{source}: SimpleITK cannot read the DICOM series: {itk_reason(exc)}") from None
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:
        _check_slice_positions(reader, image, source)
    return image


def _slice_tags(reader: sitk.ImageSeriesReader, n: int, key: str) -> np.ndarray | None:
    """A numeric multi-valued tag of every slice as an (n, m) array; None if any is missing."""
    try:
        return np.array([[float(v) for v in reader.GetMetaData(s, key).split("\\")] for s in range(n)])
    except (RuntimeError, ValueError):
        return None


def _check_slice_positions(reader: sitk.ImageSeriesReader, image: sitk.Image, source: str) -> None:
    """The grid assumes parallel, equally spaced slices stacked along their normal.

    SimpleITK only warns about missing slices (and then spaces all slices evenly) and says
    nothing about a gantry tilt (it stacks the tilted slices straight); both give a wrong
    geometry, so they are errors here.
    """
    n = image.GetSize()[2]
    orientations = _slice_tags(reader, n, "0020|0037")
    if orientations is not None and np.abs(orientations - orientations[0]).max() > 1e-4:
        raise VolumeError(
            f"{source}: the slices of the series have different orientations (localizer images mixed in?)"
        )
    pos = _slice_tags(reader, n, "0020|0032")
    if pos is None:
        return
    if orientations is not None and orientations.shape[1] == 6:
        normal = np.cross(orientations[0, :3], orientations[0, 3:])
        normal /= np.linalg.norm(normal)
    else:
        normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    along = (pos - pos[0]) @ normal
    gaps = np.diff(along)
    step = np.median(gaps)
    tol = max(0.01 * abs(step), 1e-3)
    if abs(step) <= tol or np.abs(gaps - step).max() > tol:
        raise VolumeError(
            f"{source}: slices are not equally spaced: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            "along the slice normal (missing, duplicated or mixed slices?)"
        )
    shear = np.linalg.norm(pos - pos[0] - np.outer(along, normal), axis=1).max()
    if shear > tol:
        raise VolumeError(
            f"{source}: slices are not stacked along their normal (in-plane shift up to {shear:.3g} mm, "
            "e.g. gantry tilt); resample the series onto a rectilinear grid first"
        )
