"""What a training run is asked to do (:class:`TrainSettings`, the named profiles) and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

__all__ = ["PROFILES", "TrainResult", "TrainSettings", "profile_settings"]

# Named starting points for a TrainSettings. "standard": the paper's recipe (128-px images, ResNet-18,
# its image + pose loss), for a GPU. "quick": 64-px images, a half-width network and the pose term
# alone with a larger step: on 2 CPU cores 16× the images/s, and after 20 minutes X-rays start at a
# median 37 mm instead of 67 mm (README, "What we measured").
PROFILES: dict[str, dict] = {
    "standard": {},
    "quick": {"image_size": 64, "width": 32, "batch_size": 16, "lr": 3e-3, "pose_loss_fraction": 1.0},
}


def profile_settings(name: str, **overrides) -> dict:
    """TrainSettings fields of profile ``name``, with the ``overrides`` that are not None on top."""
    if name not in PROFILES:
        raise ValueError(f"unknown training profile {name!r}; choose one of {sorted(PROFILES)}")
    return {**PROFILES[name], **{k: v for k, v in overrides.items() if v is not None}}


@dataclass
class TrainSettings:
    """Everything a training run needs; also what ``xvrcore train`` builds from its options."""

    volumes: list[str]  # one CT: patient-specific; several: patient-agnostic pretraining
    output: str
    preset: str | None = "pelvis"
    ranges: dict | None = None  # custom PoseRanges (dict), overriding the preset's
    orientation: str | None = None  # override the ranges' AP/PA
    modality: str = "auto"  # "ct", "mra" or "auto" (from the file: xvrcore.volume.modality); recorded in the model
    vessels: str | None = None  # a vessel segmentation (single volume): render these vessels as contrast
    labelmap: str | None = None  # render only these structures (single CT)
    labels: list[int] | None = None
    init_from: str | None = None  # pretrained model folder (finetuning)
    frame: str = "center"  # finetuning frame correction: "center" or "register"
    template: str | None = None  # template CT for frame="register"
    iterations: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_iterations: int = 100
    weight_geo: float = 1e-2
    # Fraction of the budget trained on the pose term alone (λ·dGeo) before the paper's image + pose
    # loss. Such steps render no DRR at the prediction: on a CPU they are ~2.6× faster, and far from
    # the truth the pose term is the more informative gradient (README, "What we measured").
    pose_loss_fraction: float = 0.0
    grad_clip: float = 1.0
    image_size: int = 128
    sdd: float | None = None  # default: the preset's
    pixel_spacing: float | None = None  # default: the preset's field of view / image_size
    mirrored: bool = True  # train on detector-side views, as DICOM X-rays are displayed
    architecture: str = "resnet18"
    width: int = 64
    parameterization: str = "quaternion_adjugate"
    augmentation: dict | None = None  # AugmentSettings fields
    bone_multiplier: tuple[float, float] = (1.0, 10.0)
    min_coverage: float = 0.1  # ignore DRRs with less than this fraction of non-empty pixels
    lod_bias: float = 2.0  # renderer pyramid choice (coarser = faster; see renderer.render)
    device: str = "auto"
    threads: int | None = None  # CPU threads (None: torch's default); fewer than busy cores avoids stalls
    seed: int = 0
    validate_every: int = 200
    validation_size: int = 16
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    resume: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.pose_loss_fraction <= 1.0:
            raise ValueError(f"pose_loss_fraction must lie in [0, 1], got {self.pose_loss_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    def without_paths(self) -> dict:
        """:meth:`to_dict` with every file and folder path left out (None): what a checkpoint keeps, since
        hospital exports put patient names in paths; the CTs are recorded by their fingerprints instead."""
        return {**self.to_dict(), **{name: None for name in _PATH_FIELDS}}

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_PATH_FIELDS = ("volumes", "output", "labelmap", "init_from", "template", "vessels")


@dataclass
class TrainResult:
    """How a run ended: ``status`` "finished" or "cancelled", where its model is, its validations."""

    status: str
    iterations: int
    model_dir: Path
    checkpoint: Path | None
    elapsed_s: float
    validation: dict | None = None
    history: list[dict] = field(default_factory=list)
