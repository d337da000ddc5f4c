"""What a DICOM header declares about its pixel data, checked against the bytes before anything is decoded.

A decoder (pydicom's, or SimpleITK's fallback) trusts Rows, Columns, NumberOfFrames, SamplesPerPixel
and BitsAllocated: given too few bytes it zero-pads the image, given a huge size it allocates it. So
:func:`check_pixel_layout` refuses, before any decoding, a file whose

* header values are not valid: ``Rows``/``Columns`` ≥ 1, ``NumberOfFrames`` ≥ 1, ``SamplesPerPixel``
  1 or 3, ``BitsAllocated`` 1, 8, 16 or 32 (what the decoders read), ``BitsStored`` 1…BitsAllocated
  (PS3.3 C.7.6.3);
* pixels would take more memory than :data:`MAX_PIXEL_BYTES`, counted as the float32 copy of every
  sample of every frame that the reader makes (4 GiB: 2³⁰ samples, e.g. 1024 frames of 1024×1024;
  reading such a file peaks at about 1.5× that with 16-bit data);
* native (uncompressed) pixel data hold another number of bytes than Rows × Columns × frames ×
  samples × BitsAllocated / 8 (plus one byte of padding to an even length; YBR_FULL_422 holds 2/3);
* encapsulated (compressed) pixel data are not a valid item sequence (PS3.5 A.4), hold fewer
  fragments than frames, have a Basic or Extended Offset Table with another number of entries than
  frames, or hold a codestream whose own header (JPEG and JPEG-LS SOF, JPEG 2000 SIZ, the RLE header's
  segment count) gives another size or number of components than the DICOM header.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.uid import UID, RLELossless

from .tags import XrayDicomError, tag_label

__all__ = ["MAX_PIXEL_BYTES", "PixelLayout", "check_pixel_layout", "transfer_syntax"]

MAX_PIXEL_BYTES = 4 * 1024**3  # the float32 copy of all samples of all frames; see the module docstring
_HEADER_BYTES = 4096  # of each fragment: enough for a codestream's header
_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}  # SOF0–SOF15 (not DHT, JPG, DAC), JPEG-LS SOF55


@dataclass(frozen=True)
class PixelLayout:
    """The pixel matrix a header declares (valid values only)."""

    rows: int
    cols: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int

    @property
    def native_bytes(self) -> int:
        return math.ceil(self.rows * self.cols * self.frames * self.samples * self.bits_allocated / 8)

    @property
    def float_bytes(self) -> int:
        return self.rows * self.cols * self.frames * self.samples * 4

    def text(self) -> str:
        colour = f", {self.samples} samples" if self.samples != 1 else ""
        return f"{self.rows}×{self.cols}×{self.frames} {self.bits_allocated}-bit pixels{colour}"


def _integer(ds: Dataset, keyword: str, default: int | None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise XrayDicomError(f"{tag_label(keyword)} is absent")
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise XrayDicomError(f"{tag_label(keyword)} is {value!r}, not a number") from None
    if not number.is_integer():
        raise XrayDicomError(f"{tag_label(keyword)} is {value}, not a whole number")
    return int(number)


def _valid(keyword: str, value: int, ok: bool, expected: str) -> int:
    if not ok:
        raise XrayDicomError(f"{tag_label(keyword)} is {value}: not a valid header value (expected {expected})")
    return value


def _declared_layout(ds: Dataset) -> PixelLayout:
    rows = _integer(ds, "Rows", None)
    cols = _integer(ds, "Columns", None)
    frames = _integer(ds, "NumberOfFrames", 1)
    samples = _integer(ds, "SamplesPerPixel", 1)
    allocated = _integer(ds, "BitsAllocated", None)
    stored = _integer(ds, "BitsStored", allocated)
    return PixelLayout(
        rows=_valid("Rows", rows, rows >= 1, "at least 1"),
        cols=_valid("Columns", cols, cols >= 1, "at least 1"),
        frames=_valid("NumberOfFrames", frames, frames >= 1, "at least 1"),
        samples=_valid("SamplesPerPixel", samples, samples in (1, 3), "1 or 3"),
        bits_allocated=_valid("BitsAllocated", allocated, allocated in (1, 8, 16, 32), "1, 8, 16 or 32"),
        bits_stored=_valid("BitsStored", stored, 1 <= stored <= allocated, f"1 to BitsAllocated {allocated}"),
    )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 1024**3:.1f} GiB"


def transfer_syntax(ds: Dataset) -> UID | None:
    """The file's transfer syntax (None for a data set without file meta information)."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else None


