"""Training pose-regression networks on DRRs rendered on the fly (xvr paper, Methods M.3–M.4).

Each iteration samples C-arm poses (:mod:`xvrcore.learning.sampling`), renders DRRs of the CT at the
model's canonical camera with a random bone-attenuation multiplier, augments them
(:mod:`xvrcore.learning.augment`), predicts poses, renders DRRs at the predictions *differentiably* and
minimises the paper's Eq. 24: ``(1 − mNCC) + λ · dGeo`` with λ = 1e-2.

Modes: patient-specific (one CT, from scratch), patient-agnostic pretraining (several CTs, one per
iteration, poses about each CT's centre) and finetuning (``init_from`` a pretrained model, with a
frame correction from the pretraining frame to the new CT: centre alignment or rigid
registration to a template CT; :mod:`xvrcore.volume.frames`).

Reproducibility: every random number of iteration ``i`` on rank ``r`` comes from a generator keyed
on ``(seed, i, r)``, the learning rate is a function of the iteration (or of the elapsed time for
time budgets), and checkpoints hold the weights and the optimizer state. A run stopped at any
checkpoint and resumed therefore ends with exactly the weights of an uninterrupted run.

Engine: CUDA with bfloat16 autocast for the network when available, else CPU; Adam with linear
warm-up and cosine decay; gradient-norm clipping; budgets in iterations and/or minutes; periodic
validation on fixed held-out poses (mTRE over points inside the CT, dGeo, NCC); progress events for
:mod:`xvrcore.io.events`; cancellation that saves; multi-GPU data parallel under ``torchrun``.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import __version__
from ..drr.render import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..geometry.rotations import euler_to_matrix, invert_rigid
from ..metrics.pose_errors import dgeo, mtre
from ..metrics.similarity import multiscale_ncc, ncc
from ..volume.attenuation import MU_WATER_PER_MM, hu_to_attenuation
from ..volume.frames import FRAME_MODES, frame_correction, register_rigid
from ..volume.grid import Volume, load_labelmap, load_volume
from ..volume.labels import structure_mask
from .augment import AugmentSettings, augment
from .checkpoint import (
    CheckpointError,
    LoadedModel,
    camera_metadata,
    check_camera,
    check_volume,
    latest_checkpoint,
    load_model,
    load_state,
    read_metadata,
    save_model,
    save_state,
    volume_fingerprint,
    write_checkpoint,
)
from .network import ArchitectureSpec, InputSpec, PoseSpec, minmax, prepare_input, to_world
from .sampling import PoseRanges, Preset, get_preset, keyed_generator, sample_poses

__all__ = ["PROFILES", "TrainSettings", "TrainResult", "profile_settings", "train"]

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


_VALIDATION_KEY = -1  # generator key of the held-out poses (iterations are >= 0)


@dataclass
class TrainSettings:
    """Everything a training run needs; also what ``xvrcore train`` builds from its options."""

    volumes: list[str]  # one CT: patient-specific; several: patient-agnostic pretraining
    output: str
    preset: str | None = "pelvis"
    ranges: dict | None = None  # custom PoseRanges (dict), overriding the preset's
    orientation: str | None = None  # override the ranges' AP/PA
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

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainResult:
    status: str  # "finished" or "cancelled"
    iterations: int
    model_dir: Path
    checkpoint: Path | None
    elapsed_s: float
    validation: dict | None = None
    history: list[dict] = field(default_factory=list)


# ---- data ------------------------------------------------------------------------------------------


@dataclass
class TrainingTarget:
    """A CT prepared for rendering: tissue and bone attenuation as two channels of one pyramid."""

    pyramid: DRRVolume
    center: torch.Tensor  # (3,) float64 RAS of the voxel-box centre
    fingerprint: str
    points: torch.Tensor  # (N, 3) float64 validation targets inside the body
    name: str
    shape: tuple[int, int, int]
    spacing: list[float]

    def at(self, level: int, bone_multiplier: float) -> DRRVolume:
        """Single-channel attenuation ``tissue + m · bone`` on one pyramid level (renders ~2× faster)."""
        lvl = self.pyramid.level(level)
        data = lvl.data[0] + bone_multiplier * lvl.data[1]
        return DRRVolume(data, lvl.ijk_to_world.cpu(), device=data.device, crop_threshold=None, max_levels=1)


def prepare_training_target(ct: Volume, device, labelmap: Volume | None = None, labels=None, n_points: int = 256) -> TrainingTarget:
    """Split the CT's attenuation into a tissue channel and a bone-excess channel (linear in the multiplier)."""
    hu = torch.as_tensor(np.asarray(ct.data, dtype=np.float32))
    tissue = hu_to_attenuation(hu, 0.0)
    bone = hu_to_attenuation(hu, 1.0) - tissue
    if labelmap is not None:
        mask = torch.as_tensor(structure_mask(labelmap, labels))
        tissue, bone = tissue * mask, bone * mask
    points = _points_inside(tissue, torch.as_tensor(ct.affine, dtype=torch.float64), n_points, ct.source)
    pyramid = DRRVolume(torch.stack([tissue, bone]), ct.affine, device=device)
    return TrainingTarget(
        pyramid, torch.as_tensor(ct.center, dtype=torch.float64), volume_fingerprint(ct), points, Path(ct.source).name,
        tuple(int(n) for n in ct.shape_ijk), [float(s) for s in ct.spacing],
    )


