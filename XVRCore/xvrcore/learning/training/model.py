"""The network a run trains: a new one placed at the middle of the pose ranges, or a pretrained one to finetune.

Finetuning (xvr paper, Methods M.4) starts from a model folder (or an xvr ``.pth``, converted on the
fly) and keeps its canonical camera; its predictions are mapped into the new CT's frame by a frame
correction (:mod:`xvrcore.volume.frames`): centre alignment, or a rigid registration of the new CT
to the template CT the model was pretrained on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from ...geometry.camera import Intrinsics
from ...geometry.rotations import euler_to_matrix
from ...volume import load_volume
from ...volume.frames import FRAME_MODES, frame_correction, register_rigid
from ..model_files import LoadedModel, camera_metadata, check_camera, load_model
from ..network import ArchitectureSpec, PoseModel, PoseSpec
from ..sampling import PoseRanges, Preset
from ..xvr_import import import_xvr
from .settings import TrainSettings

__all__ = ["Network", "build_network", "canonical_camera", "load_pretrained", "predict"]


@dataclass
class Network:
    """The model being trained with what describes it in its model files."""

    model: PoseModel
    architecture: ArchitectureSpec
    camera: dict  # the canonical camera (model_files.camera_metadata)
    correction: torch.Tensor | None  # (4, 4) float64 frame correction (centred coordinates), None: identity
    pretrained: dict | None  # metadata of the model this one is finetuned from

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics(**self.camera["intrinsics"])

    def correction_on(self, device: torch.device) -> torch.Tensor | None:
        """The frame correction as float32 on ``device`` (what :func:`~xvrcore.learning.network.to_world` takes)."""
        return None if self.correction is None else self.correction.to(device=device, dtype=torch.float32)


def predict(network: torch.nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Centred poses ``(B, 4, 4)`` for inputs ``(B, 1, H, W)``; the network under bfloat16 autocast on CUDA."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return network(inputs)


def canonical_camera(settings: TrainSettings, preset: Preset | None) -> dict:
    """The camera a new network is trained for: the preset's detector unless the settings say otherwise."""
    sdd = settings.sdd or (preset.sdd if preset else 1020.0)
    fov = preset.field_of_view if preset else 128 * 2.1764375
    spacing = settings.pixel_spacing or fov / settings.image_size
    return camera_metadata(sdd, settings.image_size, spacing, settings.mirrored)


def build_network(settings: TrainSettings, preset: Preset | None, ranges: PoseRanges, device: torch.device) -> Network:
    """A new network (seeded, identical on every rank), or the pretrained one of ``init_from``."""
    if settings.init_from:
        return _finetuned(settings, device)
    lo, hi = ranges.bounds()
    mid = (lo + hi) / 2
    half = float(((hi - lo) / 2)[3:].max().clamp_min(1.0))
    spec = PoseSpec(settings.parameterization, "ZXY", ranges.orientation, tuple(mid[3:].tolist()), half)
    arch = ArchitectureSpec(settings.architecture, settings.width)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, identical on every rank
        torch.manual_seed(settings.seed)
        model = arch.build(spec)
    model.start_at(euler_to_matrix(torch.deg2rad(mid[:3]), "ZXY").float())
    return Network(model.to(device), arch, canonical_camera(settings, preset), None, None)


def _finetuned(settings: TrainSettings, device: torch.device) -> Network:
    loaded = load_pretrained(settings.init_from)
    meta = loaded.metadata
    camera = meta["camera"]
    if settings.sdd or settings.pixel_spacing:
        asked = {**camera, **({"sdd": settings.sdd} if settings.sdd else {}),
                 **({"pixel_spacing": settings.pixel_spacing} if settings.pixel_spacing else {})}
        check_camera(meta, asked, what=f"the pretrained model {settings.init_from}")
    if settings.frame not in FRAME_MODES:
        raise ValueError(f"frame must be one of {FRAME_MODES}, got {settings.frame!r}")
    correction = None
    if settings.frame == "register":
        if not settings.template:
            raise ValueError("frame correction by registration needs the template CT (--template)")
        template = load_volume(settings.template, kind="ct")
        new = load_volume(settings.volumes[0], kind="ct")
        matrix = register_rigid(template, new)
        correction = torch.as_tensor(frame_correction(new.center, template.center, matrix), dtype=torch.float64)
    arch = ArchitectureSpec.from_dict(meta["architecture"])
    return Network(loaded.model.to(device).train(), arch, camera, correction, meta)


def load_pretrained(path: str) -> LoadedModel:
    """A model folder, or an xvr ``.pth`` converted on the fly (restricted unpickling)."""
    if str(path).endswith(".pth"):
        with tempfile.TemporaryDirectory() as tmp:
            return load_model(import_xvr(path, tmp))
    return load_model(path)