def _pixel_element(ds: Dataset) -> tuple[int, bytes | None, bool]:
    """PixelData as stored: its length, its bytes (None while its reading is deferred), whether encapsulated."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    value, length = elem.value, getattr(elem, "length", None)
    undefined = length == 0xFFFFFFFF or bool(getattr(elem, "is_undefined_length", False))
    if undefined and value is None:  # compressed data: read now (no larger than the file) to walk the fragments
        value = ds.PixelData
    if length is None or undefined:
        length = 0 if value is None else len(value)
    return length, value, undefined


def check_pixel_layout(ds: Dataset, name: str) -> PixelLayout:
    """The declared pixel matrix, after the checks of the module docstring (an error naming ``name`` otherwise)."""
    try:
        layout = _declared_layout(ds)
    except XrayDicomError as exc:
        raise XrayDicomError(f"{name}: {exc}") from None
    ts = transfer_syntax(ds)
    length, value, undefined = _pixel_element(ds)
    if undefined or (ts is not None and ts.is_transfer_syntax and ts.is_encapsulated):
        _check_encapsulated(ds, layout, value or b"", ts, name)
    else:
        _check_native(ds, layout, length, name)
    if layout.float_bytes > MAX_PIXEL_BYTES:  # data that back a huge size (or a codestream that claims it)
        raise XrayDicomError(
            f"{name}: declares {layout.text()}, {_gib(layout.float_bytes)} as float32 — more than this reader's "
            f"limit of {_gib(MAX_PIXEL_BYTES)} (xvrcore.xray.pixel_layout.MAX_PIXEL_BYTES)"
        )
    return layout


def _check_native(ds: Dataset, layout: PixelLayout, length: int, name: str) -> None:
    expected = layout.native_bytes
    if layout.samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422":
        expected = expected * 2 // 3  # two chroma samples shared by each pair of pixels
    if length not in (expected, expected + expected % 2):
        raise XrayDicomError(
            f"{name}: declares {layout.text()} ({expected} bytes) but its pixel data (7FE0,0010) hold {length} bytes"
        )


# ---- encapsulated pixel data ----------------------------------------------------------------------


def _fragment_heads(value: bytes, name: str) -> tuple[list[int], list[bytes]]:
    """The Basic Offset Table and the first bytes of every fragment (PS3.5 A.4)."""
    buffer = io.BytesIO(value)
    try:
        offsets = parse_basic_offsets(buffer)
        heads = [fragment[:_HEADER_BYTES] for fragment in generate_fragments(buffer)]
    except (ValueError, EOFError) as exc:
        raise XrayDicomError(f"{name}: the compressed pixel data are corrupt ({str(exc).splitlines()[0]})") from None
    return offsets, heads


def _check_encapsulated(ds: Dataset, layout: PixelLayout, value: bytes, ts: UID | None, name: str) -> None:
    offsets, heads = _fragment_heads(value, name)
    frames = layout.frames
    if len(heads) < frames:
        raise XrayDicomError(
            f"{name}: declares {frames} frame(s) but its compressed pixel data hold {len(heads)} fragment(s) "
            "(each frame needs at least one)"
        )
    if offsets and len(offsets) != frames:
        raise XrayDicomError(
            f"{name}: declares {frames} frame(s) but the Basic Offset Table of its pixel data lists {len(offsets)}"
        )
    extended = ds.get("ExtendedOffsetTable")
    if extended is not None and len(extended) // 8 != frames:
        raise XrayDicomError(
            f"{name}: declares {frames} frame(s) but its {tag_label('ExtendedOffsetTable')} lists {len(extended) // 8}"
        )
    if ts == RLELossless:
        if len(heads) == frames:
            for head in heads:
                _check_rle_header(head, layout, name)
        return
    for head in heads:
        size = _codestream_size(head)
        if size is not None and size[1] > 0 and size[2] > 0:  # zeros: a damaged header, for the decoder to report
            _check_codestream(size, layout, name)


def _check_rle_header(head: bytes, layout: PixelLayout, name: str) -> None:
    """An RLE frame has one segment per byte of each sample (PS3.5 G.3.1): its header says how many."""
    expected = layout.samples * math.ceil(layout.bits_allocated / 8)
    found = int.from_bytes(head[:4], "little") if len(head) >= 64 else None
    if found != expected:
        raise XrayDicomError(
            f"{name}: declares {layout.text()}, {expected} RLE segment(s) per frame, but "
            + ("a frame's RLE header is cut short" if found is None else f"a frame's RLE header lists {found}")
        )


def _check_codestream(size: tuple[int, int, int], layout: PixelLayout, name: str) -> None:
    rows, cols, components = size
    if (rows not in (0, layout.rows)) or cols != layout.cols or components != layout.samples:
        raise XrayDicomError(
            f"{name}: declares {layout.text()} but its compressed pixel data hold a {rows}×{cols} image "
            f"with {components} component(s)"
        )


def _codestream_size(head: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG/JPEG-LS SOF or a JPEG 2000 SIZ marker; None if neither starts ``head``."""
    if head[:4] == b"\xff\x4f\xff\x51" and len(head) >= 42:  # SOC, SIZ (ITU-T T.800 A.5.1)
        x, y, x0, y0 = (int.from_bytes(head[i : i + 4], "big") for i in (8, 12, 16, 20))
        return y - y0, x - x0, int.from_bytes(head[40:42], "big")
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(head) and head[i] == 0xFF:  # markers with lengths (ITU-T T.81 B.1.1)
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF and i + 10 <= len(head):  # Lf, P, Y, X, Nf
            return int.from_bytes(head[i + 5 : i + 7], "big"), int.from_bytes(head[i + 7 : i + 9], "big"), head[i + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None
