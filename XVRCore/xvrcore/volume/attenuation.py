"""Intensity to linear X-ray attenuation (1/mm), for CT (HU) and MRA volumes.

Every conversion accepts a numpy array or a torch tensor and returns the same type; the torch
path is differentiable and never modifies its input, so it can sit inside a training or
optimisation graph (e.g. with a randomized ``bone_multiplier`` as contrast augmentation).
"""

from __future__ import annotations

import numpy as np
import torch

from .grid import Volume, VolumeError

__all__ = [
    "ATTENUATION_MODES",
    "BONE_THRESHOLD_HU",
    "MRA_HIGH_PERCENTILE",
    "MRA_LOW_PERCENTILE",
    "MU_CONTRAST_PER_MM",
    "MU_WATER_PER_MM",
    "hu_to_attenuation",
    "mra_to_attenuation",
    "mra_window",
    "to_attenuation",
]

# Water at 60 keV, roughly the effective energy of a filtered 100-120 kVp diagnostic beam:
# mass attenuation 0.2059 cm^2/g (NIST XCOM / Hubbell & Seltzer tables) x 1 g/cm^3
# = 0.2059 /cm = 0.02059 /mm.
MU_WATER_PER_MM = 0.02059

# Unenhanced soft tissue, blood and fat stay below ~100 HU, cancellous bone starts at a few
# hundred HU and cortical bone exceeds 1000 HU. 350 HU leaves margin above soft tissue, so the
# bone multiplier changes bone contrast without touching soft tissue.
BONE_THRESHOLD_HU = 350.0

# Blood mixed with iodinated contrast during a selective intra-arterial injection: taken as
# about 1000 HU above water (roughly 35 mgI/ml at ~28 HU per mgI/ml and 120 kVp), i.e. twice
# water's attenuation.
MU_CONTRAST_PER_MM = 2.0 * MU_WATER_PER_MM

# Default MRA ramp, as percentiles of the non-zero voxels: vessels fill only a few percent of a
# TOF or contrast-enhanced MRA field of view, so the ramp starts at the 97.5th percentile and
# reaches full contrast at the 99.5th; everything darker (brain, muscle, most fat) is 0.
MRA_LOW_PERCENTILE = 97.5
MRA_HIGH_PERCENTILE = 99.5
_PERCENTILE_SAMPLE = 2_000_000  # enough for stable percentiles, fast on any volume size

ATTENUATION_MODES = ("ct", "mra", "attenuation")


def _any_negative(x) -> bool:
    if torch.is_tensor(x):
        return bool((x.detach() < 0).any())
    return bool(np.any(np.asarray(x) < 0))


def _float_tensor(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.float32)


def hu_to_attenuation(
    hu,
    bone_multiplier=1.0,
    bone_threshold_hu: float = BONE_THRESHOLD_HU,
    mu_water: float = MU_WATER_PER_MM,
):
    """Linear attenuation (1/mm) of CT numbers with a water/bone model.

    mu = mu_water * (1 + HU/1000) up to ``bone_threshold_hu`` (T); above it the excess HU is
    scaled by ``bone_multiplier`` (m), continuous at the threshold:

        mu = mu_water * (1 + clip(HU, -1000, T) / 1000 + m * max(HU - T, 0) / 1000)

    Air and anything below -1000 HU (e.g. -3024 padding outside the reconstruction circle)
    is 0, so mu is never negative.
    ``bone_multiplier`` may be a tensor that broadcasts against ``hu`` (one value per sample).
    """
    if mu_water <= 0:
        raise ValueError(f"mu_water must be positive, got {mu_water}")
    if _any_negative(bone_multiplier):
        raise ValueError(f"bone_multiplier must not be negative, got {bone_multiplier}")
    if torch.is_tensor(hu):
        x = _float_tensor(hu)
        tissue = x.clamp(-1000.0, bone_threshold_hu)
        bone_excess = (x - bone_threshold_hu).clamp(min=0.0)
        return mu_water * (1.0 + tissue / 1000.0 + bone_multiplier * bone_excess / 1000.0)
    return _hu_to_attenuation_numpy(np.asarray(hu), bone_multiplier, bone_threshold_hu, mu_water)


def _hu_to_attenuation_numpy(
    hu: np.ndarray, bone_multiplier, threshold: float, mu_water: float
) -> np.ndarray:
    """Same formula as the torch path, with in-place steps on our own temporaries (CTs are large)."""
    mu = np.clip(hu, -1000.0, threshold, dtype=np.float32)
    mu += np.float32(1000.0)
    excess = np.subtract(hu, threshold, dtype=np.float32)
    np.maximum(excess, 0.0, out=excess)
    multiplier = np.asarray(bone_multiplier, dtype=np.float32)
    if multiplier.ndim == 0:
        excess *= multiplier
        mu += excess
    else:
        mu = mu + multiplier * excess  # broadcasting may grow the shape, so not in place
    mu *= np.float32(mu_water / 1000.0)
    return mu


