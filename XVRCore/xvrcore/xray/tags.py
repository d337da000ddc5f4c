"""Reading a DICOM X-ray file and looking up its attributes.

Every attribute is looked up at the top level of the dataset and, for enhanced multi-frame
objects, in the ``PerFrameFunctionalGroupsSequence (5200,9230)`` item of the frame and then the
``SharedFunctionalGroupsSequence (5200,9229)`` (:func:`header_value`). Values that are absent,
empty, not numbers or not finite count as missing (:func:`as_floats` returns None), and error or
warning messages name an attribute with its tag (:func:`tag_label`) and show values as DICOM
writes them (:func:`dicom_text`). Nothing that identifies the patient is read or reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = [
    "ANGIO_MODALITIES",
    "PROJECTION_MODALITIES",
    "RADIOGRAPHIC_MODALITIES",
    "XrayDicomError",
    "as_floats",
    "as_list",
    "code_string",
    "describe",
    "dicom_text",
    "header_value",
    "is_present",
    "read_dataset",
    "tag_label",
]

PROJECTION_MODALITIES = {"XA", "RF", "DX", "CR", "RG", "MG", "IO", "PX"}
ANGIO_MODALITIES = {"XA", "RF"}  # displayed like fluoroscopy: dense = dark
RADIOGRAPHIC_MODALITIES = {"DX", "CR", "RG", "MG", "IO", "PX"}  # dense = bright on display


class XrayDicomError(ValueError):
    """A DICOM X-ray that cannot be used as it is; the message names the file, what is missing and how to supply it."""


def read_dataset(path: Path, name: str) -> Dataset:
    """The dataset of ``path`` (files without the 128-byte preamble too); it must hold pixel data.

    ``name`` (the file name, never a patient attribute) starts every error message.
    """
    if not path.is_file():
        raise XrayDicomError(f"{name}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:
            raise XrayDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None
    except Exception as exc:
        raise XrayDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise XrayDicomError(f"{name}: the DICOM file has no pixel data (7FE0,0010); it is not an image")
    return ds


def tag_label(keyword: str) -> str:
    """``"ImagerPixelSpacing (0018,1164)"``: the keyword with its tag, for messages."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def is_present(value: Any) -> bool:
    """False for None, blank strings and empty sequences."""
    if value is None:
        return False
    if isinstance(value, (str, bytes)):
        return bool(value.strip())
    try:
        return len(value) > 0  # type: ignore[arg-type]
    except TypeError:
        return True


def header_value(ds: Dataset, keyword: str, frame: int = 0) -> Any:
    """An attribute's value from the top level, else the per-frame or shared functional groups."""
    if keyword in ds and is_present(ds[keyword].value):
        return ds[keyword].value
    for group, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(group)
        if not seq or len(seq) <= index:
            continue
        for elem in seq[index]:
            if elem.VR != "SQ" or not elem.value:
                continue
            item = elem.value[0]
            if keyword in item and is_present(item[keyword].value):
                return item[keyword].value
    return None


def as_list(value: Any) -> list:
    """A multi-valued attribute as a list; one value as a one-item list; None as an empty list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def as_floats(value: Any) -> list[float] | None:
    """All values as finite floats, or None (absent, empty, not numbers or not finite)."""
    try:
        out = [float(v) for v in as_list(value)]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def code_string(value: Any) -> str:
    """A code string (CS) value stripped and upper-cased; ``""`` when absent."""
    return str(value or "").strip().upper()


def dicom_text(value: Any) -> str:
    """A header value as DICOM writes it (multi-values joined by a backslash)."""
    if value is None:
        return "absent"
    return "\\".join(str(v) for v in as_list(value)) or "empty"


def describe(keyword: str, value: Any) -> str:
    """``"PixelSpacing (0028,0030) is 0.000\\0.000"`` (or ``"… is absent"``), for messages."""
    return f"{tag_label(keyword)} is {'absent' if value is None else dicom_text(value)}"
