"""Where a registration starts: one strategy per start method, chosen by name from :data:`STARTS`.

* ``"dicom"`` — the header's positioner angles and SOD about the volume centre (or a given isocentre);
* ``"pose"`` — a pose JSON in the shared format (one file, or a folder of ``<stem>.json``);
* ``"landmarks"`` — ≥ 4 pairs of X-ray pixels and CT points (perspective-n-point);
* ``"model"`` — a trained network's estimate (the X-ray resampled to the network's camera);
* ``"carm"`` — fixed C-arm parameters ``(α, β, γ, x, y, z)`` about the volume centre (or a given isocentre).

A network start that looks poor — the NCC of its DRR against the X-ray (both on a grid of at most
:data:`SIMILARITY_GRID` pixels a side, within the exposed pixels) below :data:`NETWORK_FALLBACK_NCC` —
is compared with the header's start where the file has positioner angles and an SOD; the better
of the two (higher NCC) is kept, and the record says which (``"fallback"``, ``"chosen"``,
``"similarities"``).

Every strategy returns a :class:`StartPose`: the pose (the one pose type, :mod:`xvrcore.geometry.pose`),
a record of how it was found (written into the result JSON) and warnings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..drr import render
from ..geometry.camera import Intrinsics
from ..geometry.carm import carm_pose
from ..geometry.pose import as_pose
from ..geometry.positioner import pose_from_xray
from ..io.pose_json import CameraPose, load_pose_file
from ..metrics.similarity import ncc
from .checks import check_angles
from .inputs import per_input_file
from .landmarks import read_landmarks
from .pnp import check_fit, solve_pnp
from .resolution import stage_inputs

if TYPE_CHECKING:
    from ..xray import XrayImage
    from .batch import PipelineSettings
    from .target import RegistrationTarget

__all__ = [
    "NETWORK_FALLBACK_NCC",
    "SIMILARITY_GRID",
    "STARTS",
    "StartMethod",
    "StartPose",
    "find_start",
    "start_method",
    "start_similarity",
]

# Below this NCC a network start is doubted. Near the truth a DRR and a realistic X-ray (scatter,
# noise, blur, gain) correlate at about 0.8-0.95; tens of mm or degrees off, below about 0.5.
NETWORK_FALLBACK_NCC = 0.6
SIMILARITY_GRID = 96  # pixels per side, at most, for comparing starts (cheap, and enough for tens of mm)


@dataclass
class StartPose:
    camera_to_world: torch.Tensor  # (4, 4) float64
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StartMethod:
    """A start strategy: ``find(xray, settings, target, stem)``, and ``prepare(settings, volume, target)``
    for what it loads once per run (None if nothing)."""

    find: Callable[..., StartPose]
    prepare: Callable[..., None] | None = None


def _from_header(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    given = settings.isocenter is not None
    iso = torch.as_tensor(settings.isocenter if given else target.center, dtype=torch.float64)
    missing = [n for n in ("primary_angle", "secondary_angle", "sod") if getattr(xray, n) is None]
    if missing:
        raise ValueError(
            f"{Path(xray.source).name}: the header has no {', '.join(missing)} for a start pose; give "
            "--primary-angle, --secondary-angle and --sod, or start from --init-pose or --landmarks"
        )
    check_angles({"primary angle": xray.primary_angle, "secondary angle": xray.secondary_angle},
                 Path(xray.source).name, xray.geometry_sources.get("angles"))
    info = {"method": "dicom", "isocenter_ras": iso.tolist(), "isocenter_from": "user" if given else "volume centre",
            "primary_angle": xray.primary_angle, "secondary_angle": xray.secondary_angle, "sod": xray.sod,
            "patient_position": xray.patient_position}
    return StartPose(pose_from_xray(xray, iso), info)


def _check_pose_matches(pose: CameraPose, intrinsics: Intrinsics, name: str, source: Path) -> list[str]:
    """Refuse a pose JSON for another image; warn when its intrinsics differ from the header's."""
    given = (pose.intrinsics.width, pose.intrinsics.height)
    if given != (intrinsics.width, intrinsics.height):
        raise ValueError(
            f"{name}: the pose JSON {source.name} is for a {given[0]}×{given[1]} image but the X-ray is "
            f"{intrinsics.width}×{intrinsics.height}; give a pose registered on this X-ray (or start from the header)"
        )
    if pose.intrinsics.mirrored != intrinsics.mirrored:
        raise ValueError(f"{name}: the pose JSON {source.name} is for a "
                         f"{'mirrored' if pose.intrinsics.mirrored else 'non-mirrored'} image, unlike the X-ray")
    a, b = pose.intrinsics, intrinsics
    if max(abs(a.fx - b.fx), abs(a.fy - b.fy), abs(a.cx - b.cx), abs(a.cy - b.cy)) > 0.01 * abs(b.fy):
        return [f"the intrinsics of {source.name} differ from the X-ray header's; the header's are used"]
    return []


