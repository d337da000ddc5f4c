"""What a batch builds once and every X-ray shares: the DRR volume, the structures to outline, the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..drr import DRRVolume
from ..io.label_names import read_label_names
from ..volume import (
    Volume,
    label_values,
    load_labelmap,
    load_volume,
    masked_attenuation,
    structure_volumes,
    to_attenuation,
)
from .batch import PipelineSettings

__all__ = ["RegistrationTarget", "prepare_target"]


@dataclass
class RegistrationTarget:
    """What is built once per run: the DRR volume, the structures to outline and their names."""

    drr: DRRVolume
    center: torch.Tensor  # (3,) float64 RAS mm, the volume's centre
    outlines: dict[int, DRRVolume]
    names: dict[int, str]
    colors: dict[int, tuple[int, int, int]]
    summary: dict[str, Any]
    model: Any = None  # the loaded network for init "model"
    frame: Any = None  # the CT's centre and fingerprint, for the network's pose


def prepare_target(settings: PipelineSettings, prepare_start=None) -> RegistrationTarget:
    """Load the CT/MRA (and label map), convert to attenuation and build the DRR volumes.

    ``prepare_start(settings, volume, target)``, if given, lets the start-pose method load what it
    needs once per run (the network, for starts from a trained model).
    """
    volume = load_volume(settings.volume)
    attenuation = to_attenuation(volume, mode=settings.volume_mode)
    names, colors = read_label_names(settings.label_names) if settings.label_names else ({}, {})
    summary: dict[str, Any] = {"file": Path(settings.volume).name, "mode": settings.volume_mode,
                               "size_ijk": list(volume.shape_ijk), "spacing_mm": volume.spacing.round(4).tolist()}
    attenuation, outlines = _structures(settings, volume, attenuation, summary)
    drr = DRRVolume.from_volume(attenuation, device=settings.device)
    center = torch.as_tensor(volume.center, dtype=torch.float64)
    target = RegistrationTarget(drr, center, outlines, names, colors, summary)
    if prepare_start is not None:
        prepare_start(settings, volume, target)
    return target


def _structures(settings: PipelineSettings, volume: Volume, attenuation: Volume, summary: dict):
    """The attenuation to register on (masked to ``structures`` if chosen) and the volumes to outline."""
    if settings.structures and not settings.labels:
        raise ValueError("--structures needs --labels (the label map the ids refer to)")
    if not settings.labels:
        return attenuation, {}
    labelmap = load_labelmap(settings.labels, reference=volume)
    chosen = [int(v) for v in settings.structures] if settings.structures else label_values(labelmap)
    if settings.structures:
        attenuation = masked_attenuation(attenuation, labelmap, chosen)
    outlines = {label: DRRVolume.from_volume(v, device=settings.device)
                for label, v in structure_volumes(labelmap, chosen).items()}
    summary.update(labels_file=Path(settings.labels).name, structures=chosen,
                   registered_on="structures" if settings.structures else "whole volume")
    return attenuation, outlines