def _points_inside(tissue: torch.Tensor, affine: torch.Tensor, n: int, source: str) -> torch.Tensor:
    """``(n, 3)`` RAS centres of random voxels denser than fat (validation targets for mTRE)."""
    inside = (tissue > 0.8 * MU_WATER_PER_MM).reshape(-1)
    gen = keyed_generator(0, _VALIDATION_KEY, 7)
    # Rejection sampling: no index list of the whole body (hundreds of MB for a 512² CT).
    candidates = torch.randint(inside.numel(), (max(50 * n, 10_000),), generator=gen)
    picked = candidates[inside[candidates]][:n]
    if picked.numel() < n:
        picked = inside.nonzero()[:, 0]
        picked = picked[torch.randperm(picked.numel(), generator=gen)[:n]]
    if picked.numel() == 0:
        raise ValueError(f"{source}: no voxel denser than fat; is this a CT in HU?")
    k, j, i = torch.unravel_index(picked, tissue.shape)
    ijk = torch.stack([i, j, k], -1).double()
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def render_batch(volume: TrainingTarget, poses: torch.Tensor, intrinsics: Intrinsics, level: int, multiplier: float) -> torch.Tensor:
    """DRRs ``(B, 1, H, W)`` (differentiable in the poses)."""
    return render(volume.at(level, multiplier), poses.to(volume.pyramid.dtype), intrinsics, level=0)


def coverage(images: torch.Tensor) -> torch.Tensor:
    """Fraction of each image's pixels that see anatomy, ``(B,)``."""
    peak = images.detach().amax((-1, -2, -3), keepdim=True).clamp_min(1e-12)
    return (images.detach() > 0.02 * peak).float().mean((-1, -2, -3))


# ---- schedule and budget -------------------------------------------------------------------------------


