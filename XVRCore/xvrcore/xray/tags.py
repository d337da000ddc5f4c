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
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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
    "element_label",
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


# the first bytes of files that are often mistaken for DICOM, and what they are
_FILE_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip file"),
)
_DEFER_BYTES = 64 * 1024  # larger values (the pixel data) are read only when used, after their sizes are checked


def _not_dicom_reason(head: bytes, size: int) -> str | None:
    """Why a file cannot be DICOM, or None when it may be one.

    A DICOM file has ``DICM`` after a 128-byte preamble (PS3.10 7.1); files without the preamble
    start with a data element of group 0002 (file meta) or 0008 (identification), little endian.
    """
    if head[128:132] == b"DICM" or (len(head) >= 8 and int.from_bytes(head[:2], "little") in (0x0002, 0x0008)):
        return None
    if size == 0:
        return "the file is empty"
    kind = next((what for magic, what in _FILE_SIGNATURES if head.startswith(magic)), None)
    if kind is None and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:512]):
        kind = "a text file"
    what = f"it is {kind}" if kind else f"{size} bytes"
    return f"{what}, without the DICM prefix at byte 128"


def _truncation(ds: Dataset, size: int) -> str | None:
    """Where the file ends inside a data element, if it does: the last element declares more bytes than remain."""
    for part in (ds, getattr(ds, "file_meta", None)):
        tags = list(part.keys()) if part is not None else []
        if not tags:
            continue
        raw = part.get_item(tags[-1], keep_deferred=True)
        length = getattr(raw, "length", None)
        if length is None or length == 0xFFFFFFFF or getattr(raw, "value_tell", None) is None:
            return None
        present = size - raw.value_tell
        if present < length:
            return (f"the file is truncated: it ends {max(present, 0)} byte(s) into {element_label(raw.tag)}, "
                    f"which declares {length} bytes")
        return None
    return None


def read_dataset(path: Path, name: str) -> Dataset:
    """The dataset of ``path`` (files without the 128-byte preamble too); it must hold pixel data.

    ``name`` (the file name, never a patient attribute) starts every error message. Values over
    64 KB (the pixel data) stay on disk until used, so their declared sizes can be checked first.
    """
    if not path.is_file():
        raise XrayDicomError(f"{name}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
    reason = _not_dicom_reason(head, size)
    if reason is not None:
        raise XrayDicomError(f"{name}: not a DICOM file ({reason})")
    try:
        ds = pydicom.dcmread(path, force=head[128:132] != b"DICM", defer_size=_DEFER_BYTES)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on damaged files; each is this one error
        raise XrayDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    _name_the_encoding(ds)
    truncated = _truncation(ds, size)
    if truncated:
        raise XrayDicomError(f"{name}: {truncated}")
    if "PixelData" not in ds:
        raise XrayDicomError(_no_pixel_data(ds, name, size))
    return ds


def _name_the_encoding(ds: Dataset) -> None:
    """A data set without file meta information: its transfer syntax is the encoding it was read in."""
    if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = syntax


def _no_pixel_data(ds: Dataset, name: str, size: int) -> str:
    """An image header without its pixel data is a truncated file; a header of another kind is not an image."""
    if not len(ds):
        return f"{name}: the file is truncated: it ends after its file meta information ({size} bytes), with no data set"
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is not None and cols is not None:
        return (f"{name}: the header describes a {rows}×{cols} image but the file ends after {size} bytes without "
                "its pixel data (7FE0,0010): the file is truncated")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class and UID(sop_class).name.endswith("Image Storage"):
        return (f"{name}: the file is truncated: an {UID(sop_class).name} file that ends after {size} bytes, "
                "before its image attributes and pixel data (7FE0,0010)")
    return f"{name}: the DICOM file has no pixel data (7FE0,0010); it is not an image"


def tag_label(keyword: str) -> str:
    """``"ImagerPixelSpacing (0018,1164)"``: the keyword with its tag, for messages."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def element_label(tag: int) -> str:
    """``"PixelData (7FE0,0010)"`` for any tag (private and unknown ones by number only)."""
    keyword = keyword_for_tag(tag)
    return tag_label(keyword) if keyword else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


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
