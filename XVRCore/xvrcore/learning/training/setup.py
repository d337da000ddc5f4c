"""What a run trains and how, fixed at its start: the CTs, the poses, the network, the ranks, and the model files' description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ... import __version__
from ..augment import AugmentSettings
from ..network import InputSpec
from ..sampling import PoseRanges, Preset
from .data import BatchSource, TrainingTarget, load_targets, pose_ranges, render_level, run_modality
from .distributed import Ranks, join_ranks
from .model import Network, build_network
from .schedule import Budget
from .settings import TrainSettings
from .state import RunState

__all__ = ["RunSetup", "prepare_run"]


@dataclass
class RunSetup:
    """The fixed parts of a run, shared by its collaborators (batches, validation, checkpoints)."""

    settings: TrainSettings
    ranks: Ranks
    output: Path
    budget: Budget
    targets: list[TrainingTarget]
    preset: Preset | None
    ranges: PoseRanges
    network: Network
    input_spec: InputSpec
    augmentation: AugmentSettings
    level: int  # pyramid level every DRR is rendered from

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    @property
    def kind(self) -> str:
        if self.settings.init_from:
            return "finetuned"
        return "patient-agnostic" if len(self.targets) > 1 else "patient-specific"

    def batches(self) -> BatchSource:
        return BatchSource(self.targets, self.ranges, self.network.intrinsics, self.level, self.settings,
                           self.augmentation, self.input_spec, self.device)

    def metadata(self, state: RunState) -> dict:
        """``model.json`` of the model at ``state`` (:mod:`xvrcore.learning.model_files`)."""
        s, first = self.settings, self.targets[0]
        volume = None if self.kind == "patient-agnostic" else {
            "sha256": first.fingerprint, "center": first.center.tolist(), "shape": list(first.shape), "spacing": first.spacing,
        }
        correction = self.network.correction
        pretrained = self.network.pretrained
        return {
            "architecture": self.network.architecture.to_dict(),
            "camera": self.network.camera,
            "input": self.input_spec.to_dict(),
            "volume": volume,
            "volumes": [{"sha256": t.fingerprint, "center": t.center.tolist()} for t in self.targets],
            "frame": {"correction": None if correction is None else correction.tolist(),
                      "mode": s.frame if s.init_from else None},
            "sampling": {"preset": s.preset, "ranges": self.ranges.to_dict()},
            "modality": run_modality(self.targets),  # xvrcore.learning.model_files.check_modality
            "renderer": {"method": "trilinear", "level": self.level, "lod_bias": s.lod_bias,
                         "attenuation": first.attenuation_model,
                         "bone_multiplier": list(s.bone_multiplier), "labels": s.labels},
            "augmentation": self.augmentation.to_dict(),
            "training": {"kind": self.kind, "iteration": state.iteration, "seed": s.seed, "batch_size": s.batch_size,
                         "world_size": self.ranks.world, "lr": s.lr, "weight_geo": s.weight_geo,
                         "pose_loss_fraction": s.pose_loss_fraction,
                         "validation": state.validation, "elapsed_s": state.elapsed(),
                         "init_from": None if pretrained is None else pretrained.get("weights", {}).get("sha256")},
            "created_by": f"xvrcore {__version__}",
        }


def prepare_run(settings: TrainSettings) -> RunSetup:
    """Threads, ranks and device, budget, CTs, pose ranges, network and render level, in that order."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    ranks = join_ranks(settings.device)
    budget = Budget.from_settings(settings)
    targets = load_targets(settings, ranks.device)
    preset, ranges = pose_ranges(settings)
    network = build_network(settings, preset, ranges, ranks.device)
    augmentation = AugmentSettings.from_dict(settings.augmentation) if settings.augmentation else AugmentSettings()
    level = render_level(targets[0], ranges, network.intrinsics, settings.lod_bias)
    return RunSetup(settings, ranks, Path(settings.output), budget, targets, preset, ranges, network, InputSpec(),
                    augmentation, level)
