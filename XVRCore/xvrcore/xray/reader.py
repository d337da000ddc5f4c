"""Reading X-ray / DSA DICOM images (XA, RF, DX, CR …) together with their C-arm geometry.

:func:`read_xray` returns an :class:`XrayImage`: a line-integral-like image (dense = high), the
image as stored (for display), a :class:`~xvrcore.geometry.Detector` (always the detector-side,
mirrored view), the positioner angles, an exposure mask and a record of every assumption made.
Nothing that identifies the patient is read or reported.

Geometry, in order of preference (the source of every value is kept in
``XrayImage.geometry_sources``; each fallback adds a warning). A value given in
:class:`GeometryOverrides` always wins over the header (the warning then names the header
value it replaced).

* **Detector pixel spacing** (row, column mm at the detector):
  ``ImagerPixelSpacing (0018,1164)`` ("physical distance measured at the front plane of the
  image receptor housing") → ``PixelSpacing (0028,0030)`` ("physical distance in the patient";
  equal to ImagerPixelSpacing unless calibrated — if ``PixelSpacingCalibrationType (0028,0A02)``
  says GEOMETRY/FIDUCIAL it is multiplied by the magnification
  ``EstimatedRadiographicMagnificationFactor (0018,1114)`` or SID/SOD, else used as is with a
  warning that it may be calibrated at the isocentre) → ``FieldOfViewDimensions (0018,1149)``
  divided by Rows/Columns (image-intensifier systems such as the GE Innova files: 200 mm / 512)
  → error. Values that are not positive, not finite or outside 0.005–10 mm count as missing.
  Non-square pixels are kept as they are (the Detector has separate row/column spacings).
* **SID** ``DistanceSourceToDetector (0018,1110)`` (100–5000 mm) → error.
* **SOD** (source to isocentre) ``DistanceSourceToIsocenter (0018,9402)`` →
  ``DistanceSourceToPatient (0018,1111)`` (for DX/CR/MG it is measured to the patient-side
  surface of the table/bucky, not to an isocentre: warned) → SID / ERMF → None. It must lie
  in (0, SID).
* **Angles** ``PositionerPrimaryAngle (0018,1510)`` / ``PositionerSecondaryAngle (0018,1511)``
  (patient-relative, LAO +/CRA +, see :mod:`xvrcore.geometry.positioner`), plus the per-frame
  ``PositionerPrimary/SecondaryAngleIncrement (0018,1520/1521)`` of DYNAMIC runs; ignored when
  ``PositionerType (0018,1508)`` is present and not CARM. For CR/DX without angles the
  nominal angles of ``ViewPosition (0018,5101)`` PA (0°), AP (180°), LL (+90°), RL (−90°) are
  used (warned). ``PatientPosition (0018,5100)`` and ``PatientOrientation (0020,0020)`` are kept.
* **Principal point**: at the image centre unless ``GeometryOverrides.principal_offset`` is
  given, or the full DX detector description is present — ``DetectorElementSpacing
  (0018,7022)``, ``DetectorActiveOrigin (0018,7028)``, ``DetectorActiveDimensions (0018,7026)``,
  ``FieldOfViewOrigin (0018,7030)``, ``FieldOfViewDimensions (0018,1149)`` (with
  ``FieldOfViewRotation (0018,7032)`` and ``FieldOfViewHorizontalFlip (0018,7034)``) — in which
  case the principal point is taken at the centre of the active detector area (where SID is
  measured). ``DetectorActiveOrigin`` alone is *not* a principal point (xvr's converter
  repurposes it that way; the standard does not): it is reported and ignored.
* Enhanced multi-frame objects: each of these attributes is also looked up in the per-frame
  and shared functional groups.

Exposure **mask** (True = exposed anatomy): the intersection of every shape in
``ShutterShape (0018,1600)`` (RECTANGULAR: ``ShutterLeft/RightVerticalEdge``,
``ShutterUpper/LowerHorizontalEdge``; CIRCULAR: ``CenterOfCircularShutter``,
``RadiusOfCircularShutter``; POLYGONAL: ``VerticesOfThePolygonalShutter``) and of
``CollimatorShape (0018,1700)`` with the matching Collimator tags (DICOM pixel coordinates,
first pixel = 1\\1, rows before columns); a ROUND ``FieldOfViewShape (0018,1147)`` (the inscribed
circle); ``PixelPaddingValue``; and an automatically detected digitally blanked surround (the
border carries one exact value and the rest of the image is a disk or a rectangle, e.g. the
circular field of an image intensifier in a secondary capture). A shape that does not fit the
image (edges outside it, or < 2 % of it left) is ignored with a warning.

**Polarity and intensity conversion.** ``pixels`` is a line-integral-like image: dense = high,
≈ 0 at the least attenuated exposed pixels (0.5th percentile), in natural-log units for raw
images and in the file's own (unknown) log units otherwise. Whether dense tissue has high or low
values *in the file* is decided by weighing evidence, all of it reported in ``polarity`` /
``polarity_evidence``:

1. ``PixelIntensityRelationshipSign (0028,1041)`` (+1: low values = less beam intensity,
   so dense = low) — weight 3.
2. ``PixelIntensityRelationship (0028,1040)`` = LIN (values ∝ beam intensity: dense = low) — 2.
3. **Unexposed pixels** outside the tagged collimator/shutter: with no primary photons they look
   like the densest possible tissue in raw and in processed images alike, so their level
   (compared with the exposed median, relative to the exposed 1–99 % range, |Δ| ≥ 0.2) says
   which end is dense — 1.5. Blanked pixels (one exact value) are display conventions and are
   not used.
4. **Thin tubular structures** (vessels, catheters, wires, contrast-filled tubes) are dense:
   the sign of the strongest Hessian ridges says whether they are dark or bright. Score =
   (dark − bright)/(dark + bright) over the 2 % strongest line-like responses (curved across,
   flat along, no slope at the centre — so edges do not count) at σ = 1, 2, 3 px of a ≤ 256-px
   block-averaged copy, computed on the *ranks* of the exposed values so that raw, log- and
   display-processed versions of one image score alike. Weight 2 if |score| ≥ 0.4, 1 if ≥ 0.25
   for angiographic/fluoroscopic (XA, RF, SC/OT) images; for radiographs (CR, DX, MG …), whose
   ribs, joint spaces and bowel gas make both kinds of lines, only 0.5 and only if |score| ≥ 0.5.
5. The modality's display convention (XA/RF: dense displayed dark; CR/DX/MG: dense displayed
   bright; MONOCHROME1 inverts the display) — 0.5, a tie-breaker.

The sign of the weighted sum decides (a zero sum falls back to the display convention, or, with
none, keeps the file's values; both warned); conflicting evidence is warned about.

Raw detector values are ∝ exp(−line integral); an image is
treated as raw (``L = ln I0 − ln I``, I0 = 99.5th exposed percentile) when
``PixelIntensityRelationship`` is LIN, or — with no such tag — when bright = transparent, all
exposed values are positive, BitsStored ≥ 12 and the exposed values span ≥ 20× (p99.5/p0.5);
LOG, DISP and everything else is treated as already log-like (``L = ±(value − reference)``).
Both decisions can be forced with ``read_xray(..., dense="high"|"low", intensity="lin"|"log")``.

Frames: ``frame=None`` is the only frame, or for multi-frame files ``"max"`` — the per-pixel
maximum of the line-integral frames (maximum opacification); ``"min"`` and ``"mean"`` likewise;
an int selects one frame (0-based, negative from the end). ``mask_frame`` subtracts that frame's
line integrals (DSA: subtraction in the log domain). Reductions of a DYNAMIC (rotational) run
are warned about; its angles are those of the selected frame (frame 0 for reductions).

Compressed transfer syntaxes are decoded by pydicom's plugins (``python-gdcm`` for JPEG,
JPEG-LS, JPEG 2000 and RLE; or ``pylibjpeg`` with ``pylibjpeg-libjpeg``/``-openjpeg``; Pillow
covers JPEG baseline and JPEG 2000); without one, SimpleITK (GDCM) is tried, which rescales and
turns MONOCHROME1 into MONOCHROME2 itself (both handled); if both fail the error names the
transfer syntax and the packages to install.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..geometry.camera import Detector, Intrinsics
from ..geometry.positioner import PATIENT_POSITIONS, patient_orientation, pose_from_positioner

__all__ = [
    "OVERRIDE_HINTS",
    "GeometryOverrides",
    "XrayDicomError",
    "XrayImage",
    "read_xray",
]

#: How a user supplies each missing value (command line, Slicer panel). Error messages quote these.
OVERRIDE_HINTS = {
    "pixel_spacing": "--pixel-spacing ROW COL (or the panel's 'Pixel spacing' field)",
    "sdd": "--sdd MM (or the panel's 'Source-detector distance' field)",
    "sod": "--sod MM (or the panel's 'Source-isocentre distance' field)",
    "primary_angle": "--primary-angle DEG (or the panel's 'Primary angle (LAO+/RAO-)' field)",
    "secondary_angle": "--secondary-angle DEG (or the panel's 'Secondary angle (CRA+/CAU-)' field)",
}

_PROJECTION_MODALITIES = {"XA", "RF", "DX", "CR", "RG", "MG", "IO", "PX"}
_ANGIO_MODALITIES = {"XA", "RF"}  # displayed like fluoroscopy: dense = dark
_RADIOGRAPHIC_MODALITIES = {"DX", "CR", "RG", "MG", "IO", "PX"}  # dense = bright on display
_SURFACE_SOD_MODALITIES = {"DX", "CR", "RG", "MG", "IO", "PX"}
_VIEW_ANGLES = {"PA": (0.0, 0.0), "AP": (180.0, 0.0), "LL": (90.0, 0.0), "RL": (-90.0, 0.0)}
_FRAME_REDUCTIONS = ("max", "min", "mean")

_SPACING_RANGE = (0.005, 10.0)  # mm per pixel at the detector
_SID_RANGE = (100.0, 5000.0)  # mm


class XrayDicomError(ValueError):
    """A DICOM X-ray that cannot be used as it is; the message names the file, what is missing and how to supply it."""


@dataclass
class GeometryOverrides:
    """User-supplied geometry, used instead of missing or wrong header values.

    ``pixel_spacing``: (row, column) mm at the detector, or one number for square pixels;
    ``sdd``: source–detector distance; ``sod``: source–isocentre distance (mm);
    ``primary_angle`` (LAO +) / ``secondary_angle`` (CRA +) in degrees;
    ``principal_offset``: (column, row) mm of the principal point from the image centre, as in
    :class:`~xvrcore.geometry.Detector`; ``patient_position``: e.g. ``"HFS"``.
    """

    pixel_spacing: tuple[float, float] | float | None = None
    sdd: float | None = None
    sod: float | None = None
    primary_angle: float | None = None
    secondary_angle: float | None = None
    principal_offset: tuple[float, float] | None = None
    patient_position: str | None = None

    def __post_init__(self) -> None:
        if self.pixel_spacing is not None:
            vals = np.atleast_1d(np.asarray(self.pixel_spacing, dtype=float)).tolist()
            if len(vals) == 1:
                vals = vals * 2
            if len(vals) != 2 or not all(_SPACING_RANGE[0] <= v <= _SPACING_RANGE[1] for v in vals):
                raise ValueError(
                    f"pixel spacing override must be one or two values (row, column) between "
                    f"{_SPACING_RANGE[0]} and {_SPACING_RANGE[1]} mm, got {self.pixel_spacing!r}"
                )
            self.pixel_spacing = (vals[0], vals[1])
        for name in ("sdd", "sod"):
            v = getattr(self, name)
            if v is not None:
                v = float(v)
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(
                        f"{name} override must be a positive distance in mm, got {getattr(self, name)!r}"
                    )
                setattr(self, name, v)
        if self.sdd is not None and self.sod is not None and self.sod >= self.sdd:
            raise ValueError(f"sod override ({self.sod} mm) must be smaller than sdd ({self.sdd} mm)")
        for name in ("primary_angle", "secondary_angle"):
            v = getattr(self, name)
            if v is not None:
                v = float(v)
                if not math.isfinite(v):
                    raise ValueError(f"{name} override must be finite, got {getattr(self, name)!r}")
                setattr(self, name, v)
        if self.principal_offset is not None:
            off = tuple(float(v) for v in self.principal_offset)
            if len(off) != 2 or not all(math.isfinite(v) for v in off):
                raise ValueError(
                    f"principal_offset override must be (column, row) in mm, got {self.principal_offset!r}"
                )
            self.principal_offset = off
        if self.patient_position is not None:
            pos = str(self.patient_position).strip().upper()
            if pos not in PATIENT_POSITIONS:
                raise ValueError(
                    f"unknown patient position {self.patient_position!r}; expected one of {PATIENT_POSITIONS}"
                )
            self.patient_position = pos


@dataclass(repr=False, eq=False)
class XrayImage:
    """An X-ray image with its C-arm geometry (see the module docstring for every field's origin)."""

    pixels: np.ndarray  # float32 (H, W), line-integral-like: dense = high
    raw: np.ndarray  # float32 (H, W), after the modality LUT, MONOCHROME1 inverted: high = displayed bright
    detector: Detector
    mask: np.ndarray  # bool (H, W): True where anatomy was exposed
    sod: float | None
    primary_angle: float | None
    secondary_angle: float | None
    patient_position: str | None
    polarity: str
    source: str
    frame_info: str
    warnings: list[str]
    modality: str
    sop_class: str
    number_of_frames: int = 1
    patient_orientation: tuple[str, ...] | None = None
    intensity: str = "log"  # "exponential" (raw detector values, -log applied) or "log"
    dense_high_in_file: bool = True
    polarity_evidence: list[str] = field(default_factory=list)
    geometry_sources: dict[str, str] = field(default_factory=dict)

    @property
    def intrinsics(self) -> Intrinsics:
        return self.detector.intrinsics()

    @property
    def magnification(self) -> float | None:
        return None if self.sod is None else self.detector.sdd / self.sod

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class).name if self.sop_class else ""

    def __repr__(self) -> str:
        d = self.detector
        angles = (
            "angles=unknown"
            if self.primary_angle is None
            else f"primary={self.primary_angle:+.1f}°, secondary={self.secondary_angle:+.1f}°"
        )
        sod = "sod=unknown" if self.sod is None else f"sod={self.sod:g} mm"
        return (
            f"XrayImage({Path(self.source).name}: {self.modality} {d.rows}×{d.cols}, {self.frame_info}; "
            f"sdd={d.sdd:g} mm, spacing={d.row_spacing:g}×{d.col_spacing:g} mm, {sod}, {angles}; "
            f"{self.polarity}; {len(self.warnings)} warning(s))"
        )