def _from_pose_file(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    if settings.init_pose is None:
        raise ValueError("init 'pose' needs a pose JSON (--init-pose)")
    source = per_input_file(settings.init_pose, stem, "pose JSON")
    # The image size is the X-ray's: a file with only the shared keys is complete; another declared size is refused.
    read = load_pose_file(source, (xray.intrinsics.width, xray.intrinsics.height))
    warnings = _check_pose_matches(read.pose, xray.intrinsics, Path(xray.source).name, source)
    info = {"method": "pose", "file": source.name, "handedness": read.handedness, "mirrored": read.mirrored}
    return StartPose(read.pose.camera_to_world, info, warnings)


def _from_landmarks(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    if settings.landmarks is None:
        raise ValueError("init 'landmarks' needs a landmarks JSON (--landmarks)")
    source = per_input_file(settings.landmarks, stem, "landmarks")
    marks = read_landmarks(source)
    fit = solve_pnp(marks.points_2d, marks.points_3d, xray.intrinsics)
    check_fit(fit, xray.intrinsics, source.name)  # a fit far above the clicking noise: pairs that do not match
    warnings = list(fit.warnings)
    info = {"method": "landmarks", "file": source.name, "points": len(marks.points_2d), "rms_px": fit.rms_px,
            "start": fit.method}
    return StartPose(fit.camera_to_world, info, warnings)


def _load_network(settings: PipelineSettings, volume, target: RegistrationTarget) -> None:
    from ..learning.inference import PatientFrame
    from ..learning.model_files import check_modality, load_model

    if settings.model is None:
        raise ValueError("init 'model' needs a trained model folder (--model)")
    target.model = load_model(settings.model, settings.device)
    check_modality(target.model.metadata, target.summary["modality"], what=f"the model {Path(settings.model).name}")
    target.frame = PatientFrame.from_volume(volume)
    target.summary["model"] = Path(settings.model).name


def start_similarity(xray: XrayImage, target: RegistrationTarget, camera_to_world: torch.Tensor) -> float:
    """NCC of the DRR at ``camera_to_world`` and the X-ray, within its exposed pixels, on a coarse grid."""
    image, small, mask = stage_inputs(torch.as_tensor(np.asarray(xray.pixels, dtype=np.float32)), xray.intrinsics,
                                      torch.as_tensor(np.asarray(xray.mask, dtype=np.float32)), SIMILARITY_GRID)
    pose = torch.as_tensor(camera_to_world, dtype=torch.float32).reshape(1, 4, 4).to(target.drr.device)
    with torch.no_grad():
        drr = render(target.drr, pose, small).cpu().float()
    value = float(ncc(drr, image, mask=mask)) if mask.sum() > 16 else float("nan")
    return value if math.isfinite(value) else -1.0


def _from_network(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    from ..learning.inference import predict_pose

    pose = predict_pose(target.model, xray.pixels, xray.mask, xray.intrinsics, target.frame, device=settings.device,
                        allow_other_volume=settings.allow_other_volume)
    start = StartPose(pose, {"method": "model", "model": Path(settings.model).name})
    return _with_header_fallback(start, xray, settings, target, stem)


def _with_header_fallback(start: StartPose, xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget,
                          stem: str) -> StartPose:
    """The network's start, or the header's where the network's looks poor and the header's is better."""
    own = start_similarity(xray, target, start.camera_to_world)
    record = {"similarities": {"model": round(own, 4)}, "threshold": NETWORK_FALLBACK_NCC, "chosen": "model"}
    start.info["fallback"] = record
    usable = all(getattr(xray, n) is not None for n in ("primary_angle", "secondary_angle", "sod"))
    if own >= NETWORK_FALLBACK_NCC or not usable:
        record["header"] = "not needed" if own >= NETWORK_FALLBACK_NCC else "no header geometry"
        return start
    try:
        header = _from_header(xray, settings, target, stem)
    except ValueError as err:  # implausible header angles: keep the network's start
        record["header"] = f"unusable: {err}"
        return start
    theirs = start_similarity(xray, target, header.camera_to_world)
    record["similarities"]["header"] = round(theirs, 4)
    record["header"] = "tried"
    if theirs <= own:
        return start
    record["chosen"] = "header"
    info = {**start.info, "header_start": header.info}
    why = (f"the network's start looked poor (NCC {own:.2f} < {NETWORK_FALLBACK_NCC}); the header's start "
           f"(NCC {theirs:.2f}) is used")
    return StartPose(header.camera_to_world, info, [*start.warnings, *header.warnings, why])


def _from_carm(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    if settings.carm is None or len(settings.carm) != 6:
        raise ValueError("init 'carm' needs the six C-arm parameters (--carm ALPHA BETA GAMMA X Y Z)")
    given = settings.isocenter is not None
    iso = torch.as_tensor(settings.isocenter if given else target.center, dtype=torch.float64)
    check_angles(dict(zip(("α", "β", "γ"), settings.carm[:3], strict=True)), "--carm")
    params = torch.as_tensor(settings.carm, dtype=torch.float64)
    info = {"method": "carm", "carm": params.tolist(), "orientation": settings.carm_orientation,
            "isocenter_ras": iso.tolist(), "isocenter_from": "user" if given else "volume centre"}
    return StartPose(carm_pose(params, settings.carm_orientation, iso), info)


STARTS: dict[str, StartMethod] = {
    "dicom": StartMethod(_from_header),
    "pose": StartMethod(_from_pose_file),
    "landmarks": StartMethod(_from_landmarks),
    "model": StartMethod(_from_network, prepare=_load_network),
    "carm": StartMethod(_from_carm),
}


def start_method(name: str) -> StartMethod:
    if name not in STARTS:
        raise ValueError(f"unknown initialisation {name!r}; expected one of {tuple(STARTS)}")
    return STARTS[name]


def find_start(xray: XrayImage, settings: PipelineSettings, target: RegistrationTarget, stem: str) -> StartPose:
    """The start pose of ``xray`` by ``settings.init``; its record includes the pose itself."""
    start = start_method(settings.init).find(xray, settings, target, stem)
    start.camera_to_world = as_pose(start.camera_to_world, f"{Path(xray.source).name}: the start pose").reshape(4, 4).cpu()
    start.info["camera_to_world"] = start.camera_to_world.tolist()
    return start
