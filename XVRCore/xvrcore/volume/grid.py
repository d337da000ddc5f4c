"""3-D volumes (CT, MRA, label maps, attenuation) on an exact voxel-to-RAS grid.

A :class:`Volume` holds a numpy array in SimpleITK order ``data[k, j, i]`` and a 4x4 affine
that maps the homogeneous voxel index ``(i, j, k, 1)`` to RAS millimetres, the world frame
of 3D Slicer. Index ``(0, 0, 0)`` is the centre of the first voxel. Files are read and
written with SimpleITK, whose physical frame is LPS, so RAS = diag(-1, -1, 1) @ LPS.

Every problem with an input volume raises :class:`VolumeError`, whose message names the
file and says what is wrong in plain words.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io.atomic import atomic_write

__all__ = [
    "VOLUME_KINDS",
    "LabelGridWarning",
    "Volume",
    "VolumeError",
    "load_labelmap",
    "load_volume",
    "volume_from_array",
]

VOLUME_KINDS = ("ct", "mra", "labels", "attenuation", "generic")
READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Only single-file formats can be written atomically (.nhdr/.mhd write a second data file).
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse
_DIRECTION_TOL = 1e-3  # NIfTI stores directions as float32, so allow a little slack
_GRID_ATOL = 1e-4
# DICOM modalities whose images are projections (radiography, fluoroscopy, angiography...).
_PROJECTION_MODALITIES = {"XA", "RF", "CR", "DX", "MG", "IO", "PX"}


class VolumeError(ValueError):
    """A volume (file or array) cannot be used; the message names the source and the problem."""


class LabelGridWarning(UserWarning):
    """A label map was on a different grid than its reference volume and was resampled."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _sizes(sizes) -> str:
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
        _check_kind(self.kind, self.source)

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

    def same_grid(self, other: Volume, atol: float = _GRID_ATOL) -> bool:
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
                f"volume of size {_sizes(shape)} (I\u00d7J\u00d7K)"
            )
        data = self.data[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]].copy()
        affine = self.affine.copy()
        affine[:3, 3] = self.ijk_to_ras(lo.astype(np.float64))
        return Volume(data, affine, self.source, self.kind)

    def content_bounds(self, threshold: float) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """(ijk_min, ijk_max), inclusive-exclusive, of the voxels with data > threshold; None if none."""
        return _mask_bounds(self.data > threshold)

    # --- output -------------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with the same voxels and the geometry converted back to LPS."""
        data = self.data.astype(np.uint8) if self.data.dtype == bool else self.data
        image = sitk.GetImageFromArray(np.ascontiguousarray(data))
        origin, spacing, direction = _lps_geometry(self.affine)
        image.SetOrigin(origin)
        image.SetSpacing(spacing)
        image.SetDirection(direction)
        return image

    def save(self, path: str | os.PathLike, compress: bool = True) -> Path:
        """Write NIfTI/NRRD/MetaImage atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        suffix = _suffix(path)
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
            raise VolumeError(f"{path}: could not write the volume: {_itk_reason(exc)}") from None
        return path


def _mask_bounds(mask_kji: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Inclusive-exclusive (i, j, k) bounds of the True voxels of a (K, J, I) mask."""
    per_axis = [mask_kji.any(axis=(0, 1)), mask_kji.any(axis=(0, 2)), mask_kji.any(axis=(1, 2))]
    if not per_axis[0].any():
        return None
    lo = tuple(int(np.argmax(a)) for a in per_axis)
    hi = tuple(int(len(a) - np.argmax(a[::-1])) for a in per_axis)
    return lo, hi


def _lps_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """SimpleITK (origin, spacing, direction) in LPS for a voxel-to-RAS affine."""
    linear = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = _LPS_TO_RAS @ affine[:3, 3]
    return tuple(map(float, origin)), tuple(map(float, spacing)), tuple(map(float, direction.ravel()))