# ---- small header helpers ---------------------------------------------------------------------------


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, bytes)):
        return bool(value.strip())
    try:
        return len(value) > 0  # type: ignore[arg-type]
    except TypeError:
        return True


def _find(ds, keyword: str, frame: int = 0):
    """An attribute's value from the top level, else the per-frame or shared functional groups."""
    if keyword in ds and _present(ds[keyword].value):
        return ds[keyword].value
    for group, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(group)
        if not seq or len(seq) <= index:
            continue
        for elem in seq[index]:
            if elem.VR != "SQ" or not elem.value:
                continue
            item = elem.value[0]
            if keyword in item and _present(item[keyword].value):
                return item[keyword].value
    return None


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _floats(value) -> list[float] | None:
    try:
        out = [float(v) for v in _as_list(value)]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _shown(value) -> str:
    """A header value as DICOM writes it (multi-values joined by a backslash)."""
    if value is None:
        return "absent"
    return "\\".join(str(v) for v in _as_list(value)) or "empty"


def _valid_spacing(value) -> tuple[float, float] | None:
    vals = _floats(value)
    if vals is None or len(vals) not in (1, 2):
        return None
    if len(vals) == 1:
        vals = vals * 2
    if not all(_SPACING_RANGE[0] <= v <= _SPACING_RANGE[1] for v in vals):
        return None
    return vals[0], vals[1]


