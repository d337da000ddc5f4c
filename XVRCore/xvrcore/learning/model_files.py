"""Model folders: a network's weights and everything needed to use them, in a format that never unpickles.

A **model folder** holds two files, each written atomically:

* ``model.safetensors`` — the network's weights (keys ``backbone.*``, ``xyz_regression.*``,
  ``rot_regression.*``, the reference implementation's names);
* ``model.json`` — everything needed to use them: architecture, pose decoding, canonical camera,
  input normalisation, pose sampling, renderer settings, the fingerprint of the CT it was trained on
  (:func:`xvrcore.learning.fingerprint.volume_fingerprint`), software versions, and the SHA-256 of the
  weights file (a half-replaced pair is detected and refused).

:func:`check_volume` and :func:`check_camera` refuse a model for another CT or another detector
geometry. Camera conventions: :mod:`xvrcore.conventions`.

Every field of ``model.json`` is checked for its type and range (:func:`check_metadata`), the weights
file must lie inside the model folder, and the weights must have the shapes of the described
network (:func:`check_tensors_fit`, against a network built without memory first): a damaged or
forged model is refused in one line naming its file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..geometry.camera import Detector, Intrinsics
from ..io.atomic import FileGroup, read_json
from ._files import file_sha256, inside_folder, load_tensors, tensor_bytes
from ._model_json import INTRINSICS, check_fields
from .network import ArchitectureSpec, InputSpec, PoseModel, PoseSpec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadedModel",
    "camera_metadata",
    "check_camera",
    "check_metadata",
    "check_modality",
    "check_tensors_fit",
    "check_volume",
    "load_model",
    "read_metadata",
    "save_model",
    "software_versions",
]

FORMAT = "xvrcore-pose-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"


class CheckpointError(ValueError):
    """A model or checkpoint cannot be used; the message says why."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another CT or another geometry."""


def software_versions() -> dict:
    return {"xvrcore": __version__, "torch": torch.__version__.split("+")[0], "python": platform.python_version()}


def camera_metadata(sdd: float, size: int, pixel_spacing: float, mirrored: bool) -> dict:
    """The canonical camera a model sees: a square detector with its principal point in the centre."""
    k = Detector(sdd, size, size, pixel_spacing, pixel_spacing, mirrored=mirrored).intrinsics()
    return {
        "sdd": float(sdd),
        "size": int(size),
        "pixel_spacing": float(pixel_spacing),
        "mirrored": bool(mirrored),
        "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy, "width": k.width, "height": k.height},
    }


@dataclass
class LoadedModel:
    """A network with its metadata, ready for inference or finetuning."""

    model: PoseModel
    metadata: dict
    path: Path | None = None

    @property
    def intrinsics(self) -> Intrinsics:
        k = self.metadata["camera"]["intrinsics"]
        return Intrinsics(**{name: k[name] for name in INTRINSICS})

    @property
    def pose_spec(self) -> PoseSpec:
        return self.model.spec

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.metadata["input"])

    @property
    def volume(self) -> dict | None:
        return self.metadata.get("volume")

    @property
    def correction(self) -> torch.Tensor:
        """``(4, 4)`` float64 frame correction (centred coordinates) from the network's frame to its CT's."""
        corr = self.metadata.get("frame", {}).get("correction")
        return torch.eye(4, dtype=torch.float64) if corr is None else torch.tensor(corr, dtype=torch.float64)

    @property
    def kind(self) -> str:
        return self.metadata.get("training", {}).get("kind", "patient-specific")


