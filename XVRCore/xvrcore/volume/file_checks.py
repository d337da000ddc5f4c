"""File-format checks that SimpleITK does not do, and SimpleITK's errors in plain words.

SimpleITK 2.x (ITK 5.4) replaces a NIfTI pixdim of 0 by 1 mm, turns a negative pixdim or
MetaImage ElementSpacing into a flipped axis, zero-fills the voxels missing from a truncated file and
reads NaN/Inf voxels as 0; each would silently give a wrong volume, so each is an error here.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .grid import VolumeError, check_finite, file_suffix, fmt, itk_reason

__all__ = ["check_metaimage", "check_nifti", "read_image_file"]

_NIFTI_FLOAT_CODES = {16: "f4", 64: "f8"}  # NIfTI datatype codes FLOAT32 and FLOAT64


@dataclass(frozen=True)
class _NiftiHeader:
    dim: tuple[int, ...]
    pixdim: tuple[float, ...]
    vox_offset: int
    datatype: int
    bitpix: int
    byte_order: str

    @property
    def data_end(self) -> int:
        """File offset just past the last voxel byte."""
        voxels = int(np.prod(self.dim[1 : 1 + self.dim[0]], dtype=np.int64))
        return self.vox_offset + voxels * max(self.bitpix, 0) // 8


def _nifti_header(path: Path) -> _NiftiHeader | None:
    """The NIfTI-1 header fields we check, or None when the file does not start with one."""
    raw = _nifti_bytes(path, 348)
    if len(raw) < 348:
        return None
    for order in "<>":
        size = struct.unpack_from(order + "i", raw, 0)[0]
        if size == 540:  # ITK 5.4's NIfTI reader knows only NIfTI-1 and would say "no reader"
            raise VolumeError(f"{path}: NIfTI-2 files cannot be read by SimpleITK; save as NIfTI-1 or NRRD")
        dim = struct.unpack_from(order + "8h", raw, 40)
        if size != 348 or not 1 <= dim[0] <= 7:  # dim[0] in 1..7 tells the byte order
            continue
        datatype, bitpix = struct.unpack_from(order + "2h", raw, 70)
        return _NiftiHeader(
            dim=dim,
            pixdim=struct.unpack_from(order + "8f", raw, 76),
            vox_offset=int(struct.unpack_from(order + "f", raw, 108)[0]),
            datatype=datatype,
            bitpix=bitpix,
            byte_order=order,
        )
    return None


def check_nifti(path: Path) -> None:
    """Checks for NIfTI defects that SimpleITK hides.

    SimpleITK 2.x (ITK 5.4) replaces a pixdim of 0 by 1 mm, turns a negative pixdim into a
    flipped axis, zero-fills the voxels missing from a truncated file and reads NaN/Inf voxels
    as 0; each would silently give a wrong volume.
    """
    _check_nifti_start(path)
    header = _nifti_header(path)
    if header is None:
        return  # not a NIfTI-1 header: SimpleITK reports the problem
    spatial = header.pixdim[1 : 1 + min(header.dim[0], 3)]
    if not all(np.isfinite(spatial)) or min(spatial) <= 0:
        raise VolumeError(
            f"{path}: spacing must be positive, got {fmt(spatial)} mm in the NIfTI header (pixdim); "
            "the file's geometry is invalid"
        )
    float_code = _NIFTI_FLOAT_CODES.get(header.datatype)
    if float_code is None:
        available = _nifti_length(path, header.data_end)
    else:  # NaN/Inf are only visible in the raw bytes
        raw = _nifti_bytes(path, header.data_end)
        available = len(raw)
        if available == header.data_end:
            voxels = np.frombuffer(raw, header.byte_order + float_code, offset=header.vox_offset)
            check_finite(voxels, str(path))
    if available < header.data_end:
        raise VolumeError(
            f"{path}: the file is truncated: it holds {max(available - header.vox_offset, 0)} of "
            f"{header.data_end - header.vox_offset} bytes of voxel data"
        )


def _check_nifti_start(path: Path) -> None:
    """A ``.nii.gz`` must be gzip data and hold a whole 348-byte header (else: not NIfTI, or truncated)."""
    with open(path, "rb") as f:
        start = f.read(512)
    if file_suffix(path) == ".nii.gz" and not start.startswith(b"\x1f\x8b"):
        what = "the file is empty" if not start else (
            "it is a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in start) else "no gzip signature")
        raise VolumeError(f"{path}: not a gzip-compressed NIfTI file ({what})")
    header = _nifti_bytes(path, 348)
    if len(header) < 348:
        raise VolumeError(f"{path}: the file is truncated or not a NIfTI file: it holds {len(header)} of the "
                          "348 bytes of a NIfTI header")


def _nifti_bytes(path: Path, limit: int) -> bytes:
    """The first ``limit`` bytes of the (decompressed) file, fewer if it is shorter."""
    if file_suffix(path) == ".nii.gz":
        return _gunzip_prefix(path, limit)
    with open(path, "rb") as f:
        return f.read(limit)


def _nifti_length(path: Path, expected: int) -> int:
    """Uncompressed length of the file (exact when it might be short; cheap when it is not)."""
    if file_suffix(path) != ".nii.gz":
        return path.stat().st_size
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]  # gzip trailer: length modulo 2**32
    if isize == expected % 2**32:
        return expected
    return len(_gunzip_prefix(path, expected))


def _gunzip_prefix(path: Path, limit: int) -> bytes:
    """Up to ``limit`` decompressed bytes; a truncated or damaged stream yields what it holds."""
    out = bytearray()
    inflater = zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        while len(out) < limit and (chunk := f.read(1 << 20)):
            try:
                out += inflater.decompress(chunk, limit - len(out))
            except zlib.error:
                break
            while inflater.unused_data and len(out) < limit:  # next member of a multi-member file
                rest, inflater = inflater.unused_data, zlib.decompressobj(wbits=31)
                try:
                    out += inflater.decompress(rest, limit - len(out))
                except zlib.error:
                    return bytes(out)
    return bytes(out)


def check_metaimage(path: Path) -> None:
    """A negative ElementSpacing is turned into a flipped axis by SimpleITK without a word."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    match = re.search(rb"^\s*ElementSpacing\s*=\s*([^\r\n]*)", head, re.MULTILINE)
    if not match:
        return
    try:
        spacing = [float(v) for v in match.group(1).split()]
    except ValueError:
        text = match.group(1)[:80].decode("latin-1")
        raise VolumeError(f"{path}: ElementSpacing is not a list of numbers: {text!r}") from None
    if not all(np.isfinite(spacing)) or min(spacing, default=1.0) <= 0:
        raise VolumeError(f"{path}: spacing must be positive, got {fmt(spacing)} mm (ElementSpacing)")


def read_image_file(path: Path) -> sitk.Image:
    """One image file, after the checks above; SimpleITK's errors become plain-words ``VolumeError``."""
    suffix = file_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        check_nifti(path)
    elif suffix in (".mha", ".mhd"):
        check_metaimage(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        reason = itk_reason(exc)
        if "Zero-valued spacing" in reason:
            reason = "spacing must be positive, but the file has a zero spacing"
        elif "determinant is 0" in reason:
            reason = "the direction matrix is singular (two voxel axes are parallel)"
        else:
            reason = f"SimpleITK cannot read the file (damaged or not an image?): {reason}"
        raise VolumeError(f"{path}: {reason}") from None
