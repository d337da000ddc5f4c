"""The attenuation a registration or a training renders, by modality: the anatomy of a CT, or vessels only.

* CT, no vessel segmentation: the water/bone model of the HU (:func:`~xvrcore.volume.attenuation.hu_to_attenuation`);
  the DRR shows the whole anatomy, as an unsubtracted X-ray does.
* MRA: the bright vessels as contrast-filled attenuators, everything else 0
  (:func:`~xvrcore.volume.attenuation.mra_to_attenuation`, the intensity ramp); the DRR is DSA-like.
* A vessel segmentation (a label map, any non-zero label is vessel), with either modality: contrast
  inside the segmentation and 0 elsewhere, instead of the intensity model.

A vessel-only DRR is for a DSA (the mask-subtracted image); :mod:`xvrcore.registration.dsa` restricts
the similarity to where its vessels project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .attenuation import mra_to_attenuation, mra_window, to_attenuation
from .grid import Volume, VolumeError
from .modality import resolve_modality
from .readers import load_labelmap, load_volume

__all__ = ["RenderedVolume", "load_rendered_volume", "load_vessels", "modality_attenuation"]


@dataclass
class RenderedVolume:
    """A CT/MRA as read, the attenuation to render of it, and how that was chosen (JSON-ready ``record``)."""

    volume: Volume
    attenuation: Volume
    record: dict
    vessel_only: bool
    warning: str | None = None  # the modality was assumed, not read from the file


def load_rendered_volume(path: str | Path, modality: str = "auto", vessels: str | Path | None = None,
                         bone_multiplier: float = 1.0) -> RenderedVolume:
    """Read the volume at ``path``, decide its modality (:func:`~xvrcore.volume.modality.resolve_modality`) and
    convert it (with the vessel segmentation at ``vessels``, if given) as :func:`modality_attenuation` does."""
    volume = load_volume(path)
    choice = resolve_modality(modality, path, volume)
    segmentation = load_vessels(vessels, volume) if vessels else None
    attenuation, model = modality_attenuation(volume, choice.modality, segmentation, bone_multiplier)
    vessel_only = model.pop("vessel_only")
    return RenderedVolume(volume, attenuation, {**choice.to_dict(), **model}, vessel_only, choice.warning)


def load_vessels(path: str | Path, reference: Volume) -> Volume:
    """A vessel segmentation on ``reference``'s grid (resampled if needed); refused if it is empty."""
    vessels = load_labelmap(path, reference=reference)
    if not vessels.data.any():
        raise VolumeError(f"{path}: the vessel segmentation has no vessel voxel (all labels are 0)")
    return vessels


def modality_attenuation(volume: Volume, modality: str, vessels: Volume | None = None,
                         bone_multiplier: float = 1.0) -> tuple[Volume, dict]:
    """The attenuation volume to render and a record of the model (JSON-ready; ``vessel_only`` among its keys)."""
    if vessels is not None:
        if not vessels.same_grid(volume):
            raise VolumeError(f"{vessels.source}: vessel segmentation is not on the grid of {volume.source}")
        mu = mra_to_attenuation(volume.data, vessel_mask=vessels.data != 0)
        record = {"attenuation_model": "vessel segmentation (contrast inside, 0 elsewhere)",
                  "vessels_file": Path(vessels.source).name, "vessel_voxels": int(np.count_nonzero(vessels.data))}
        return volume.with_data(mu, kind="attenuation"), {**record, "vessel_only": True}
    if modality == "mra":
        low, high = mra_window(volume.data)
        record = {"attenuation_model": "MRA bright vessels as contrast (intensity ramp)",
                  "mra_window": [round(low, 4), round(high, 4)]}
        mu = mra_to_attenuation(volume.data, low=low, high=high)
        return volume.with_data(mu, kind="attenuation"), {**record, "vessel_only": True}
    if modality == "ct":
        record = {"attenuation_model": "CT water/bone model of HU", "bone_multiplier": float(bone_multiplier)}
        return to_attenuation(volume, "ct", bone_multiplier), {**record, "vessel_only": False}
    raise VolumeError(f"{volume.source}: unknown modality {modality!r}; expected 'ct' or 'mra'")
