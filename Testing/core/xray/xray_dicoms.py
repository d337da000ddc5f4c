"""Synthetic X-ray DICOMs for the reader's tests: a phantom's line integrals, raw or log-processed values,
a minimal uncompressed DICOM writer with XA geometry and shutter tags.

Importable from the tests beside it (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import generate_uid

__all__ = [
    "CR_SOP",
    "DX_SOP",
    "SC_SOP",
    "SHUTTER",
    "XA_GEOMETRY",
    "XA_SOP",
    "H",
    "W",
    "corr",
    "exposed_box",
    "log_values",
    "phantom",
    "raw_counts",
    "slope",
    "thin_vessels",
    "write_dicom",
    "xa",
]

XA_SOP = "1.2.840.10008.5.1.4.1.1.12.1"
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"
SC_SOP = "1.2.840.10008.5.1.4.1.1.7"
H, W = 120, 144
XA_GEOMETRY = {
    "ImagerPixelSpacing": ["0.3", "0.3"],
    "DistanceSourceToDetector": "1000",
    "DistanceSourceToPatient": "750",
    "PositionerPrimaryAngle": "30",
    "PositionerSecondaryAngle": "-10",
    "PatientPosition": "HFS",
}
SHUTTER = {  # 1-based: rows 9..112, columns 11..134 exposed
    "ShutterShape": "RECTANGULAR",
    "ShutterLeftVerticalEdge": "11",
    "ShutterRightVerticalEdge": "134",
    "ShutterUpperHorizontalEdge": "9",
    "ShutterLowerHorizontalEdge": "112",
}


def exposed_box() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[8:112, 10:134] = True
    return m


def thin_vessels(shift: float = 0.0) -> np.ndarray:
    """Three thin contrast-filled 'vessels' (line integral ≈ 1.2 on the centre line)."""
    r, c = np.mgrid[:H, :W].astype(float)
    out = np.zeros((H, W))
    for k, (row0, amp, freq) in enumerate([(40.0, 8.0, 0.07), (70.0, 10.0, 0.05), (90.0, 6.0, 0.09)]):
        centre = row0 + shift + amp * np.sin(freq * c + k)
        out = np.maximum(out, np.clip(1.6 - np.abs(r - centre), 0, 1))
    vertical = np.clip(1.6 - np.abs(c - (60 + 8 * np.sin(0.08 * r))), 0, 1)
    return 1.2 * np.maximum(out, vertical)


def phantom(vessels: bool = True) -> np.ndarray:
    """Line integrals: an elliptical body (air around it), a bone disc and thin vessels."""
    r, c = np.mgrid[:H, :W].astype(float)
    body = 2.0 * np.sqrt(np.clip(1 - ((r - 60) / 48) ** 2 - ((c - 72) / 56) ** 2, 0, None))
    bone = 0.8 * np.sqrt(np.clip(1 - ((r - 66) ** 2 + (c - 50) ** 2) / 12**2, 0, None))
    line = body + bone
    return line + thin_vessels() * (body > 0) if vessels else line


def raw_counts(line: np.ndarray, seed: int = 0, i0: float = 12000.0) -> np.ndarray:
    """Raw detector values ∝ exp(−line); ~no signal behind the collimator."""
    rng = np.random.default_rng(seed)
    img = i0 * np.exp(-line)
    img = img + rng.normal(0, 1, img.shape) * np.sqrt(img) * 0.3
    img[~exposed_box()] = 30.0 + rng.normal(0, 3, (~exposed_box()).sum())
    return np.clip(img, 1, 16383)


def log_values(line: np.ndarray, dense_high: bool, seed: int = 0, collimated: bool = True) -> np.ndarray:
    """Log-processed values (affine in the line integral); collimated pixels look maximally dense."""
    rng = np.random.default_rng(seed)
    unexposed = line.max() + 1.5
    full = np.where(exposed_box() | (not collimated), line, unexposed) + rng.normal(0, 0.01, line.shape)
    return 200.0 + 300.0 * full if dense_high else 1800.0 - 300.0 * full


def write_dicom(
    path: Path, frames, *, modality="XA", sop=XA_SOP, photometric="MONOCHROME2", bits_stored=16, **tags
) -> Path:
    """A minimal uncompressed DICOM image; ``tags`` set (or, with value None, omit) attributes."""
    arr = np.asarray(frames)
    multi = arr.ndim == 3
    arr = arr if multi else arr[None]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = arr.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if multi:
        ds.NumberOfFrames = arr.shape[0]
    ds.PixelData = np.round(arr).astype(np.uint16).tobytes()
    for key, value in tags.items():
        if value is not None:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def xa(path, frames, **tags) -> Path:
    return write_dicom(path, frames, **{**XA_GEOMETRY, **SHUTTER, **tags})


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x.ravel(), y.ravel(), 1)[0])