def lr_factor(iteration: int, fraction: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then half a cosine over the budget's ``fraction``."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


@dataclass
class _Budget:
    iterations: int | None
    seconds: float | None

    def fraction(self, iteration: int, elapsed: float) -> float:
        parts = []
        if self.iterations:
            parts.append(iteration / self.iterations)
        if self.seconds:
            parts.append(elapsed / self.seconds)
        return max(parts) if parts else 0.0

    def done(self, iteration: int, elapsed: float) -> bool:
        return (self.iterations is not None and iteration >= self.iterations) or (
            self.seconds is not None and elapsed >= self.seconds
        )


# ---- distributed helpers ----------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(use_cuda: bool) -> _Dist:
    """Join the process group that ``torchrun`` describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


def _weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---- the run ------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, config: TrainSettings, progress, should_stop) -> None:
        self.config = config
        self.progress = progress
        self.should_stop = should_stop
        if config.threads:
            torch.set_num_threads(config.threads)
        requested = config.device
        use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
        self.dist = _setup_distributed(use_cuda)
        self.device = _pick_device(requested, self.dist.local_rank)
        self.output = Path(config.output)
        self.budget = self._budget()
        self.volumes = self._load_volumes()
        self.preset, self.ranges = self._ranges()
        self.model, self.arch, self.camera, self.correction, self.init_meta = self._build_model()
        self.intrinsics = Intrinsics(**self.camera["intrinsics"])
        self.input_spec = InputSpec()
        self.augment_config = AugmentSettings.from_dict(config.augmentation) if config.augmentation else AugmentSettings()
        self.level = self._render_level()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.iteration, self.elapsed_before, self.history = 0, 0.0, []
        self.validation: dict | None = None
        self.validation_changed = False
        self.clock = 0.0  # elapsed seconds as all ranks agree on them (set every iteration)
        self._resume_or_refuse()
        self.network = self._wrap()
        self.validation_set = self._validation_set() if self.dist.main else None

    # -- setup ------------------------------------------------------------------------------------------------
    def _budget(self) -> _Budget:
        c = self.config
        if c.iterations is None and c.minutes is None:
            raise ValueError("give a training budget: iterations and/or minutes")
        if c.iterations is not None and c.iterations < 1 or c.minutes is not None and c.minutes <= 0:
            raise ValueError("the training budget must be positive")
        return _Budget(c.iterations, None if c.minutes is None else 60.0 * c.minutes)

    def _load_volumes(self) -> list[TrainingTarget]:
        c = self.config
        if not c.volumes:
            raise ValueError("no training volume given")
        if c.labelmap and len(c.volumes) > 1:
            raise ValueError("a label map can only be used with a single CT")
        prepared = []
        for path in c.volumes:
            ct = load_volume(path, kind="ct")
            labelmap = load_labelmap(c.labelmap, reference=ct) if c.labelmap else None
            prepared.append(prepare_training_target(ct, self.device, labelmap, c.labels))
        return prepared

    def _ranges(self) -> tuple[Preset | None, PoseRanges]:
        c = self.config
        preset = get_preset(c.preset) if c.preset else None
        if c.ranges is not None:
            ranges = PoseRanges.from_dict(c.ranges)
        elif preset is not None:
            ranges = preset.ranges
        else:
            raise ValueError("give a pose preset or custom ranges")
        if c.orientation:
            ranges = replace(ranges, orientation=c.orientation.upper())
        return preset, ranges

    def _camera(self) -> dict:
        c = self.config
        sdd = c.sdd or (self.preset.sdd if self.preset else 1020.0)
        fov = self.preset.field_of_view if self.preset else 128 * 2.1764375
        spacing = c.pixel_spacing or fov / c.image_size
        return camera_metadata(sdd, c.image_size, spacing, c.mirrored)

    def _build_model(self):
        c = self.config
        if c.init_from:
            return self._finetune_model()
        camera = self._camera()
        lo, hi = self.ranges.bounds()
        mid = (lo + hi) / 2
        half = float(((hi - lo) / 2)[3:].max().clamp_min(1.0))
        spec = PoseSpec(c.parameterization, "ZXY", self.ranges.orientation, tuple(mid[3:].tolist()), half)
        arch = ArchitectureSpec(c.architecture, c.width)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, identical on every rank
            torch.manual_seed(c.seed)
            model = arch.build(spec)
        model.start_at(euler_to_matrix(torch.deg2rad(mid[:3]), "ZXY").float())
        return model.to(self.device), arch, camera, None, None

    def _finetune_model(self):
        c = self.config
        loaded = _load_pretrained(c.init_from)
        meta = loaded.metadata
        camera = meta["camera"]
        if c.sdd or c.pixel_spacing:
            check_camera(meta, {**camera, **({"sdd": c.sdd} if c.sdd else {}), **({"pixel_spacing": c.pixel_spacing} if c.pixel_spacing else {})},
                         what=f"the pretrained model {c.init_from}")
        if c.frame not in FRAME_MODES:
            raise ValueError(f"frame must be one of {FRAME_MODES}, got {c.frame!r}")
        correction = None
        if c.frame == "register":
            if not c.template:
                raise ValueError("frame correction by registration needs the template CT (--template)")
            template = load_volume(c.template, kind="ct")
            new = load_volume(c.volumes[0], kind="ct")
            matrix = register_rigid(template, new)
            correction = frame_correction(new.center, template.center, matrix)
        arch = ArchitectureSpec.from_dict(meta["architecture"])
        return loaded.model.to(self.device).train(), arch, camera, correction, meta

    def _render_level(self) -> int:
        """Pyramid level for the typical (middle) source distance: fixed, so every step costs the same."""
        y_mid = abs(sum(self.ranges.y) / 2)
        footprint = max(y_mid, 100.0) / abs(self.intrinsics.fx)  # detector pixel projected to the isocentre
        return self.volumes[0].pyramid.choose_level(footprint, self.config.lod_bias)

    def _wrap(self) -> torch.nn.Module:
        if self.dist.world <= 1:
            return self.model
        ids = [self.dist.local_rank] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _metadata(self) -> dict:
        c = self.config
        kind = "finetuned" if c.init_from else ("patient-agnostic" if len(self.volumes) > 1 else "patient-specific")
        v0 = self.volumes[0]
        volume = None if kind == "patient-agnostic" else {
            "sha256": v0.fingerprint, "center": v0.center.tolist(), "shape": list(v0.shape), "spacing": v0.spacing,
        }
        return {
            "architecture": self.arch.to_dict(),
            "camera": self.camera,
            "input": self.input_spec.to_dict(),
            "volume": volume,
            "volumes": [{"sha256": v.fingerprint, "center": v.center.tolist()} for v in self.volumes],
            "frame": {"correction": None if self.correction is None else np.asarray(self.correction).tolist(),
                      "mode": c.frame if c.init_from else None},
            "sampling": {"preset": c.preset, "ranges": self.ranges.to_dict()},
            "renderer": {"method": "trilinear", "level": self.level, "lod_bias": c.lod_bias, "attenuation": "ct",
                         "bone_multiplier": list(c.bone_multiplier), "labels": c.labels},
            "augmentation": self.augment_config.to_dict(),
            "training": {"kind": kind, "iteration": self.iteration, "seed": c.seed, "batch_size": c.batch_size,
                         "world_size": self.dist.world, "lr": c.lr, "weight_geo": c.weight_geo,
                         "pose_loss_fraction": c.pose_loss_fraction,
                         "validation": self.validation, "elapsed_s": self._elapsed(),
                         "init_from": None if self.init_meta is None else self.init_meta.get("weights", {}).get("sha256")},
            "created_by": f"xvrcore {__version__}",
        }

    # -- resume ---------------------------------------------------------------------------------------------------
    def _resume_or_refuse(self) -> None:
        found = latest_checkpoint(self.output)
        if found is None and (self.output / "model.json").exists() and not self.config.resume:
            raise CheckpointError(f"{self.output} already holds a model; choose a new folder for this run")
        if found is None:
            if self.config.resume and self.dist.main:
                self._say(f"nothing to resume in {self.output}; starting a new run")
            return
        if not self.config.resume:
            raise CheckpointError(f"{self.output} already holds a training run ({found.name}); resume it with --resume or choose a new folder")
        meta, _ = read_metadata(found)
        for v, rec in zip(self.volumes, meta.get("volumes", []), strict=False):
            check_volume({"volume": rec}, v.fingerprint, what=f"the checkpoint in {found}")
        if len(meta.get("volumes", [])) != len(self.volumes):
            raise CheckpointError(f"the checkpoint in {found} was trained on {len(meta.get('volumes', []))} volumes, not {len(self.volumes)}")
        check_camera(meta, self.camera, what=f"the checkpoint in {found}")
        state = load_state(found)
        saved = state["config"]
        for key in ("seed", "batch_size", "ranges", "preset", "parameterization", "architecture", "width", "labels"):
            if saved.get(key) != self.config.to_dict().get(key):
                raise CheckpointError(f"cannot resume {found}: {key} was {saved.get(key)!r}, now {self.config.to_dict().get(key)!r}")
        loaded = load_model(found, self.device)
        self.model.load_state_dict(loaded.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.elapsed_before = float(state["elapsed_s"])
        self.history = list(state.get("history", []))
        self.validation = self.history[-1] if self.history else None
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if self.dist.main:
            self._say(f"resuming {found.name} at iteration {self.iteration}")

    # -- reporting ------------------------------------------------------------------------------------------------
    def _report(self, event: str, **fields) -> None:
        if self.progress is not None and self.dist.main:
            self.progress({"event": event, **fields})

    def _say(self, text: str) -> None:
        if self.config.progress_bar:
            print(text, flush=True)

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def _sync(self, stop: bool) -> tuple[bool, float]:
        """(stop requested on any rank, largest elapsed time): one all-reduce per iteration.

        Every rank must take the same decisions and the same learning rate, which under a time
        budget depends on the clock: all ranks use the largest elapsed time.
        """
        elapsed = self._elapsed()
        if self.dist.world <= 1:
            return stop, elapsed
        t = torch.tensor([1.0 if stop else 0.0, elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0].item() > 0), float(t[1].item())

    # -- one step -------------------------------------------------------------------------------------------------
    def _volume_for(self, gen: torch.Generator) -> tuple[int, TrainingTarget]:
        index = int(torch.randint(len(self.volumes), (1,), generator=gen)) if len(self.volumes) > 1 else 0
        return index, self.volumes[index]

    def _multiplier(self, gen: torch.Generator) -> float:
        lo, hi = self.config.bone_multiplier
        return float(lo + (hi - lo) * torch.rand(1, generator=gen, dtype=torch.float64))

    def _predict(self, network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return network(images)

    def _loss(self, volume, poses, images, predicted, multiplier, pose_only: bool = False):
        """Per-image Eq. 24 and its parts (``pose_only``: the pose term alone, similarity NaN)."""
        _, _, geo = dgeo(invert_rigid(poses), invert_rigid(predicted.double()), self.camera["sdd"], volume.center)
        if pose_only:
            return self.config.weight_geo * geo, torch.full_like(geo, math.nan), geo
        pred_images = render_batch(volume, predicted, self.intrinsics, self.level, multiplier)
        similarity = multiscale_ncc(images, pred_images)
        return 1.0 - similarity + self.config.weight_geo * geo, similarity, geo

    def _pose_only(self) -> bool:
        """Still in the pose-term-only part of the budget?"""
        return self.budget.fraction(self.iteration, self.clock) < self.config.pose_loss_fraction

    def step(self) -> dict:
        c = self.config
        gen = keyed_generator(c.seed, self.iteration, self.dist.rank)
        _, volume = self._volume_for(gen)
        multiplier = self._multiplier(gen)
        poses, _ = sample_poses(self.ranges, c.batch_size, gen, volume.center)
        poses = poses.to(self.device)
        with torch.no_grad():
            images = render_batch(volume, poses, self.intrinsics, self.level, multiplier)
        weight = (coverage(images) >= c.min_coverage).float()
        inputs = prepare_input(augment(minmax(images), gen, self.augment_config), self.input_spec)
        centred = self._predict(self.network, inputs)
        predicted = to_world(centred.float(), volume.center.to(self.device), self._correction_tensor())
        loss_each, similarity, geo = self._loss(volume, poses, images, predicted, multiplier, self._pose_only())
        loss = (loss_each * weight).sum() / weight.sum().clamp_min(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.model.parameters())
        if finite:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            fraction = self.budget.fraction(self.iteration, self.clock)
            for group in self.optimizer.param_groups:
                group["lr"] = c.lr * lr_factor(self.iteration, fraction, c.warmup_iterations)
            self.optimizer.step()
        self.iteration += 1
        kept = weight.bool()
        return {
            "loss": float(loss.detach()),
            "ncc": float(similarity.detach()[kept].mean()) if kept.any() else math.nan,  # NaN in the pose-only phase
            "dgeo_mm": float(geo.detach()[kept].mean()) if kept.any() else math.nan,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped": not finite,
        }

    def _correction_tensor(self) -> torch.Tensor | None:
        return None if self.correction is None else torch.as_tensor(self.correction, dtype=torch.float32, device=self.device)

    # -- validation -----------------------------------------------------------------------------------------------
    def _validation_set(self) -> list[dict]:
        gen = keyed_generator(self.config.seed, _VALIDATION_KEY)
        sets = []
        per_volume = max(1, math.ceil(self.config.validation_size / len(self.volumes)))
        for index, volume in enumerate(self.volumes):
            poses, _ = sample_poses(self.ranges, per_volume, gen, volume.center)
            multiplier = self._multiplier(gen)
            with torch.no_grad():
                images = render_batch(volume, poses.to(self.device), self.intrinsics, self.level, multiplier)
            sets.append({"volume": index, "poses": poses.to(self.device), "images": images, "multiplier": multiplier})
        return sets

    @torch.no_grad()
    def validate(self) -> dict:
        mtres, geos, nccs = [], [], []
        self.model.eval()
        for item in self.validation_set:
            volume = self.volumes[item["volume"]]
            for start in range(0, item["poses"].shape[0], self.config.batch_size):
                poses = item["poses"][start : start + self.config.batch_size]
                images = item["images"][start : start + self.config.batch_size]
                centred = self._predict(self.model, prepare_input(minmax(images), self.input_spec))
                predicted = to_world(centred.float(), volume.center.to(self.device), self._correction_tensor()).double()
                w2c_true, w2c_pred = invert_rigid(poses), invert_rigid(predicted)
                mtres.append(mtre(w2c_true, w2c_pred, volume.points.to(self.device)))
                geos.append(dgeo(w2c_true, w2c_pred, self.camera["sdd"], volume.center)[2])
                drr = render_batch(volume, predicted, self.intrinsics, self.level, item["multiplier"])
                nccs.append(ncc(images, drr))
        self.model.train()
        m, g, n = (torch.cat(x).double().cpu() for x in (mtres, geos, nccs))
        return {
            "iteration": self.iteration,
            "mtre_mm": float(m.mean()), "mtre_median_mm": float(m.median()),
            "dgeo_mm": float(g.mean()), "dgeo_median_mm": float(g.median()),
            "ncc": float(n.mean()), "n": int(m.numel()),
        }

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def save(self) -> Path:
        meta = self._metadata()
        state = {
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "elapsed_s": self._elapsed(),
            "history": self.history,
            "config": self.config.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

        def write(folder: Path) -> None:
            save_model(folder, self.model, meta)
            save_state(folder, state)

        path = write_checkpoint(self.output, self.iteration, write, keep=self.config.keep_checkpoints)
        self.validation_changed = False
        save_model(self.output, self.model, meta)  # the run folder itself is always a usable model
        self._report("checkpoint", iteration=self.iteration, path=str(path))
        return path

    # -- loop -----------------------------------------------------------------------------------------------------
    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (cancellation, time budget)."""
        if self.dist.world <= 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def loop(self) -> TrainResult:
        c = self.config
        self._t0 = time.perf_counter()
        last_save = last_report = time.perf_counter()
        checkpoint = latest_checkpoint(self.output)
        bar = self._bar()
        status = "finished"
        images_done = 0
        try:
            if self.dist.main and c.validate_every and self.iteration == 0:
                self._run_validation()  # the untrained baseline
            while True:
                stop, self.clock = self._sync(bool(self.should_stop and self.should_stop()))
                if self.budget.done(self.iteration, self.clock):
                    break
                if stop:
                    status = "cancelled"
                    break
                stats = self.step()
                images_done += c.batch_size * self.dist.world
                now = time.perf_counter()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(_bar_fields(stats))
                if now - last_report >= 0.5 or self.iteration == 1 or self.budget.done(self.iteration, self._elapsed()):
                    self._progress_event(stats, images_done, now)
                    last_report = now
                if self.dist.main and c.validate_every and self.iteration % c.validate_every == 0:
                    self._run_validation()
                due = self.iteration % c.checkpoint_every == 0 if c.checkpoint_every else False
                due = due or (now - last_save) / 60.0 >= c.checkpoint_minutes
                if self._agree(due) and self.dist.main:
                    checkpoint = self.save()
                    last_save = time.perf_counter()
            if self.dist.main:
                if status == "finished" and (not self.history or self.history[-1]["iteration"] != self.iteration):
                    self._run_validation()
                if checkpoint is None or checkpoint.name != f"checkpoint-{self.iteration:07d}" or self.validation_changed:
                    checkpoint = self.save()
            hashes = self._rank_hashes()
        finally:
            if bar is not None:
                bar.close()
        result = TrainResult(status, self.iteration, self.output, checkpoint, self._elapsed(), self.validation, self.history)
        fields_ = {"iteration": self.iteration, "model": str(self.output), "checkpoint": str(checkpoint),
                   "elapsed_s": round(result.elapsed_s, 3), "validation": self.validation}
        if hashes is not None:
            fields_["rank_weights_sha256"] = hashes
        self._report(status, **fields_)
        if self.dist.owns_group:
            self._leave_group()
        return result

    def _leave_group(self) -> None:
        """Tear the process group down while the interpreter is alive.

        DistributedDataParallel's reducer keeps the group (and its communication threads) alive;
        destroyed later, during interpreter exit, a still-joinable thread aborts the process.
        """
        self.network = self.model
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()

    def _progress_event(self, stats: dict, images_done: int, now: float) -> None:
        elapsed = self._elapsed()
        speed = images_done / max(now - self._t0, 1e-9)
        fraction = min(1.0, self.budget.fraction(self.iteration, elapsed))
        eta = (elapsed - self.elapsed_before) / fraction * (1 - fraction) if fraction > 0 else None
        self._report("progress", done=self.iteration, total=self.config.iterations, fraction=round(fraction, 5),
                     elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 1),
                     images_per_s=round(speed, 2), **{k: v for k, v in stats.items()})

    def _run_validation(self) -> None:
        self.validation_changed = True
        self.validation = self.validate()
        self.history.append(self.validation)
        self._report("validation", **self.validation)

    def _rank_hashes(self) -> list[str] | None:
        if self.dist.world <= 1:
            return None
        gathered: list[str | None] = [None] * self.dist.world
        dist.all_gather_object(gathered, _weights_sha256(self.model))
        return gathered

    def _bar(self):
        if not (self.config.progress_bar and self.dist.main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.iterations, initial=self.iteration, desc="training", unit="it", dynamic_ncols=True)


