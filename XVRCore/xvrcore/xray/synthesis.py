"""Realistic synthetic X-ray DICOMs from a CT at a known pose (for the accuracy harness, tests, demo).

Image formation: exact line integrals (Siddon at full CT resolution, several rays per pixel)
→ photon counts ``N0 · gain(u, v) · exp(−L)`` with a smooth gain field (heel effect, detector
gain) → Poisson noise → detector blur → a 12-bit raw image (or its log-processed form), with
rectangular collimation whose blades block the beam. The DICOM carries the C-arm geometry a real
XA file carries (ImagerPixelSpacing, SID, SOD, positioner angles about an isocentre, shutters),
and nothing about a patient.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .. import __version__
from ..drr import DRRVolume, render
from ..geometry.camera import Detector, pixel_grid
from ..geometry.positioner import positioner_from_pose
from ..io.atomic import atomic_write

__all__ = ["XA_IMAGE_STORAGE", "SynthesisSettings", "SyntheticXray", "synthesize_xray", "write_xray_dicom"]

XA_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.12.1"
_MAX_STORED = 4095  # 12-bit detector


@dataclass(frozen=True)
class SynthesisSettings:
    """How the synthetic detector image is formed (noise, blur, gain, collimation) and stored."""

    photons: float = 20000.0  # unattenuated photons per pixel (sets the noise)
    blur_sigma_px: float = 0.7  # detector point spread (Gaussian sigma, pixels)
    gain_variation: float = 0.1  # peak-to-peak fraction of a smooth multiplicative gain field
    collimation: float = 0.08  # each blade covers up to this fraction of the image side
    subpixel: int = 2  # rays per pixel side (exact Siddon)
    store: str = "raw"  # "raw" counts (PixelIntensityRelationship LIN) or "log" (dense = high)


@dataclass
class SyntheticXray:
    """A synthetic detector image: what the DICOM stores, the truth behind it and the exposed region."""

    stored: np.ndarray  # uint16 (H, W), as written to the DICOM
    line_integral: np.ndarray  # float32 (H, W), noise-free truth
    mask: np.ndarray  # bool (H, W), exposed pixels
    shutter: tuple[int, int, int, int]  # left, right, upper, lower edges (0-based, inclusive)


def _line_integrals(
    volume: DRRVolume, camera_to_world: torch.Tensor | np.ndarray, detector: Detector, subpixel: int
) -> np.ndarray:
    """Exact (Siddon) line integrals (H, W), the mean of ``subpixel``² rays per pixel."""
    k = detector.intrinsics()
    offsets = (torch.arange(subpixel, dtype=torch.float64) + 0.5) / subpixel - 0.5
    sub = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1)
    pixels = (pixel_grid(detector.rows, detector.cols, dtype=torch.float64)[:, :, None, None] + sub).reshape(
        -1, 2
    )
    with torch.no_grad():
        pose = torch.as_tensor(camera_to_world, dtype=torch.float64).to(volume.dtype)
        values = render(volume, pose, k, pixels, method="siddon", level=0)
    return values.reshape(detector.rows, detector.cols, subpixel * subpixel).mean(-1).double().numpy()


def _gain_field(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (low-order polynomial) with the given peak-to-peak amplitude."""
    v, u = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    field = sum(rng.normal() * term for term in (u, v, u * v, u * u - 1 / 3, v * v - 1 / 3))
    span = np.ptp(field)
    return 1.0 + (amplitude * (field - field.mean()) / span if span > 0 else 0.0)