def mra_window(intensity) -> tuple[float, float]:
    """Default (low, high) of the MRA ramp: percentiles of the non-zero voxels (see constants above)."""
    if torch.is_tensor(intensity):
        values = intensity.detach().reshape(-1)
        values = values[values != 0].to(torch.float64)
        if values.numel() == 0:
            raise ValueError("MRA volume has no non-zero voxels; cannot choose a vessel window")
        step = max(1, values.numel() // _PERCENTILE_SAMPLE)
        q = torch.tensor([MRA_LOW_PERCENTILE, MRA_HIGH_PERCENTILE], dtype=torch.float64) / 100.0
        low, high = torch.quantile(values[::step], q.to(values.device)).tolist()
    else:
        values = np.asarray(intensity).ravel()
        values = values[values != 0]
        if values.size == 0:
            raise ValueError("MRA volume has no non-zero voxels; cannot choose a vessel window")
        step = max(1, values.size // _PERCENTILE_SAMPLE)
        low, high = np.percentile(values[::step], [MRA_LOW_PERCENTILE, MRA_HIGH_PERCENTILE]).tolist()
    return float(low), float(high)


def mra_to_attenuation(
    intensity,
    vessel_mask=None,
    low: float | None = None,
    high: float | None = None,
    mu_contrast: float = MU_CONTRAST_PER_MM,
):
    """Attenuation of an MRA in which bright vessels act as contrast-filled attenuators.

    The result models a subtracted (DSA-like) image: background tissue is 0.

    * Without ``vessel_mask``: mu = mu_contrast * clip((I - low) / (high - low), 0, 1); ``low``
      and ``high`` default to :func:`mra_window` (97.5th/99.5th percentiles of non-zero voxels).
    * With ``vessel_mask`` (bool, same shape): mu = mu_contrast inside, 0 outside. The mask is
      taken as the authority on what is vessel, so intensity is not used (a ramp would thin
      small or slow-flow vessels whose MRA signal is weaker).
    """
    if mu_contrast <= 0:
        raise ValueError(f"mu_contrast must be positive, got {mu_contrast}")
    is_torch = torch.is_tensor(intensity)
    if vessel_mask is not None:
        return _mask_attenuation(intensity, vessel_mask, mu_contrast)
    if low is None or high is None:
        default_low, default_high = mra_window(intensity)
        low = default_low if low is None else low
        high = default_high if high is None else high
    if not high > low:
        raise ValueError(f"MRA window must have high > low, got low={low}, high={high}")
    if is_torch:
        return mu_contrast * ((_float_tensor(intensity) - low) / (high - low)).clamp(0.0, 1.0)
    scaled = (np.asarray(intensity, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    ramp = np.clip(scaled, np.float32(0), np.float32(1))
    return (np.float32(mu_contrast) * ramp).astype(np.float32, copy=False)


def _mask_attenuation(intensity, vessel_mask, mu_contrast: float):
    shape = tuple(intensity.shape)
    if tuple(vessel_mask.shape) != shape:
        raise ValueError(f"vessel mask has shape {tuple(vessel_mask.shape)}, the MRA has {shape}")
    if torch.is_tensor(intensity):
        mask = torch.as_tensor(vessel_mask, device=intensity.device).to(torch.bool)
        dtype = intensity.dtype if intensity.is_floating_point() else torch.float32
        return mask.to(dtype) * mu_contrast
    return np.asarray(vessel_mask, dtype=bool).astype(np.float32) * np.float32(mu_contrast)


def to_attenuation(
    volume: Volume,
    mode: str = "ct",
    bone_multiplier: float = 1.0,
    vessel_mask: np.ndarray | Volume | None = None,
) -> Volume:
    """A float32 attenuation volume (1/mm) on the same grid.

    ``mode``: "ct" (HU, water/bone model with ``bone_multiplier``), "mra" (vessels as contrast;
    ``vessel_mask`` optional: a bool (K, J, I) array or a label volume on the same grid) or
    "attenuation" (already 1/mm, checked and copied).
    """
    if mode not in ATTENUATION_MODES:
        raise VolumeError(
            f"{volume.source}: unknown attenuation mode {mode!r}; expected one of {ATTENUATION_MODES}"
        )
    if volume.kind == "labels":
        raise VolumeError(f"{volume.source}: a label map has no attenuation; convert the CT or MRA instead")
    if vessel_mask is not None and mode != "mra":
        raise VolumeError(f"{volume.source}: a vessel mask is only used in 'mra' mode, not {mode!r}")
    if mode == "ct":
        mu = hu_to_attenuation(volume.data, bone_multiplier)
    elif mode == "mra":
        mu = mra_to_attenuation(volume.data, _vessel_mask_array(volume, vessel_mask))
    else:
        mu = np.array(volume.data, dtype=np.float32)
        if mu.min() < 0:
            raise VolumeError(
                f"{volume.source}: attenuation must not be negative, found minimum {mu.min():.6g} /mm"
            )
    return volume.with_data(mu, kind="attenuation")


def _vessel_mask_array(volume: Volume, vessel_mask: np.ndarray | Volume | None) -> np.ndarray | None:
    if vessel_mask is None:
        return None
    if isinstance(vessel_mask, Volume):
        if not vessel_mask.same_grid(volume):
            raise VolumeError(f"{vessel_mask.source}: vessel mask is not on the grid of {volume.source}")
        return vessel_mask.data != 0
    mask = np.asarray(vessel_mask)
    if mask.shape != volume.data.shape:
        raise VolumeError(
            f"{volume.source}: vessel mask has shape {mask.shape}, "
            f"the volume has {volume.data.shape} (K, J, I)"
        )
    return mask.astype(bool, copy=False)