def _bar_fields(stats: dict) -> dict[str, str]:
    """The terminal bar's numbers; no NCC while on the pose term alone (it is not computed then)."""
    fields_ = {"loss": f"{stats['loss']:.3f}", "dgeo": f"{stats['dgeo_mm']:.0f}"}
    if math.isfinite(stats["ncc"]):
        fields_["ncc"] = f"{stats['ncc']:.3f}"
    return fields_


def _load_pretrained(path: str) -> LoadedModel:
    """A model folder, or an xvr ``.pth`` converted on the fly (restricted unpickling)."""
    if str(path).endswith(".pth"):
        import tempfile

        from .checkpoint import import_xvr

        with tempfile.TemporaryDirectory() as tmp:
            return load_model(import_xvr(path, tmp))
    return load_model(path)


def train(
    config: TrainSettings,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train (or resume, or finetune) a pose-regression model; see :class:`TrainSettings`.

    ``progress`` receives event dicts (``event`` = "progress", "validation", "checkpoint",
    "finished" or "cancelled", plus fields) — pass ``lambda e: jobs.emit(**e)``-style adapters for
    the JSON-line protocol. ``should_stop`` is polled every iteration; when it returns True the run
    saves a checkpoint and returns with status "cancelled".
    """
    return _Run(config, progress, should_stop).loop()
