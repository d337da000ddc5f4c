"""Decoding the pixel data of a DICOM X-ray, and choosing or combining its frames.

**Decoding.** The sizes the header declares are first checked against the bytes
(:mod:`xvrcore.xray.pixel_layout`). Compressed transfer syntaxes are decoded by pydicom's plugins
(``python-gdcm`` for JPEG, JPEG-LS, JPEG 2000 and RLE; or ``pylibjpeg`` with
``pylibjpeg-libjpeg``/``-openjpeg``; Pillow covers JPEG baseline and JPEG 2000); a plugin that fails
means damaged data (an error saying so). Only when pydicom has no working decoder for the transfer
syntax is SimpleITK (GDCM) tried, which rescales and turns MONOCHROME1 into MONOCHROME2 itself (both
handled: such reversed values, like those of a negative ``RescaleSlope``, are recorded in
:attr:`DecodedPixels.value_sign`); if it fails too, the error names the transfer syntax and the
packages to install. Otherwise the modality LUT is applied here: ``ModalityLUTSequence
(0028,3000)``, else ``RescaleSlope (0028,1053)`` / ``RescaleIntercept (0028,1052)`` of each frame
(a slope of 0 is ignored). Colour images are converted to grey (luminance); PALETTE COLOR is refused.

**Frames.** ``frame=None`` is the only frame, or for multi-frame files ``"max"`` — the per-pixel
maximum of the line-integral frames (maximum opacification); ``"min"`` and ``"mean"`` likewise;
an int selects one frame (0-based, negative from the end). ``mask_frame`` subtracts that frame's
line integrals (DSA: subtraction in the log domain). Reductions of a DYNAMIC (rotational) run
are warned about (:mod:`xvrcore.xray.angles`); its angles are those of the selected frame
(frame 0 for reductions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from .pixel_layout import PixelLayout, check_pixel_layout, transfer_syntax
from .tags import XrayDicomError, as_floats, header_value

__all__ = [
    "FRAME_REDUCTIONS",
    "DecodedPixels",
    "FrameChoice",
    "FrameMap",
    "choose_frames",
    "combine_frames",
    "decode_pixels",
    "display_map",
]

FRAME_REDUCTIONS = ("max", "min", "mean")

#: One array of stored values → another (float32), applied frame by frame.
FrameMap = Callable[[np.ndarray], np.ndarray]


@dataclass
class DecodedPixels:
    """All frames of a file as numbers that can be compared (after the modality LUT)."""

    frames: np.ndarray  # float32 (F, H, W) after the modality LUT
    photometric: str  # the effective photometric interpretation of ``frames``
    value_sign: float  # +1 if frames increase with the stored values, -1 if reversed
    bits_stored: int
    stored_first: np.ndarray  # frame 0 as decoded, before rescaling (for padding/blank detection)


# ---- decoding -----------------------------------------------------------------------------------------


def _decoder_available(ts: UID | None) -> bool:
    """Whether pydicom has a working decoder for the transfer syntax (native data: always)."""
    if ts is not None and not ts.is_transfer_syntax:  # a private or unknown one
        return False
    if ts is None or not ts.is_encapsulated:
        return True
    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:  # no decoder exists for it (MPEG, private syntaxes)
        return False


def _pydicom_pixels(ds: Dataset) -> np.ndarray:
    """The stored values as pydicom's decoder plugins decode them."""
    return ds.pixel_array


def _sitk_pixels(path: Path) -> np.ndarray:
    """The values as SimpleITK/GDCM decodes them: rescaled, MONOCHROME1 shown as MONOCHROME2."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _to_grey(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def _syntax_name(ts: UID | None) -> str:
    if not ts:
        return "unknown transfer syntax"
    return f"{ts.name} ({ts})" if ts.name != str(ts) else f"{ts} (private or unknown)"


def _reason(exc: Exception) -> str:
    """The decoder's words on one line (pydicom lists one line per plugin)."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _decode_with_pydicom(ds: Dataset, name: str, ts: UID | None) -> np.ndarray:
    """pydicom's decoding, whose failure means damaged data: a decoder for the transfer syntax is there."""
    try:
        return np.asarray(_pydicom_pixels(ds))
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many kinds; each means the data are damaged
        raise XrayDicomError(
            f"{name}: the pixel data cannot be decoded (corrupt or truncated {_syntax_name(ts)} data: "
            f"{_reason(exc)})"
        ) from None


def _sitk_fallback(path: Path, name: str, ts: UID | None, warnings: list[str]) -> np.ndarray:
    """The pixels as SimpleITK/GDCM decodes them (already rescaled), when pydicom has no decoder."""
    try:
        arr = np.asarray(_sitk_pixels(path))
    except RuntimeError:
        raise XrayDicomError(
            f"{name}: cannot decode the pixel data, transfer syntax {_syntax_name(ts)}: pydicom has no working "
            "decoder for it and SimpleITK could not read it either. Install a decoder for this "
            "transfer syntax: `pip install python-gdcm` (JPEG, JPEG-LS, JPEG 2000, RLE) or "
            "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`"
        ) from None
    warnings.append(
        f"pixel data ({ts.name if ts else 'unknown transfer syntax'}) decoded by SimpleITK/GDCM because "
        "pydicom has no working decoder for it; GDCM applied the rescale and shows MONOCHROME1 as MONOCHROME2"
    )
    return arr


