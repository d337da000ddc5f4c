"""Which modality a volume is (CT or MRA), and how that was decided.

``"ct"`` and ``"mra"`` are the two attenuation models (:mod:`xvrcore.volume.attenuation`); ``"auto"``
decides from the file:

* a DICOM series: its Modality attribute (CT → ct; MR → mra, the bright-vessel model);
* a NIfTI, NRRD or MetaImage file has no modality attribute. A CT in Hounsfield units shows it by its
  air (a good part of its voxels at about −1000 HU), which no MR magnitude image has; that evidence is
  used. Its absence is not evidence of an MRA (a CT cropped to the body, or stored without its rescale,
  has no −1000 either), so such a file is taken as a CT, with a warning that says so and how to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom_series import dicom_tag, is_dicom_file, read_dicom_header
from .grid import Volume, VolumeError

__all__ = ["MODALITIES", "MODALITY_CHOICES", "ModalityChoice", "ModalityWarning", "dicom_modality", "resolve_modality"]

MODALITIES = ("ct", "mra")
MODALITY_CHOICES = ("auto", *MODALITIES)
_DICOM_MODALITIES = {"CT": "ct", "MR": "mra"}
_AIR_HU = -500.0  # well below fat (about -100 HU), well above air (-1000 HU)
_AIR_FRACTION = 0.01  # a CT's field of view is rarely less than 1 % air; an MR has no negative values at all
_SAMPLE = 1_000_000


class ModalityWarning(UserWarning):
    """The modality was assumed, not read from the file: the user should know and may say otherwise."""


@dataclass(frozen=True)
class ModalityChoice:
    """The modality used, where it came from (``"given"``, ``"DICOM Modality CT"``, …) and any warning."""

    modality: str
    source: str
    warning: str | None = None

    def to_dict(self) -> dict:
        return {"modality": self.modality, "modality_from": self.source,
                **({"modality_warning": self.warning} if self.warning else {})}


def dicom_modality(path: str | Path) -> str | None:
    """The Modality attribute of a DICOM volume (a folder of slices, or one of them); None for other files."""
    path = Path(path)
    if path.is_dir():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not uids:
            return None
        # the series with the most files, as the reader picks it
        files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid) for uid in uids), key=len)
        path = Path(files[0])
    elif not (path.is_file() and is_dicom_file(path)):
        return None
    return dicom_tag(read_dicom_header(path), "0008|0060").upper() or None


def _air_fraction(volume: Volume) -> float:
    values = volume.data.reshape(-1)
    step = max(1, values.size // _SAMPLE)
    return float(np.mean(values[::step] < _AIR_HU))


def resolve_modality(requested: str, path: str | Path, volume: Volume) -> ModalityChoice:
    """The modality to use for ``volume`` (read from ``path``): ``requested`` unless it is ``"auto"``."""
    if requested not in MODALITY_CHOICES:
        raise VolumeError(f"{path}: unknown modality {requested!r}; expected one of {', '.join(MODALITY_CHOICES)}")
    if requested != "auto":
        return ModalityChoice(requested, "given")
    name = Path(path).name
    tag = dicom_modality(path)
    if tag is not None:
        if tag not in _DICOM_MODALITIES:
            raise VolumeError(f"{path}: DICOM Modality {tag} is neither CT nor MR; give --modality ct or mra")
        return ModalityChoice(_DICOM_MODALITIES[tag], f"DICOM Modality {tag}")
    if _air_fraction(volume) >= _AIR_FRACTION:
        return ModalityChoice("ct", "intensities (air at -1000 HU)")
    if float(volume.data.min()) >= 0.0:
        warning = (f"{name} has no modality in its header and no negative values (unlike a CT in HU); "
                   "it is treated as a CT: give --modality mra if it is an MRA")
    else:
        warning = f"{name} has no modality in its header and no air at -1000 HU; it is treated as a CT (--modality)"
    return ModalityChoice("ct", "assumed (no modality in the file)", warning)