def _collimation(
    shape: tuple[int, int], fraction: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Random blade positions: left, right, upper, lower edges (0-based, inclusive) of the exposed box."""
    h, w = shape
    cuts = rng.uniform(0, fraction, 4)
    left, right = int(cuts[0] * w), w - 1 - int(cuts[1] * w)
    upper, lower = int(cuts[2] * h), h - 1 - int(cuts[3] * h)
    return left, right, upper, lower


def _stored_values(counts: np.ndarray, settings: SynthesisSettings) -> np.ndarray:
    """Photon counts (H, W) as 12-bit values: raw (∝ counts) or log-processed (dense = high)."""
    if settings.store == "raw":
        stored = counts / settings.photons * (_MAX_STORED / 1.2)  # unattenuated ≈ 83 % of full scale
    elif settings.store == "log":
        log = np.log(settings.photons) - np.log(counts)
        stored = log / max(float(log.max()), 1e-6) * _MAX_STORED
    else:
        raise ValueError(f"store must be 'raw' or 'log', got {settings.store!r}")
    return np.clip(np.round(stored), 0, _MAX_STORED).astype(np.uint16)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    radius = int(np.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = torch.as_tensor(image, dtype=torch.float64)[None, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1))
    return x[0, 0].numpy()


def synthesize_xray(
    volume: DRRVolume,
    camera_to_world: torch.Tensor | np.ndarray,
    detector: Detector,
    settings: SynthesisSettings = SynthesisSettings(),
    rng: np.random.Generator | None = None,
) -> SyntheticXray:
    """Simulate a detector image of ``volume`` (attenuation, 1/mm) at ``camera_to_world`` (4, 4).

    The pose and the detector follow :mod:`xvrcore.conventions`; the image is ``detector.rows`` ×
    ``detector.cols``.
    """
    rng = rng or np.random.default_rng()
    truth = _line_integrals(volume, camera_to_world, detector, max(1, settings.subpixel))
    h, w = truth.shape
    left, right, upper, lower = _collimation((h, w), settings.collimation, rng)
    mask = np.zeros((h, w), dtype=bool)
    mask[upper : lower + 1, left : right + 1] = True
    attenuation = np.where(mask, truth, truth.max() + 4.0)  # the blades absorb almost everything
    expected = settings.photons * _gain_field((h, w), settings.gain_variation, rng) * np.exp(-attenuation)
    counts = _blur(rng.poisson(expected).astype(np.float64), settings.blur_sigma_px)
    counts = np.clip(counts, 0.5, None)
    stored = _stored_values(counts, settings)
    return SyntheticXray(stored, truth.astype(np.float32), mask, (left, right, upper, lower))


def write_xray_dicom(
    path: str | Path,
    xray: SyntheticXray,
    detector: Detector,
    camera_to_world: torch.Tensor | np.ndarray,
    isocenter: torch.Tensor | np.ndarray | Sequence[float],
    *,
    store: str = "raw",
    patient_position: str = "HFS",
) -> Path:
    """Write an XA DICOM whose header describes the C-arm about ``isocenter`` (nominal angles, SOD).

    The header cannot express an in-plane roll or an isocentre off the central ray, exactly as a
    real C-arm's cannot; the pose it implies is the nominal one.
    """
    angles = positioner_from_pose(camera_to_world, isocenter, patient_position)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XA_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = XA_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "XA"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer = "xvrcore synthetic"
    ds.SoftwareVersions = f"xvrcore {__version__}"
    ds.ImageType = ["DERIVED", "SECONDARY", "SINGLE PLANE"]
    ds.PatientPosition = patient_position
    ds.Rows, ds.Columns = detector.rows, detector.cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship = "LIN" if store == "raw" else "LOG"
    # +1: lower values = less beam intensity (raw counts); -1: higher values = less intensity.
    ds.PixelIntensityRelationshipSign = 1 if store == "raw" else -1
    ds.ImagerPixelSpacing = [float(detector.row_spacing), float(detector.col_spacing)]
    ds.DistanceSourceToDetector = float(detector.sdd)
    ds.DistanceSourceToPatient = round(float(angles.sod), 2)
    ds.PositionerPrimaryAngle = round(float(angles.primary), 2)
    ds.PositionerSecondaryAngle = round(float(angles.secondary), 2)
    ds.ShutterShape = "RECTANGULAR"
    left, right, upper, lower = xray.shutter
    ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = left + 1, right + 1  # DICOM: 1-based
    ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = upper + 1, lower + 1
    ds.PixelData = np.ascontiguousarray(xray.stored).astype("<u2").tobytes()
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