def decode_pixels(
    ds: Dataset, path: Path, name: str, warnings: list[str], layout: PixelLayout | None = None
) -> DecodedPixels:
    """All frames, float32 ``(F, H, W)``, after the modality LUT (see the module docstring).

    ``layout``: the header's sizes as :func:`~xvrcore.xray.pixel_layout.check_pixel_layout` checked
    them (checked here when not given).
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        raise XrayDicomError(f"{name}: PALETTE COLOR images are not X-ray projections this reader can use")
    layout = layout or check_pixel_layout(ds, name)
    ts = transfer_syntax(ds)
    value_sign = 1.0
    rescaled = not _decoder_available(ts)
    if rescaled:
        arr = _sitk_fallback(path, name, ts, warnings)
        if layout.samples == 1 and arr.ndim == 3 and layout.frames == 1 and arr.shape[0] == 1:
            arr = arr[0]
        if photometric == "MONOCHROME1":
            photometric, value_sign = "MONOCHROME2", -1.0
    else:
        arr = _decode_with_pydicom(ds, name, ts)
    if layout.samples > 1:
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
    return DecodedPixels(frames, photometric, value_sign, layout.bits_stored, stored_first)


def _apply_modality_lut(
    ds: Dataset, arr: np.ndarray, frames: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, float]:
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        warnings.append("Modality LUT Sequence applied")
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32), 1.0
    slopes = []
    for f in range(frames.shape[0]):
        slope = as_floats(header_value(ds, "RescaleSlope", f)) or [1.0]
        intercept = as_floats(header_value(ds, "RescaleIntercept", f)) or [0.0]
        if slope[0] == 0:
            warnings.append("RescaleSlope is 0; ignored")
            slope = [1.0]
        if slope[0] != 1.0 or intercept[0] != 0.0:
            frames[f] = frames[f] * np.float32(slope[0]) + np.float32(intercept[0])
        slopes.append(slope[0])
    return frames, -1.0 if slopes and slopes[0] < 0 else 1.0


def display_map(px: DecodedPixels) -> FrameMap:
    """Stored values → the display image (high = displayed bright): MONOCHROME1 is inverted."""
    if px.photometric == "MONOCHROME1":
        flip = np.float32(px.frames.max() + px.frames.min())

        def display(x: np.ndarray) -> np.ndarray:
            return (flip - x).astype(np.float32)

        return display

    def as_is(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    return as_is


# ---- frames -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameChoice:
    """Which frame(s) make the image: ``reduction`` (one of :data:`FRAME_REDUCTIONS`) or ``index``."""

    n_frames: int
    index: int  # the selected frame; 0 for a reduction (whose geometry is that of frame 0)
    reduction: str | None = None
    mask_index: int | None = None  # the DSA mask frame, subtracted in the line-integral domain

    @property
    def reducing(self) -> bool:
        return self.reduction is not None


def _frame_index(index: int, n_frames: int, name: str, what: str) -> int:
    if not -n_frames <= index < n_frames:
        raise XrayDicomError(
            f"{name}: {what} {index} requested but the file has {n_frames} frame(s) (0–{n_frames - 1})"
        )
    return index % n_frames


def choose_frames(frame: int | str | None, mask_frame: int | None, n_frames: int, name: str) -> FrameChoice:
    """Validate ``frame``/``mask_frame`` of :func:`~xvrcore.xray.read_xray` (before decoding)."""
    if frame is None:
        frame = 0 if n_frames == 1 else "max"
    if isinstance(frame, str):
        if frame not in FRAME_REDUCTIONS:
            raise ValueError(f"frame must be None, an index or one of {FRAME_REDUCTIONS}, got {frame!r}")
        index, reduction = 0, frame
    else:
        index, reduction = _frame_index(int(frame), n_frames, name, "frame"), None
    mask_index = None
    if mask_frame is not None:
        mask_index = _frame_index(int(mask_frame), n_frames, name, "mask_frame")
        if reduction is None and mask_index == index:
            raise XrayDicomError(
                f"{name}: frame {index} minus mask frame {mask_index} would be an empty image; choose another mask frame"
            )
    return FrameChoice(n_frames, index, reduction, mask_index)


def _reduce(frames: np.ndarray, reduction: str, convert: FrameMap) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel max/min/mean of the converted frames, and the stored values of the frames chosen."""
    # one frame at a time (long runs), keeping the stored value of the chosen frame for ``raw``
    n_frames = frames.shape[0]
    pixels, stored = convert(frames[0]), frames[0].copy()
    for k in range(1, n_frames):
        lines = convert(frames[k])
        if reduction == "mean":
            pixels += lines
            stored += frames[k]
        else:
            better = lines > pixels if reduction == "max" else lines < pixels
            pixels = np.where(better, lines, pixels)
            stored = np.where(better, frames[k], stored)
    if reduction == "mean":
        pixels, stored = pixels / n_frames, stored / n_frames
    return pixels, stored


def combine_frames(
    frames: np.ndarray, choice: FrameChoice, convert: FrameMap, display: FrameMap
) -> tuple[np.ndarray, np.ndarray, str]:
    """The image ``convert`` makes of the chosen frame(s) ``(H, W)``, its ``display`` version, and a description."""
    n_frames = choice.n_frames
    if choice.reducing and n_frames > 1:
        pixels, stored = _reduce(frames, choice.reduction, convert)
        raw = display(stored)
        what = {"max": "maximum", "min": "minimum", "mean": "mean"}[choice.reduction]
        info = f"{what} over {n_frames} frames (line-integral domain)"
    else:
        pixels, raw = convert(frames[choice.index]), display(frames[choice.index])
        info = f"frame {choice.index} of {n_frames}" if n_frames > 1 else "single frame"
    if choice.mask_index is not None:
        pixels = pixels - convert(frames[choice.mask_index])
        info += f" minus mask frame {choice.mask_index} (DSA, subtracted in the log domain)"
    return pixels, raw, info
