"""What a batch registration is given (:class:`PipelineSettings`) and what it reports (:class:`RunSummary`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io.atomic import EXIT_DISK_FULL
from ..io.events import EXIT_CANCELLED
from ..xray import GeometryOverrides
from .settings import RegistrationSettings

__all__ = ["InputOutcome", "PipelineSettings", "RunSummary"]


@dataclass
class PipelineSettings:
    """Everything a run needs besides the input files."""

    volume: str | Path
    output: str | Path
    labels: str | Path | None = None
    structures: Sequence[int] | None = None  # register on these labels only (masked attenuation)
    label_names: str | Path | None = None  # JSON {id: name} or a Slicer colour table
    volume_mode: str = "auto"  # "ct", "mra" or "auto" (from the file: xvrcore.volume.modality)
    vessels: str | Path | None = None  # a vessel segmentation: render the vessels only (xvrcore.volume.vessels)
    init: str = "dicom"
    init_pose: str | Path | None = None  # a pose JSON, or a folder of <stem>.json
    landmarks: str | Path | None = None  # a landmarks JSON, or a folder of <stem>.json
    isocenter: Sequence[float] | None = None  # RAS mm; the volume centre by default
    carm: Sequence[float] | None = None  # init "carm": the paper's (α, β, γ, x, y, z), degrees and mm
    carm_orientation: str = "PA"  # "AP" or "PA" (xvrcore.geometry.carm)
    frame: int | str | None = None
    mask_frame: int | None = None
    overrides: GeometryOverrides = field(default_factory=GeometryOverrides)
    settings: RegistrationSettings = field(default_factory=RegistrationSettings)
    model: str | Path | None = None  # a trained model folder (init "model"), see xvrcore.learning
    allow_other_volume: bool = False  # use a patient-specific model on a CT it was not trained on
    device: str = "cpu"
    overwrite: bool = False  # re-register inputs that already have a valid result
    name_outputs: str = "stem"  # "stem", "uid" or "hash": how results are named (registration.inputs.NAMINGS)
    save_trajectory: bool = False  # also write <name>_trajectory.json (registration.animation)
    animate: bool = False  # also write <name>_animation.gif and the trajectory


@dataclass
class InputOutcome:
    input: str  # the file name (never a full path in events and results)
    status: str  # "done", "skipped", "failed" or "cancelled"
    json_path: str | None = None
    message: str | None = None
    bad_input: bool = False  # the failure is the input's fault (exit code 2), not ours
    similarity: float | None = None
    seconds: float = 0.0
    disk_full: bool = False  # the failure was a full disk: the batch stopped there
    name: str | None = None  # the output name (<name>.json), see registration.inputs.name_inputs


@dataclass
class RunSummary:
    outcomes: list[InputOutcome]
    cancelled: bool
    seconds: float

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def disk_full(self) -> bool:
        """Whether the batch stopped because the disk (or quota, or file-size limit) was full."""
        return any(o.disk_full for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """3 if the disk was full, 130 if cancelled, 2 if an input was bad, 1 for other failures, else 0."""
        if self.disk_full:
            return EXIT_DISK_FULL
        if self.cancelled:
            return EXIT_CANCELLED
        failed = [o for o in self.outcomes if o.status == "failed"]
        if not failed:
            return 0
        return 2 if all(o.bad_input for o in failed) else 1

    def text(self) -> str:
        line = (f"registered {self.count('done')}, skipped {self.count('skipped')} (already done), "
                f"failed {self.count('failed')} of {len(self.outcomes)} in {self.seconds:.1f} s")
        if self.disk_full:
            return line + " — stopped: the disk is full; free space and run again to resume"
        return line + (" — cancelled; run again to resume" if self.cancelled else "")