def _ras_affine(image: sitk.Image) -> np.ndarray:
    """Voxel-index-to-RAS affine of a 3-D SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=np.float64)
    return affine


# --- validation (shared by every loader) -----------------------------------------------------
def _validate(data: np.ndarray, affine: np.ndarray, source: str, kind: str) -> np.ndarray:
    """Check array and geometry; return the data converted to the dtype the kind needs."""
    _check_kind(kind, source)
    _check_shape(data, source)
    _check_geometry(affine, source)
    if np.iscomplexobj(data) or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise VolumeError(f"{source}: voxel type {data.dtype} is not a real number; expected scalar voxels")
    _check_finite(data, source)
    _check_not_constant(data, source, kind)
    if kind == "labels":
        return _as_labels(data, source)
    data = data.astype(np.float32, copy=False)
    if kind == "attenuation" and data.min() < 0:
        raise VolumeError(f"{source}: attenuation must not be negative, found minimum {data.min():.6g} /mm")
    return data


def _check_kind(kind: str, source: str) -> None:
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
            f"{_sizes(data.shape[::-1])} (I\u00d7J\u00d7K)"
        )


def _check_geometry(affine: np.ndarray, source: str) -> None:
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeError(f"{source}: the voxel-to-RAS affine must be a finite 4x4 matrix")
    if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise VolumeError(f"{source}: the affine's last row must be (0, 0, 0, 1), got {_fmt(affine[3])}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise VolumeError(f"{source}: spacing must be positive, got {_fmt(spacing)} mm")
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


def _check_finite(data: np.ndarray, source: str) -> None:
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


def _check_image_layout(image: sitk.Image, source: str) -> sitk.Image:
    """Reject 2-D, 4-D and vector images; a 4-D image with one time point becomes 3-D."""
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    elif image.GetDimension() != 3:
        hint = " (time series?)" if image.GetDimension() == 4 else ""
        raise VolumeError(
            f"{source}: expected a 3-D volume, found a {image.GetDimension()}-D image "
            f"of size {_sizes(size)}{hint}"
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
    affine = _ras_affine(image)
    data = _validate(sitk.GetArrayViewFromImage(image), affine, source, kind)
    if not data.flags.owndata:
        data = data.copy()  # never keep a view into SimpleITK's buffer
    return Volume(data, affine, source, kind)


# --- file-format checks SimpleITK does not do ------------------------------------------------
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


def _check_nifti(path: Path) -> None:
    """Checks for NIfTI defects that SimpleITK hides.

    SimpleITK 2.x (ITK 5.4) replaces a pixdim of 0 by 1 mm, turns a negative pixdim into a
    flipped axis, zero-fills the voxels missing from a truncated file and reads NaN/Inf voxels
    as 0; each would silently give a wrong volume.
    """
    header = _nifti_header(path)
    if header is None:
        return  # not a NIfTI header: SimpleITK reports the problem
    spatial = header.pixdim[1 : 1 + min(header.dim[0], 3)]
    if not all(np.isfinite(spatial)) or min(spatial) <= 0:
        raise VolumeError(
            f"{path}: spacing must be positive, got {_fmt(spatial)} mm in the NIfTI header (pixdim); "
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
            _check_finite(voxels, str(path))
    if available < header.data_end:
        raise VolumeError(
            f"{path}: the file is truncated: it holds {max(available - header.vox_offset, 0)} of "
            f"{header.data_end - header.vox_offset} bytes of voxel data"
        )


def _nifti_bytes(path: Path, limit: int) -> bytes:
    """The first ``limit`` bytes of the (decompressed) file, fewer if it is shorter."""
    if _suffix(path) == ".nii.gz":
        return _gunzip_prefix(path, limit)
    with open(path, "rb") as f:
        return f.read(limit)


def _nifti_length(path: Path, expected: int) -> int:
    """Uncompressed length of the file (exact when it might be short; cheap when it is not)."""
    if _suffix(path) != ".nii.gz":
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


def _check_metaimage(path: Path) -> None:
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
        raise VolumeError(f"{path}: spacing must be positive, got {_fmt(spacing)} mm (ElementSpacing)")


def _itk_reason(exc: Exception) -> str:
    """The human part of a SimpleITK/ITK exception, without source locations and addresses."""
    text = re.sub(r"^Exception thrown in SimpleITK \w+:\s*\S+:\d+:\s*", "", str(exc))
    text = re.sub(r"^(?:ITK |sitk::)?ERROR:\s*(?:\w+\s*\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    text = re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", text)
    return " ".join(text.split())[:400]


# --- readers ---------------------------------------------------------------------------------
def _read_file(path: Path) -> sitk.Image:
    suffix = _suffix(path)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti(path)
    elif suffix in (".mha", ".mhd"):
        _check_metaimage(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        reason = _itk_reason(exc)
        if "Zero-valued spacing" in reason:
            reason = "spacing must be positive, but the file has a zero spacing"
        elif "determinant is 0" in reason:
            reason = "the direction matrix is singular (two voxel axes are parallel)"
        else:
            reason = f"SimpleITK cannot read the file (damaged or not an image?): {reason}"
        raise VolumeError(f"{path}: {reason}") from None


def _is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _dicom_header(path: str | Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read the DICOM header: {_itk_reason(exc)}") from None
    return reader


def _dicom_tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _pick_series(folder: Path, series_uid: str | None, source: str) -> list[str]:
    """File names of the requested series, or of the series with the most files."""
    where = "this folder" if source == str(folder) else str(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise VolumeError(f"{source}: no DICOM image series found in {where}")
    files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in uids}
    if series_uid is None:
        return max(files.values(), key=len)
    if series_uid not in files:
        listing = "; ".join(f"{uid} ({len(names)} files)" for uid, names in files.items())
        raise VolumeError(f"{source}: series {series_uid} is not in {where}; series found: {listing}")
    return files[series_uid]


def _read_dicom_series(folder: Path, series_uid: str | None, source: str) -> sitk.Image:
    files = _pick_series(folder, series_uid, source)
    modality = _dicom_tag(_dicom_header(files[0]), "0008|0060")
    if modality in _PROJECTION_MODALITIES:
        raise VolumeError(f"{source}: a projection X-ray image (modality {modality}) is not a 3-D volume")
    if len(files) == 1:  # e.g. one multi-frame file: the series reader would stack it as 4-D
        return _read_file(Path(files[0]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"{source}: SimpleITK cannot read the DICOM series: {_itk_reason(exc)}") from None
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


# --- public loaders --------------------------------------------------------------------------
def load_volume(path: str | os.PathLike, kind: str = "ct", series_uid: str | None = None) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file, or a DICOM series (folder or one of its files).

    For a folder, ``series_uid`` selects the series; by default the one with the most files.
    Intensities come back as float32, label maps (``kind="labels"``) as integers.
    """
    path = Path(path)
    _check_kind(kind, str(path))
    if not path.exists():
        raise VolumeError(f"{path}: file or folder not found")
    if path.is_dir():
        image = _read_dicom_series(path, series_uid, str(path))
    elif _suffix(path) in READ_SUFFIXES:
        image = _read_file(path)
    elif _is_dicom_file(path):
        uid = series_uid or _dicom_tag(_dicom_header(path), "0020|000e")
        image = _read_dicom_series(path.parent, uid, str(path))
    else:
        raise VolumeError(
            f"{path}: unsupported file type {_suffix(path) or '(no suffix)'}; expected NIfTI, NRRD, "
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
    return Volume(_validate(data, affine, source, kind), affine.copy(), source, kind)


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
        parts.append(f"size {_sizes(a.shape_ijk)} vs {_sizes(b.shape_ijk)}")
    if not np.allclose(a.spacing, b.spacing, atol=_GRID_ATOL):
        parts.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if not np.allclose(a.direction, b.direction, atol=_GRID_ATOL):
        parts.append("direction differs")
    shift = np.linalg.norm(a.origin - b.origin)
    if shift > _GRID_ATOL:
        parts.append(f"origin {shift:.4g} mm apart")
    return ", ".join(parts) or "affine differs"


def _resample_nearest(labels: Volume, reference: Volume) -> np.ndarray:
    origin, spacing, direction = _lps_geometry(reference.affine)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in reference.shape_ijk])
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    return sitk.GetArrayFromImage(resampler.Execute(labels.to_sitk()))