def _describe(keyword: str, value) -> str:
    return f"{_tag(keyword)} is {'absent' if value is None else _shown(value)}"


# ---- reading ------------------------------------------------------------------------------------------


def _read_dataset(path: Path, name: str):
    if not path.is_file():
        raise XrayDicomError(f"{name}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - anything pydicom raises means "not DICOM"
            raise XrayDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001
        raise XrayDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise XrayDicomError(f"{name}: the DICOM file has no pixel data (7FE0,0010); it is not an image")
    return ds


def _transfer_syntax(ds) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else None


def _pydicom_pixels(ds) -> np.ndarray:
    return ds.pixel_array


def _sitk_pixels(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _to_grey(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


@dataclass
class _Pixels:
    frames: np.ndarray  # float32 (F, H, W) after the modality LUT
    photometric: str  # the effective photometric interpretation of ``frames``
    value_sign: float  # +1 if frames increase with the stored values, -1 if reversed
    bits_stored: int
    stored_first: np.ndarray  # frame 0 as decoded, before rescaling (for padding/blank detection)


def _decode_pixels(ds, path: Path, name: str, warnings: list[str]) -> _Pixels:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        raise XrayDicomError(f"{name}: PALETTE COLOR images are not X-ray projections this reader can use")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    ts = _transfer_syntax(ds)
    value_sign = 1.0
    try:
        arr = np.asarray(_pydicom_pixels(ds))
        rescaled = False
    except Exception as exc:  # noqa: BLE001 - pydicom raises RuntimeError/NotImplementedError/ValueError…
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
        try:
            arr = np.asarray(_sitk_pixels(path))
        except Exception:  # noqa: BLE001
            ts_name = f"{ts.name} ({ts})" if ts else "unknown transfer syntax"
            raise XrayDicomError(
                f"{name}: cannot decode the pixel data, transfer syntax {ts_name}: pydicom has no working "
                f"decoder ({first}) and SimpleITK could not read it either. Install a decoder for this "
                "transfer syntax: `pip install python-gdcm` (JPEG, JPEG-LS, JPEG 2000, RLE) or "
                "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`"
            ) from None
        rescaled = True
        warnings.append(
            f"pixel data ({ts.name if ts else 'unknown transfer syntax'}) decoded by SimpleITK/GDCM because "
            f"pydicom could not ({first}); GDCM applied the rescale and shows MONOCHROME1 as MONOCHROME2"
        )
        if samples == 1 and arr.ndim == 3 and n_frames == 1 and arr.shape[0] == 1:
            arr = arr[0]
        if photometric == "MONOCHROME1":
            photometric, value_sign = "MONOCHROME2", -1.0
    if samples > 1:
        arr = _to_grey(arr.astype(np.float32))
        warnings.append(f"colour image ({photometric}) converted to grey (luminance)")
        photometric = "MONOCHROME2"
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise XrayDicomError(f"{name}: unexpected pixel array shape {arr.shape}")
    stored_first = np.asarray(arr[0])
    frames = arr.astype(np.float32)
    if not rescaled:
        frames, slope_sign = _apply_modality_lut(ds, arr, frames, warnings)
        value_sign *= slope_sign
    return _Pixels(frames, photometric, value_sign, bits, stored_first)


def _apply_modality_lut(
    ds, arr: np.ndarray, frames: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, float]:
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        warnings.append("Modality LUT Sequence applied")
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32), 1.0
    slopes = []
    for f in range(frames.shape[0]):
        slope = _floats(_find(ds, "RescaleSlope", f)) or [1.0]
        intercept = _floats(_find(ds, "RescaleIntercept", f)) or [0.0]
        if slope[0] == 0:
            warnings.append("RescaleSlope is 0; ignored")
            slope = [1.0]
        if slope[0] != 1.0 or intercept[0] != 0.0:
            frames[f] = frames[f] * np.float32(slope[0]) + np.float32(intercept[0])
        slopes.append(slope[0])
    return frames, -1.0 if slopes and slopes[0] < 0 else 1.0


# ---- geometry -----------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    spacing: tuple[float, float]
    sdd: float
    sod: float | None
    primary: float | None
    secondary: float | None
    patient_position: str | None
    patient_orientation: tuple[str, ...] | None
    principal_offset: tuple[float, float]
    sources: dict[str, str]


def _header_spacing(ds, modality: str, rows: int, cols: int, frame: int, sdd, sod, warnings):
    """Detector spacing from the header, the attribute it came from, and why others failed."""
    ips_raw = _find(ds, "ImagerPixelSpacing", frame)
    ps_raw = _find(ds, "PixelSpacing", frame)
    fov_raw = _find(ds, "FieldOfViewDimensions", frame)
    ips, ps = _valid_spacing(ips_raw), _valid_spacing(ps_raw)
    if ips is not None:
        if ps is not None and max(abs(a / b - 1) for a, b in zip(ps, ips, strict=True)) > 0.01:
            warnings.append(
                f"PixelSpacing {_shown(ps_raw)} differs from ImagerPixelSpacing {_shown(ips_raw)} (calibrated to "
                "the patient plane); the detector spacing ImagerPixelSpacing is used"
            )
        return ips, _tag("ImagerPixelSpacing"), []
    failed = [_describe("ImagerPixelSpacing", ips_raw)]
    if ps is not None:
        cal = str(ds.get("PixelSpacingCalibrationType", "") or "").strip().upper()
        ermf = (_floats(_find(ds, "EstimatedRadiographicMagnificationFactor", frame)) or [None])[0]
        if ermf is None and sdd and sod:
            ermf = sdd / sod
        if cal in ("GEOMETRY", "FIDUCIAL") and ermf and 1.0 <= ermf <= 5.0:
            warnings.append(
                f"PixelSpacing {_shown(ps_raw)} used because ImagerPixelSpacing is absent; it is calibrated "
                f"({cal}) to the patient, so it was multiplied by the magnification {ermf:.4g} to get the "
                "detector spacing"
            )
            return (ps[0] * ermf, ps[1] * ermf), f"{_tag('PixelSpacing')} × magnification", failed
        extra = f" (PixelSpacingCalibrationType {cal}, magnification unknown)" if cal else ""
        warnings.append(
            f"PixelSpacing {_shown(ps_raw)} used because ImagerPixelSpacing is absent{extra}; for projection "
            "images it may be calibrated at the isocentre/patient rather than the detector, which would "
            f"scale the geometry — check it, or give the detector spacing with {OVERRIDE_HINTS['pixel_spacing']}"
        )
        return ps, _tag("PixelSpacing"), failed
    failed.append(
        _describe("PixelSpacing", ps_raw) + (" (not a valid spacing)" if ps_raw is not None else "")
    )
    fov = _floats(fov_raw)
    shape = str(_find(ds, "FieldOfViewShape", frame) or "").strip().upper()
    if fov and all(v > 0 for v in fov):
        if len(fov) >= 2 and shape not in ("ROUND", "HEXAGONAL"):
            spacing = (fov[0] / rows, fov[1] / cols)
        else:
            spacing = (fov[0] / min(rows, cols),) * 2
        if _valid_spacing(spacing) is not None:
            warnings.append(
                f"detector spacing {spacing[0]:.6g}×{spacing[1]:.6g} mm derived from FieldOfViewDimensions "
                f"{_shown(fov_raw)} mm over {rows}×{cols} pixels because ImagerPixelSpacing and PixelSpacing are "
                "absent (assumes the field of view fills the image matrix, as on image-intensifier systems)"
            )
            return spacing, f"{_tag('FieldOfViewDimensions')} / matrix", failed
    failed.append(_describe("FieldOfViewDimensions", fov_raw))
    return None, None, failed


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _geometry(
    ds,
    overrides: GeometryOverrides,
    name: str,
    modality: str,
    rows: int,
    cols: int,
    frame: int,
    n_frames: int,
    reducing: bool,
    warnings: list[str],
) -> _Geometry:
    problems: list[str] = []
    sources: dict[str, str] = {}

    # -- source-to-detector distance
    sid_raw = _find(ds, "DistanceSourceToDetector", frame)
    sid_vals = _floats(sid_raw)
    sid = sid_vals[0] if sid_vals and _SID_RANGE[0] <= sid_vals[0] <= _SID_RANGE[1] else None
    if overrides.sdd is not None:
        if sid is not None and abs(sid - overrides.sdd) > 1e-6:
            warnings.append(
                f"source-detector distance {overrides.sdd:g} mm from the override replaces DistanceSourceToDetector {sid:g}"
            )
        sid, sources["sdd"] = overrides.sdd, "override"
    elif sid is not None:
        sources["sdd"] = _tag("DistanceSourceToDetector")
    else:
        bad = "" if sid_raw is None else f" (outside {_SID_RANGE[0]:g}–{_SID_RANGE[1]:g} mm)"
        problems.append(
            f"{_describe('DistanceSourceToDetector', sid_raw)}{bad}; give the source-detector distance with {OVERRIDE_HINTS['sdd']}"
        )

    # -- source-to-isocentre distance
    sod, sod_src = None, None
    for kw in ("DistanceSourceToIsocenter", "DistanceSourceToPatient"):
        vals = _floats(_find(ds, kw, frame))
        if vals and vals[0] > 0:
            sod, sod_src = vals[0], _tag(kw)
            break
    ermf = (_floats(_find(ds, "EstimatedRadiographicMagnificationFactor", frame)) or [None])[0]
    if sod is None and ermf and sid and ermf >= 1.0:
        sod, sod_src = (
            sid / ermf,
            f"{_tag('DistanceSourceToDetector')} / {_tag('EstimatedRadiographicMagnificationFactor')}",
        )
        warnings.append(
            f"source-isocentre distance {sod:.1f} mm derived from SID / EstimatedRadiographicMagnificationFactor"
        )
    if sod is not None and sid is not None and not (0 < sod < sid):
        warnings.append(
            f"source-patient distance {sod:g} mm is not between 0 and the SID {sid:g} mm; ignored"
        )
        sod, sod_src = None, None
    if sod is not None and sid is not None and ermf and abs(sid / sod - ermf) > 0.02 * ermf:
        warnings.append(
            f"SID/SOD = {sid / sod:.4f} disagrees with EstimatedRadiographicMagnificationFactor {ermf:g}"
        )
    if sod is not None and sod_src == _tag("DistanceSourceToPatient") and modality in _SURFACE_SOD_MODALITIES:
        warnings.append(
            f"DistanceSourceToPatient ({sod:g} mm) of a {modality} image is measured to the patient-side surface of the "
            "table/bucky, not to an isocentre"
        )
    if overrides.sod is not None:
        if sod is not None and abs(sod - overrides.sod) > 1e-6:
            warnings.append(
                f"source-isocentre distance {overrides.sod:g} mm from the override replaces {sod:g} mm"
            )
        sod, sod_src = overrides.sod, "override"
        if sid is not None and sod >= sid:
            problems.append(
                f"the source-isocentre distance {sod:g} mm must be smaller than the source-detector distance {sid:g} mm"
            )
    if sod_src:
        sources["sod"] = sod_src

    # -- pixel spacing
    spacing, spacing_src, failed = _header_spacing(ds, modality, rows, cols, frame, sid, sod, warnings)
    if overrides.pixel_spacing is not None:
        if (
            spacing is not None
            and max(abs(a / b - 1) for a, b in zip(overrides.pixel_spacing, spacing, strict=True)) > 1e-6
        ):
            warnings.append(
                f"pixel spacing {overrides.pixel_spacing} mm from the override replaces {spacing} from {spacing_src}"
            )
        spacing, spacing_src = overrides.pixel_spacing, "override"
    elif spacing is None:
        problems.append(
            f"{_join(failed)}; give the detector pixel spacing with {OVERRIDE_HINTS['pixel_spacing']}"
        )
    if spacing is not None:
        sources["pixel_spacing"] = spacing_src
        if abs(spacing[0] / spacing[1] - 1) > 0.01:
            warnings.append(
                f"non-square pixels {spacing[0]:g}×{spacing[1]:g} mm (row×column) kept as they are"
            )

    if problems:
        kind = UID(str(ds.get("SOPClassUID", ""))).name if ds.get("SOPClassUID") else "unknown SOP class"
        raise XrayDicomError(
            f"{name} ({modality or 'no modality'}, {kind}): cannot build the C-arm geometry: "
            + "; ".join(problems)
        )

    # -- angles
    primary = secondary = None
    ptype = str(ds.get("PositionerType", "") or "").strip().upper()
    if ptype and ptype != "CARM":
        warnings.append(f"PositionerType {ptype}: the positioner angles are not C-arm angles and are ignored")
    else:
        p, s = (
            _floats(_find(ds, "PositionerPrimaryAngle", frame)),
            _floats(_find(ds, "PositionerSecondaryAngle", frame)),
        )
        if p and s:
            primary, secondary = p[0], s[0]
            sources["angles"] = f"{_tag('PositionerPrimaryAngle')}, {_tag('PositionerSecondaryAngle')}"
            if frame > 0:
                for kw, i in (
                    ("PositionerPrimaryAngleIncrement", 0),
                    ("PositionerSecondaryAngleIncrement", 1),
                ):
                    inc = _floats(ds.get(kw))
                    if inc and len(inc) > frame:
                        if i == 0:
                            primary += inc[frame]
                        else:
                            secondary += inc[frame]
                        sources["angles"] += f" + {kw} of frame {frame}"
        elif p or s:
            warnings.append(
                "only one of PositionerPrimaryAngle/PositionerSecondaryAngle is present; angles ignored"
            )
        motion = str(ds.get("PositionerMotion", "") or "").strip().upper()
        if motion == "DYNAMIC" and reducing and n_frames > 1:
            warnings.append(
                "the C-arm moved during this run (PositionerMotion DYNAMIC) but frames were combined; the angles are those of frame 0"
            )
    if primary is None and modality in _RADIOGRAPHIC_MODALITIES:
        view = str(ds.get("ViewPosition", "") or "").strip().upper()
        if view in _VIEW_ANGLES:
            primary, secondary = _VIEW_ANGLES[view]
            sources["angles"] = f"{_tag('ViewPosition')} {view} (nominal)"
            warnings.append(
                f"no positioner angles; nominal angles {primary:g}°/{secondary:g}° taken from ViewPosition {view}"
            )
    if overrides.primary_angle is not None or overrides.secondary_angle is not None:
        if primary is not None:
            warnings.append(
                f"positioner angles from the override replace {primary:g}°/{secondary:g}° from the header"
            )
        primary = overrides.primary_angle if overrides.primary_angle is not None else (primary or 0.0)
        secondary = overrides.secondary_angle if overrides.secondary_angle is not None else (secondary or 0.0)
        sources["angles"] = "override"
    if primary is not None:
        primary = (primary + 180.0) % 360.0 - 180.0 if not -180.0 <= primary <= 180.0 else primary
        if not -90.0 <= secondary <= 90.0:
            warnings.append(f"secondary angle {secondary:g}° is outside the DICOM range −90…+90°")
    else:
        warnings.append(
            "no positioner angles: the nominal pose cannot be taken from the header; give them with "
            f"{OVERRIDE_HINTS['primary_angle']} and {OVERRIDE_HINTS['secondary_angle']}"
        )
    if sod is None:
        warnings.append(f"no source-isocentre distance; give it with {OVERRIDE_HINTS['sod']}")

    # -- patient position and orientation
    position = overrides.patient_position
    if position is None:
        raw_pos = str(ds.get("PatientPosition", "") or "").strip().upper()
        if raw_pos in PATIENT_POSITIONS:
            position = raw_pos
        elif raw_pos:
            warnings.append(f"PatientPosition {raw_pos!r} is not a defined term; ignored")
    orient_raw = ds.get("PatientOrientation")
    orient = (
        tuple(str(v).strip().upper() for v in _as_list(orient_raw) if str(v).strip())
        if orient_raw is not None
        else ()
    )
    orientation = orient if len(orient) == 2 else None

    offset = _principal_offset(ds, overrides, frame, warnings, sources)
    return _Geometry(spacing, sid, sod, primary, secondary, position, orientation, offset, sources)


def _principal_offset(
    ds, overrides: GeometryOverrides, frame: int, warnings: list[str], sources: dict
) -> tuple[float, float]:
    if overrides.principal_offset is not None:
        sources["principal_offset"] = "override"
        return overrides.principal_offset
    elem = _floats(_find(ds, "DetectorElementSpacing", frame))
    a_org = _floats(_find(ds, "DetectorActiveOrigin", frame))
    a_dim = _floats(_find(ds, "DetectorActiveDimensions", frame))
    f_org = _floats(_find(ds, "FieldOfViewOrigin", frame))
    f_dim = _floats(_find(ds, "FieldOfViewDimensions", frame))
    if elem and a_org and a_dim and f_org and f_dim and len(a_org) == 2 and len(f_org) == 2:
        elem = elem * 2 if len(elem) == 1 else elem
        a_dim = a_dim * 2 if len(a_dim) == 1 else a_dim
        f_dim = f_dim * 2 if len(f_dim) == 1 else f_dim
        active_centre = (a_org[0] + a_dim[0] / 2, a_org[1] + a_dim[1] / 2)  # (row, col) mm on the detector
        fov_centre = (f_org[0] * elem[0] + f_dim[0] / 2, f_org[1] * elem[1] + f_dim[1] / 2)
        dr, dc = active_centre[0] - fov_centre[0], active_centre[1] - fov_centre[1]
        rotation = (_floats(_find(ds, "FieldOfViewRotation", frame)) or [0.0])[0]
        for _ in range(round(rotation / 90.0) % 4):  # clockwise quarter turns: right -> down, down -> left
            dr, dc = dc, -dr
        if str(_find(ds, "FieldOfViewHorizontalFlip", frame) or "").strip().upper() == "YES":
            dc = -dc
        sources["principal_offset"] = (
            "centre of the active detector area (DetectorActiveOrigin/Dimensions, FieldOfViewOrigin/Dimensions)"
        )
        return (dc, dr)
    if a_org:
        warnings.append(
            f"DetectorActiveOrigin {_shown(_find(ds, 'DetectorActiveOrigin', frame))} is not a principal point in the "
            "DICOM standard and is ignored (principal point at the image centre)"
        )
    return (0.0, 0.0)


# ---- exposure mask -----------------------------------------------------------------------------------


def _shape_masks(
    ds, prefix: str, rows: int, cols: int, aspect: float, warnings: list[str]
) -> np.ndarray | None:
    """Exposed region of the shutter (``prefix="Shutter"``) or collimator (``"Collimator"``) tags."""
    shapes = [str(s).strip().upper() for s in _as_list(_find(ds, f"{prefix}Shape")) if str(s).strip()]
    if not shapes:
        return None
    r = np.arange(rows, dtype=np.float64)[:, None] + 1.0  # DICOM pixel coordinates: first pixel = 1
    c = np.arange(cols, dtype=np.float64)[None, :] + 1.0
    total = np.ones((rows, cols), bool)
    used = False
    for shape in shapes:
        if shape == "RECTANGULAR":
            kws = [
                f"{prefix}LeftVerticalEdge",
                f"{prefix}RightVerticalEdge",
                f"{prefix}UpperHorizontalEdge",
                f"{prefix}LowerHorizontalEdge",
            ]
            vals = [(_floats(_find(ds, k)) or [None])[0] for k in kws]
            if None in vals:
                warnings.append(f"{prefix}Shape RECTANGULAR without all four edges; ignored")
                continue
            left, right, upper, lower = vals
            tol_c, tol_r = 0.02 * cols + 1, 0.02 * rows + 1
            ok = (1 - tol_c <= left < right <= cols + tol_c) and (1 - tol_r <= upper < lower <= rows + tol_r)
            m = (c >= left) & (c <= right) & (r >= upper) & (r <= lower)
            desc = f"{prefix} edges left {left:g}, right {right:g}, upper {upper:g}, lower {lower:g}"
        elif shape == "CIRCULAR":
            centre = _floats(_find(ds, f"CenterOf{'Circular' + prefix}"))
            radius = _floats(_find(ds, f"RadiusOf{'Circular' + prefix}"))
            if not centre or len(centre) != 2 or not radius:
                warnings.append(f"{prefix}Shape CIRCULAR without centre and radius; ignored")
                continue
            (r0, c0), rad = centre, radius[0]
            ok = rad > 0 and 0 <= r0 <= rows + 1 and 0 <= c0 <= cols + 1
            m = (c - c0) ** 2 + ((r - r0) * aspect) ** 2 <= rad**2
            desc = f"circular {prefix.lower()} centre {r0:g}\\{c0:g}, radius {rad:g}"
        elif shape == "POLYGONAL":
            kw = (
                "VerticesOfThePolygonalShutter" if prefix == "Shutter" else "VerticesOfThePolygonalCollimator"
            )
            verts = _floats(_find(ds, kw))
            if not verts or len(verts) < 6 or len(verts) % 2:
                warnings.append(f"{prefix}Shape POLYGONAL without at least three vertices; ignored")
                continue
            pts = np.asarray(verts).reshape(-1, 2)
            ok = bool(
                np.all(
                    (pts[:, 0] >= 1 - 0.02 * rows - 1)
                    & (pts[:, 0] <= rows * 1.02 + 1)
                    & (pts[:, 1] >= 1 - 0.02 * cols - 1)
                    & (pts[:, 1] <= cols * 1.02 + 1)
                )
            )
            m = _polygon_mask(pts, r, c)
            desc = f"polygonal {prefix.lower()} with {len(pts)} vertices"
        else:
            warnings.append(f"{prefix}Shape {shape} is not a defined term; ignored")
            continue
        if not ok or m.mean() < 0.02:
            warnings.append(f"{desc} do not fit the {rows}×{cols} image; {prefix.lower()} ignored")
            continue
        total &= m
        used = True
    return total if used else None


def _polygon_mask(pts: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Even–odd rule for pixel centres; ``pts`` rows are (row, column)."""
    inside = np.zeros(np.broadcast_shapes(r.shape, c.shape), bool)
    n = len(pts)
    for i in range(n):
        (y1, x1), (y2, x2) = pts[i], pts[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > r) != (y2 > r)
        x_at = x1 + (x2 - x1) * (r - y1) / (y2 - y1)
        inside ^= crosses & (c < x_at)
    return inside


def _blanked_surround(stored: np.ndarray) -> tuple[np.ndarray, str] | None:
    """A digitally blanked surround: one exact value on the border, the rest a disk or a rectangle."""
    rows, cols = stored.shape
    ring = np.concatenate([stored[0], stored[-1], stored[:, 0], stored[:, -1]])
    values, counts = np.unique(ring, return_counts=True)
    if counts.max() < 0.5 * ring.size:
        return None
    blank_value = values[counts.argmax()]
    exposed = stored != blank_value
    frac = exposed.mean()
    if not 0.2 < frac < 0.995:
        return None
    rr, cc = np.nonzero(exposed)
    r0, c0 = rr.mean(), cc.mean()
    radius = math.sqrt(exposed.sum() / math.pi)
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    disk = (r - r0) ** 2 + (c - c0) ** 2 <= radius**2
    if (disk & exposed).sum() / (disk | exposed).sum() >= 0.95:
        return (r - r0) ** 2 + (c - c0) ** 2 <= (
            radius - 1.5
        ) ** 2, f"circular field (radius {radius:.0f} px)"
    row_any = exposed.mean(1) > 0.05
    col_any = exposed.mean(0) > 0.05
    r_lo, r_hi = np.argmax(row_any), rows - np.argmax(row_any[::-1])
    c_lo, c_hi = np.argmax(col_any), cols - np.argmax(col_any[::-1])
    box = np.zeros_like(exposed)
    box[r_lo:r_hi, c_lo:c_hi] = True
    if (box & exposed).sum() / (box | exposed).sum() >= 0.95:
        return box & exposed, f"rectangle rows {r_lo}–{r_hi - 1}, columns {c_lo}–{c_hi - 1}"
    return None


def _exposure_mask(ds, px: _Pixels, spacing, warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Exposed-pixel mask and the region that the collimator/shutter tags exclude (None if none)."""
    _, rows, cols = px.frames.shape
    aspect = spacing[0] / spacing[1]
    mask = np.ones((rows, cols), bool)
    tagged = np.ones((rows, cols), bool)
    for prefix in ("Shutter", "Collimator"):
        m = _shape_masks(ds, prefix, rows, cols, aspect, warnings)
        if m is not None:
            tagged &= m
    mask &= tagged
    fov_shape = str(_find(ds, "FieldOfViewShape") or "").strip().upper()
    if fov_shape == "ROUND":
        diameter = min(rows, cols)
        fov = _floats(_find(ds, "FieldOfViewDimensions"))
        if fov:
            diameter = min(diameter, fov[0] / spacing[1])
        r = np.arange(rows)[:, None] - (rows - 1) / 2
        c = np.arange(cols)[None, :] - (cols - 1) / 2
        mask &= c**2 + (r * aspect) ** 2 <= (diameter / 2) ** 2
    padding = _floats(ds.get("PixelPaddingValue"))
    if padding is not None:
        mask &= px.stored_first != padding[0]
    blank = _blanked_surround(px.stored_first) if px.stored_first.ndim == 2 else None
    if blank is not None:
        mask &= blank[0]
        warnings.append(f"blanked surround detected (one exact value outside a {blank[1]}); masked")
    if mask.mean() < 0.02:
        warnings.append("the exposure mask left almost nothing; it was reset to the whole image")
        mask[:] = True
    excluded = ~tagged
    return mask, (excluded if excluded.any() else None)


# ---- polarity -----------------------------------------------------------------------------------------


def _downsample(img: np.ndarray, mask: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Block means of ``img`` (≤ ``size`` pixels a side) and the blocks that are entirely exposed."""
    factor = max(1, math.ceil(max(img.shape) / size))
    if factor == 1:
        return img.astype(np.float64), mask
    rows, cols = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    shape = (rows // factor, factor, cols // factor, factor)
    small = img[:rows, :cols].astype(np.float64).reshape(shape).mean((1, 3))
    return small, mask[:rows, :cols].reshape(shape).all((1, 3))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erosion by a (2r+1)² square; outside the image counts as unexposed."""
    if radius <= 0:
        return mask
    out = np.pad(mask, radius, constant_values=False)
    for axis in (0, 1):
        acc = np.ones_like(out)
        n = out.shape[axis]
        for shift in range(-radius, radius + 1):
            rolled = np.roll(out, shift, axis)
            if shift > 0:  # no wrap-around: rolled-in pixels are outside
                rolled[(slice(None),) * axis + (slice(0, shift),)] = False
            elif shift < 0:
                rolled[(slice(None),) * axis + (slice(n + shift, n),)] = False
            acc &= rolled
        out = acc
    return out[radius:-radius, radius:-radius]


def _gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (NumPy, small kernels)."""
    rad = int(3 * sigma + 1)
    x = np.arange(-rad, rad + 1)
    g = np.exp(-(x**2) / (2 * sigma * sigma))
    g /= g.sum()
    out = img
    for axis in (0, 1):
        padded = np.pad(out, [(rad, rad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(g):
            acc += w * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
        out = acc
    return out


def _ridge_score(img: np.ndarray, mask: np.ndarray) -> float | None:
    """(dark − bright) / (dark + bright) of the strongest tubular Hessian responses; None if too little image."""
    small, m = _downsample(img, mask)
    if m.sum() < 400:
        return None
    exposed = np.sort(small[m])
    if exposed[-1] <= exposed[0]:
        return None
    # ranks among the exposed values: the score does not depend on the (unknown) monotone intensity
    # mapping, so raw, log-processed and display-processed versions of an image score alike
    t = np.searchsorted(exposed, small).astype(np.float64) / exposed.size
    scores = []
    for sigma in (1.0, 2.0, 3.0):
        g = _gauss(t, sigma)
        gyy = g[2:, 1:-1] - 2 * g[1:-1, 1:-1] + g[:-2, 1:-1]
        gxx = g[1:-1, 2:] - 2 * g[1:-1, 1:-1] + g[1:-1, :-2]
        gxy = (g[2:, 2:] - g[2:, :-2] - g[:-2, 2:] + g[:-2, :-2]) / 4
        grad = np.hypot((g[2:, 1:-1] - g[:-2, 1:-1]) / 2, (g[1:-1, 2:] - g[1:-1, :-2]) / 2)
        half_trace = (gxx + gyy) / 2
        disc = np.sqrt(((gxx - gyy) / 2) ** 2 + gxy**2)
        l1, l2 = half_trace + disc, half_trace - disc
        first = np.abs(l1) >= np.abs(l2)
        big, weak = np.where(first, l1, l2), np.where(first, l2, l1)
        inner = _erode(m, int(3 * sigma + 2))[1:-1, 1:-1]
        if inner.sum() < 100:
            continue
        strength = np.abs(big) * (1 - np.abs(weak) / (np.abs(big) + 1e-12))
        # a line, not the flank of an edge: curved across, flat along, and no slope at its centre
        tubular = inner & (np.abs(weak) < 0.5 * np.abs(big)) & (grad <= 0.3 * sigma * np.abs(big))
        threshold = np.quantile(strength[inner], 0.98)
        sel = tubular & (strength >= threshold) & (strength > 0)
        dark, bright = strength[sel & (big > 0)].sum(), strength[sel & (big < 0)].sum()
        if dark + bright > 0:
            scores.append((dark - bright) / (dark + bright))
    return float(np.mean(scores)) if scores else None


def _polarity(
    ds,
    px: _Pixels,
    ref: np.ndarray,
    mask: np.ndarray,
    excluded: np.ndarray | None,
    modality: str,
    dense: str,
    warnings: list[str],
) -> tuple[bool, list[str], str]:
    """True if dense tissue has high values in ``ref``; the evidence; a one-line reason."""
    votes: list[tuple[float, int, str]] = []  # (weight, +1 dense high / -1 dense low, description)
    sign_raw = _floats(_find(ds, "PixelIntensityRelationshipSign"))
    relationship = str(_find(ds, "PixelIntensityRelationship") or "").strip().upper()
    if sign_raw and sign_raw[0] in (1.0, -1.0):
        vote = (-1 if sign_raw[0] > 0 else 1) * int(px.value_sign)
        votes.append((3.0, vote, f"PixelIntensityRelationshipSign {sign_raw[0]:+g}"))
    elif relationship == "LIN":
        votes.append((2.0, -int(px.value_sign), "PixelIntensityRelationship LIN (values ∝ beam intensity)"))
    exposed = ref[mask]
    lo, hi = np.percentile(exposed, [1, 99]) if exposed.size else (0.0, 0.0)
    if excluded is not None and hi > lo:
        outside = ref[excluded]
        if outside.size >= 0.005 * ref.size and np.ptp(outside) > 0:
            delta = (np.median(outside) - np.median(exposed)) / (hi - lo)
            if abs(delta) >= 0.2:
                votes.append(
                    (
                        1.5,
                        1 if delta > 0 else -1,
                        f"unexposed (collimated) pixels are {'bright' if delta > 0 else 'dark'} ({delta:+.2f})",
                    )
                )
            else:
                votes.append((0.0, 0, f"unexposed pixels inconclusive ({delta:+.2f})"))
    ridge = _ridge_score(ref, mask)
    if ridge is not None:
        if modality in _RADIOGRAPHIC_MODALITIES:  # bone/lung texture: only a strong score counts, and little
            weight = 0.5 if abs(ridge) >= 0.5 else 0.0
        else:
            weight = 2.0 if abs(ridge) >= 0.4 else 1.0 if abs(ridge) >= 0.25 else 0.0
        what = f"thin tubular structures are {'dark' if ridge > 0 else 'bright'} ({ridge:+.2f})"
        votes.append((weight, -1 if ridge > 0 else 1, what))
    display_inverted = px.photometric == "MONOCHROME1"
    convention = 0
    if modality in _ANGIO_MODALITIES or modality in _RADIOGRAPHIC_MODALITIES:
        bright_dense = modality in _RADIOGRAPHIC_MODALITIES
        convention = 1 if bright_dense != display_inverted else -1
        votes.append(
            (
                0.5,
                convention,
                f"{modality} display convention (dense {'bright' if bright_dense else 'dark'}, {px.photometric})",
            )
        )
    evidence = [
        f"{'no vote' if w == 0 else 'dense high' if v > 0 else 'dense low'} [w{w:g}]: {d}"
        for w, v, d in votes
    ]
    if dense in ("high", "low"):
        return dense == "high", evidence, f"forced by the caller (dense={dense})"
    total = sum(w * v for w, v, _ in votes)
    used = [(w, v, d) for w, v, d in votes if w > 0]
    if total == 0 and convention:
        warnings.append("image polarity evidence is balanced; the modality's display convention decides")
        return convention > 0, evidence, next(d for w, v, d in votes if "display convention" in d)
    if total == 0:
        warnings.append("image polarity could not be determined; the values were taken as dense = high")
        return True, evidence, "undetermined, kept"
    result = total > 0
    against = [d for w, v, d in used if (v > 0) != result]
    if against:
        warnings.append(
            f"conflicting polarity evidence (decided dense = {'high' if result else 'low'}): "
            + "; ".join(against)
        )
    main = max((u for u in used if (u[1] > 0) == result), key=lambda u: u[0])
    return result, evidence, main[2]


# ---- main entry point --------------------------------------------------------------------------------


def read_xray(
    path,
    frame: int | str | None = None,
    mask_frame: int | None = None,
    overrides: GeometryOverrides | None = None,
    *,
    intensity: str = "auto",
    dense: str = "auto",
) -> XrayImage:
    """Read an X-ray/DSA DICOM file with its geometry (see the module docstring).

    ``frame``: None, an index, or ``"max"``/``"min"``/``"mean"`` over frames (line-integral
    domain); ``mask_frame``: a frame whose line integrals are subtracted (DSA);
    ``overrides``: values to use instead of missing or wrong header values;
    ``intensity``: ``"auto"``, ``"lin"`` (raw detector values, take −log) or ``"log"``;
    ``dense``: ``"auto"``, ``"high"`` or ``"low"`` (where dense tissue is in the file's values).
    Raises :class:`XrayDicomError` with a message naming the file and the remedy.
    """
    if intensity not in ("auto", "lin", "log"):
        raise ValueError(f"intensity must be 'auto', 'lin' or 'log', got {intensity!r}")
    if dense not in ("auto", "high", "low"):
        raise ValueError(f"dense must be 'auto', 'high' or 'low', got {dense!r}")
    path = Path(path)
    name = path.name
    overrides = overrides or GeometryOverrides()
    warnings: list[str] = []
    ds = _read_dataset(path, name)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality and modality not in _PROJECTION_MODALITIES and modality != "OT":
        raise XrayDicomError(
            f"{name}: Modality {modality} is not a projection X-ray (expected one of "
            f"{', '.join(sorted(_PROJECTION_MODALITIES))})"
        )
    if modality in ("", "OT"):
        warnings.append(f"Modality {modality or 'absent'}: treated as an X-ray projection")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows < 2 or cols < 2:
        raise XrayDicomError(f"{name}: the image is {rows}×{cols} pixels; an X-ray needs at least 2×2")

    # frame choice (validated before decoding)
    if frame is None:
        frame = 0 if n_frames == 1 else "max"
    if isinstance(frame, str):
        if frame not in _FRAME_REDUCTIONS:
            raise ValueError(f"frame must be None, an index or one of {_FRAME_REDUCTIONS}, got {frame!r}")
        frame_idx = 0
    else:
        frame_idx = _frame_index(int(frame), n_frames, name, "frame")
    if mask_frame is not None:
        mask_idx = _frame_index(int(mask_frame), n_frames, name, "mask_frame")
        if not isinstance(frame, str) and mask_idx == frame_idx:
            raise XrayDicomError(
                f"{name}: frame {frame_idx} minus mask frame {mask_idx} would be an empty image; choose another mask frame"
            )
    reducing = isinstance(frame, str)

    geo = _geometry(ds, overrides, name, modality, rows, cols, frame_idx, n_frames, reducing, warnings)
    px = _decode_pixels(ds, path, name, warnings)
    if px.frames.shape[1:] != (rows, cols) or px.frames.shape[0] != n_frames:
        raise XrayDicomError(
            f"{name}: decoded pixel data {px.frames.shape} do not match {n_frames} frames of {rows}×{cols}"
        )

    mask, excluded = _exposure_mask(ds, px, geo.spacing, warnings)
    picks = np.unique(np.linspace(0, n_frames - 1, min(n_frames, 16)).round().astype(int))
    ref = px.frames[picks].mean(0) if len(picks) > 1 else px.frames[0]
    dense_high, evidence, reason = _polarity(ds, px, ref, mask, excluded, modality, dense, warnings)

    # raw (exponential) or log-like?
    relationship = str(_find(ds, "PixelIntensityRelationship") or "").strip().upper()
    exposed = ref[mask]
    p_lo, p_hi = np.percentile(exposed, [0.5, 99.5])
    if intensity != "auto":
        exponential, why = intensity == "lin", "forced by the caller"
    elif relationship == "LIN":
        exponential, why = True, "PixelIntensityRelationship LIN"
    elif relationship:
        exponential, why = False, f"PixelIntensityRelationship {relationship}"
    else:
        exponential = (
            (not dense_high) and exposed.min() > 0 and p_hi / max(p_lo, 1e-12) >= 20 and px.bits_stored >= 12
        )
        why = (
            f"no PixelIntensityRelationship; bright = transparent, {px.bits_stored}-bit, exposed range ×{p_hi / max(p_lo, 1e-12):.0f}"
            if exponential
            else "no PixelIntensityRelationship; values look log-processed"
        )
    if exponential and dense_high:
        warnings.append(
            "raw (exponential) conversion needs bright = transparent values, but dense tissue is bright; converted linearly"
        )
        exponential = False
    if exponential:
        i0 = float(p_hi)
        eps = max(i0 * 1e-6, 1e-12)

        def convert(x: np.ndarray) -> np.ndarray:
            clipped = np.maximum(x, eps)
            return (np.float32(math.log(i0)) - np.log(clipped)).astype(np.float32)

    else:
        reference = np.float32(p_lo if dense_high else p_hi)
        sign = np.float32(1.0 if dense_high else -1.0)

        def convert(x: np.ndarray) -> np.ndarray:
            return ((x - reference) * sign).astype(np.float32)

    # display version of the stored values (MONOCHROME1 inverted)
    if px.photometric == "MONOCHROME1":
        flip = np.float32(px.frames.max() + px.frames.min())

        def display(x: np.ndarray) -> np.ndarray:
            return (flip - x).astype(np.float32)
    else:

        def display(x: np.ndarray) -> np.ndarray:
            return np.asarray(x, dtype=np.float32)

    if reducing and n_frames > 1:
        # one frame at a time (long runs), keeping the stored value of the chosen frame for ``raw``
        pixels, stored = convert(px.frames[0]), px.frames[0].copy()
        for k in range(1, n_frames):
            lines = convert(px.frames[k])
            if frame == "mean":
                pixels += lines
                stored += px.frames[k]
            else:
                better = lines > pixels if frame == "max" else lines < pixels
                pixels = np.where(better, lines, pixels)
                stored = np.where(better, px.frames[k], stored)
        if frame == "mean":
            pixels, stored = pixels / n_frames, stored / n_frames
        raw = display(stored)
        what = {"max": "maximum", "min": "minimum", "mean": "mean"}[frame]
        info = f"{what} over {n_frames} frames (line-integral domain)"
    else:
        index = 0 if reducing else frame_idx
        pixels, raw = convert(px.frames[index]), display(px.frames[index])
        info = f"frame {index} of {n_frames}" if n_frames > 1 else "single frame"
    if mask_frame is not None:
        pixels = pixels - convert(px.frames[mask_idx])
        info += f" minus mask frame {mask_idx} (DSA, subtracted in the log domain)"

    polarity = (
        f"{px.photometric}; dense = {'high' if dense_high else 'low'} in the file ({reason}) → "
        f"{'kept' if dense_high else 'inverted'}; "
        + (f"raw intensities → −log ({why})" if exponential else f"log-like → linear ({why})")
    )

    detector = Detector(
        sdd=geo.sdd,
        rows=rows,
        cols=cols,
        row_spacing=geo.spacing[0],
        col_spacing=geo.spacing[1],
        principal_offset=geo.principal_offset,
        mirrored=True,
    )
    _check_orientation(geo, warnings)
    return XrayImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        raw=np.ascontiguousarray(raw, dtype=np.float32),
        detector=detector,
        mask=mask,
        sod=geo.sod,
        primary_angle=geo.primary,
        secondary_angle=geo.secondary,
        patient_position=geo.patient_position,
        polarity=polarity,
        source=str(path),
        frame_info=info,
        warnings=warnings,
        modality=modality,
        sop_class=sop_class,
        number_of_frames=n_frames,
        patient_orientation=geo.patient_orientation,
        intensity="exponential" if exponential else "log",
        dense_high_in_file=dense_high,
        polarity_evidence=evidence,
        geometry_sources=geo.sources,
    )


def _frame_index(index: int, n_frames: int, name: str, what: str) -> int:
    if not -n_frames <= index < n_frames:
        raise XrayDicomError(
            f"{name}: {what} {index} requested but the file has {n_frames} frame(s) (0–{n_frames - 1})"
        )
    return index % n_frames


def _check_orientation(geo: _Geometry, warnings: list[str]) -> None:
    """Compare Patient Orientation with the heads-up orientation the angles imply."""
    if geo.patient_orientation is None or geo.primary is None:
        return
    pose = pose_from_positioner(geo.primary, geo.secondary, geo.sod or 1.0, None, "HFS")
    expected = patient_orientation(pose, mirrored=True)
    opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
    col, row = (v[:1] for v in geo.patient_orientation)
    given = "\\".join(geo.patient_orientation)
    implied = "\\".join(expected)
    if col and col == opposite.get(expected[0][:1]):
        warnings.append(
            f"PatientOrientation {given} runs the columns opposite to the heads-up orientation of these angles "
            f"({implied}): the image may be mirrored left-right"
        )
    if row and row == opposite.get(expected[1][:1]):
        warnings.append(
            f"PatientOrientation {given} runs the rows opposite to the heads-up orientation of these angles "
            f"({implied}): the image may be upside down"
        )
