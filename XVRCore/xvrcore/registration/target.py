"""What a batch builds once and every X-ray shares: the DRR volume, the structures to outline, the network."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..drr import DRRVolume
from ..io.label_names import read_label_names
from ..volume import (
    Volume,
    load_labelmap,
    masked_attenuation,
    structure_volumes,
)
from ..volume.labels import check_label_map
from ..volume.modality import ModalityWarning
from ..volume.vessels import load_rendered_volume
from .batch import PipelineSettings
from .dsa import DSA_REFINE_MARGIN_MM, search_margin

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
    warnings: list[str] = field(default_factory=list)  # choices made while preparing (a series, a resampling)
    vessel_only: bool = False  # the DRR shows vessels only (MRA, vessel segmentation): register a DSA on them


def prepare_target(settings: PipelineSettings, prepare_start=None, should_stop=None) -> RegistrationTarget:
    """Load the CT/MRA (and label map), convert to attenuation and build the DRR volumes.

    ``prepare_start(settings, volume, target)``, if given, lets the start-pose method load what it
    needs once per run (the network, for starts from a trained model). ``should_stop`` is polled
    between the structures of the label map: True leaves the remaining outlines out (the caller,
    polling it too, then cancels the run).
    """
    volume, attenuation, summary = _load_volume(settings)
    names, colors = read_label_names(settings.label_names) if settings.label_names else ({}, {})
    attenuation, outlines = _structures(settings, volume, attenuation, summary, should_stop)
    drr = DRRVolume.from_volume(attenuation, device=settings.device)
    center = torch.as_tensor(volume.center, dtype=torch.float64)
    vessel_only = summary.pop("vessel_only")
    if vessel_only:
        summary["dsa"] = {"similarity_region": "the vessels' projection, dilated, within the exposed pixels",
                          "margin_mm": search_margin(settings.settings), "refine_margin_mm": DSA_REFINE_MARGIN_MM}
    target = RegistrationTarget(drr, center, outlines, names, colors, summary, vessel_only=vessel_only)
    if prepare_start is not None:
        prepare_start(settings, volume, target)
    return target


def _load_volume(settings: PipelineSettings) -> tuple[Volume, Volume, dict[str, Any]]:
    """The CT/MRA, its attenuation by modality (``settings.volume_mode``, "auto" from the file) and its summary."""
    loaded = load_rendered_volume(settings.volume, settings.volume_mode, settings.vessels)
    if loaded.warning:
        warnings.warn(loaded.warning, ModalityWarning, stacklevel=3)
    volume = loaded.volume
    summary: dict[str, Any] = {"file": Path(settings.volume).name, "mode": loaded.record["modality"], **loaded.record,
                               "vessel_only": loaded.vessel_only, "size_ijk": list(volume.shape_ijk),
                               "spacing_mm": volume.spacing.round(4).tolist()}
    return volume, loaded.attenuation, summary


def _structures(settings: PipelineSettings, volume: Volume, attenuation: Volume, summary: dict, should_stop=None):
    """The attenuation to register on (masked to ``structures`` if chosen) and the volumes to outline."""
    if settings.structures and not settings.labels:
        raise ValueError("--structures needs --labels (the label map the ids refer to)")
    if not settings.labels:
        return attenuation, {}
    labelmap = load_labelmap(settings.labels, reference=volume)
    present = check_label_map(labelmap)  # an image given as labels: refused, not thousands of structures
    chosen = [int(v) for v in settings.structures] if settings.structures else present
    if settings.structures:
        attenuation = masked_attenuation(attenuation, labelmap, chosen)
    outlines = {}
    for label, v in structure_volumes(labelmap, chosen, should_stop=should_stop).items():
        if should_stop is not None and should_stop():
            break
        outlines[label] = DRRVolume.from_volume(v, device=settings.device)
    summary.update(labels_file=Path(settings.labels).name, structures=chosen,
                   registered_on="structures" if settings.structures else "whole volume")
    return attenuation, outlines