def save_model(directory: str | Path, model: PoseModel, metadata: dict) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (which records the weights' hash).

    Both files are complete on disk before either replaces its old version (:class:`~xvrcore.io.atomic.FileGroup`),
    so a full disk leaves the old pair; a kill while they are renamed leaves no ``model.json``, never
    a mixed pair (which the hash would refuse anyway).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = tensor_bytes(model.regressor.state_dict(), {"format": FORMAT})
    meta = {
        **metadata,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": metadata["architecture"],
        "pose": model.spec.to_dict(),
        "software": software_versions(),
        "weights": {"file": MODEL_WEIGHTS, "sha256": hashlib.sha256(weights).hexdigest()},
    }
    text = json.dumps(meta, indent=1, default=_json_default) + "\n"
    with FileGroup() as files:  # model.json last: it marks the pair as complete
        files.write(directory / MODEL_WEIGHTS, lambda tmp: tmp.write_bytes(weights))
        files.write(directory / MODEL_JSON, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        files.commit()
    return directory


def _json_default(value: Any):
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _metadata_file(path: Path) -> Path:
    """The ``model.json`` that ``path`` (a model folder or the JSON file itself) stands for."""
    if path.is_dir():
        meta_path = path / MODEL_JSON
        if not meta_path.is_file():
            raise CheckpointError(f"no model found in {path}: expected {MODEL_JSON} and {MODEL_WEIGHTS} in it")
        return meta_path
    if path.suffix == ".pth":
        raise CheckpointError(f"{path} is an xvr checkpoint (pickle); convert it first: xvrcore model import-xvr {path} OUT_DIR")
    if not path.exists():
        raise CheckpointError(f"no model found at {path}: expected a folder with {MODEL_JSON} and {MODEL_WEIGHTS}")
    if path.suffix != ".json":
        what = "an empty file" if path.is_file() and path.stat().st_size == 0 else "a file"
        raise CheckpointError(f"{path} is {what}, not a model folder: expected a folder with {MODEL_JSON} and {MODEL_WEIGHTS}")
    return path


def _read(path: str | Path) -> tuple[dict, Path]:
    meta_path = _metadata_file(Path(path))
    meta = read_json(meta_path, CheckpointError, "model metadata JSON")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an xvrcore model (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    check_metadata(meta, meta_path)
    return meta, meta_path


def check_metadata(meta: dict, source: Path) -> None:
    """Refuse ``model.json`` (read from ``source``) unless every field has a usable type and value."""
    check_fields(meta, source, CheckpointError, FORMAT_VERSION)


def read_metadata(path: str | Path) -> tuple[dict, Path]:
    """``model.json`` of a model folder (or the JSON file itself), checked field by field, and its folder."""
    meta, meta_path = _read(path)
    return meta, meta_path.parent


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder (no unpickling): the weights must match the hash recorded beside them
    and have the shapes of the described network."""
    meta, meta_path = _read(path)
    folder = meta_path.parent
    weights = inside_folder(folder, meta["weights"]["file"], CheckpointError, str(meta_path), "weights.file", beside=meta_path)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: the weights file named by {meta_path.name} is missing")
    if file_sha256(weights) != meta["weights"]["sha256"]:
        raise CheckpointError(f"{weights}: does not match the SHA-256 in {meta_path.name} (interrupted copy?); refusing it")
    tensors = load_tensors(weights, CheckpointError)
    arch, pose = _network_specs(meta)
    with torch.device("meta"):  # the shapes the network needs, without allocating it
        expected = arch.build(pose).regressor.state_dict()
    check_tensors_fit(expected, tensors, str(weights))
    model = arch.build(pose)
    model.regressor.load_state_dict(tensors, strict=True)
    return LoadedModel(model.to(device).eval(), meta, folder)


def check_tensors_fit(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse ``tensors`` unless they are exactly the network's (names, shapes, kinds) and finite."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: lacks {len(missing)} tensor(s) of the network (first: {missing[0]})")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: holds {len(extra)} tensor(s) the network does not have (first: {extra[0]})")
    for name, want in expected.items():
        have = tensors[name]
        if tuple(have.shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: tensor {name} has shape {tuple(have.shape)}, the network needs {tuple(want.shape)}")
        if have.is_floating_point() != want.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name} holds {have.dtype} values, the network needs {want.dtype}")
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise CheckpointError(f"{source}: tensor {name} holds non-finite values (NaN or Inf)")


def _network_specs(meta: dict) -> tuple[ArchitectureSpec, PoseSpec]:
    """The network ``meta`` describes (its fields checked by :func:`check_metadata`)."""
    a, p = meta["architecture"], meta["pose"]
    arch = ArchitectureSpec(a["name"], a["width"], a.get("norm") or "groupnorm", a.get("in_channels") or 1)
    pose = PoseSpec(p["parameterization"], p["convention"], p["orientation"],
                    tuple(float(v) for v in p["translation_offset"]), float(p["translation_scale"]))
    return arch, pose


def check_volume(meta: dict, fingerprint: str | None, *, allow_other: bool = False, what: str = "this model") -> None:
    """Refuse a model trained on another CT (unless finetuning or the model is not CT-specific)."""
    volume = meta.get("volume")
    if allow_other or fingerprint is None or volume is None or not volume.get("sha256"):
        return
    if meta.get("training", {}).get("kind") == "patient-agnostic":
        return
    if volume["sha256"] != fingerprint:
        raise CheckpointMismatchError(
            f"{what} was trained on another CT (fingerprint {volume['sha256'][:12]}…, this CT {fingerprint[:12]}…); "
            "train a model for this CT, or finetune this one with --init-from"
        )


def check_modality(meta: dict, modality: str, what: str = "this model") -> None:
    """Refuse a model trained on the other modality: a CT model has seen anatomy, an MRA model vessels only.

    xvrcore models from before the modality was recorded were all trained on CTs; an imported xvr
    checkpoint does not say, so it is not checked.
    """
    trained = meta.get("modality", "ct" if "created_by" in meta else None)
    if trained is not None and trained != modality:
        raise CheckpointMismatchError(
            f"{what} was trained on {trained.upper()} volumes and cannot register to an {modality.upper()} one; "
            f"train a model on this volume, or give --modality {trained} if the volume is really one"
        )


def check_camera(meta: dict, camera: dict, what: str = "this checkpoint") -> None:
    """Refuse a checkpoint whose canonical camera differs from the requested one."""
    have = meta["camera"]
    for key in ("sdd", "size", "pixel_spacing", "mirrored"):
        a, b = have[key], camera[key]
        same = a == b if isinstance(a, (bool, int)) and not isinstance(a, float) else abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
        if not same:
            raise CheckpointMismatchError(f"{what} uses another detector geometry ({key} {a} vs {b}); start a new run")
