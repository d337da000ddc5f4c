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
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..geometry.camera import Detector, Intrinsics
from ..io.atomic import atomic_write_text, read_json
from ._files import file_sha256, load_tensors, save_tensors
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
        return Intrinsics(**self.metadata["camera"]["intrinsics"])

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
    """Write ``model.safetensors`` then ``model.json`` (which records the weights' hash)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / MODEL_WEIGHTS
    save_tensors(weights, model.regressor.state_dict(), {"format": FORMAT})
    meta = {
        **metadata,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": metadata["architecture"],
        "pose": model.spec.to_dict(),
        "software": software_versions(),
        "weights": {"file": MODEL_WEIGHTS, "sha256": file_sha256(weights)},
    }
    atomic_write_text(directory / MODEL_JSON, json.dumps(meta, indent=1, default=_json_default) + "\n")
    return directory


def _json_default(value: Any):
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_metadata(path: str | Path) -> tuple[dict, Path]:
    """``model.json`` of a model folder (or the JSON file itself), checked for our format."""
    path = Path(path)
    meta_path = path / MODEL_JSON if path.is_dir() else path
    if meta_path.suffix == ".pth":
        raise CheckpointError(f"{path} is an xvr checkpoint (pickle); convert it first: xvrcore model import-xvr {path} OUT_DIR")
    if not meta_path.is_file():
        raise CheckpointError(f"no model found at {path}: expected a folder with {MODEL_JSON} and {MODEL_WEIGHTS}")
    meta = read_json(meta_path, CheckpointError, "model metadata JSON")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an xvrcore model (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} was written by a newer xvrcore (format {meta['format_version']}); update xvrcore")
    return meta, meta_path.parent


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder (no unpickling): the weights must match the hash recorded beside them."""
    meta, folder = read_metadata(path)
    weights = folder / meta["weights"]["file"]
    if not weights.is_file():
        raise CheckpointError(f"{folder}: weights file {weights.name} is missing")
    if file_sha256(weights) != meta["weights"]["sha256"]:
        raise CheckpointError(f"{folder}: {weights.name} does not match {MODEL_JSON} (interrupted copy?); refusing it")
    try:
        arch = ArchitectureSpec.from_dict(meta["architecture"])
        model = arch.build(PoseSpec.from_dict(meta["pose"]))
        model.regressor.load_state_dict(load_tensors(weights), strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{folder}: weights do not fit the described network: {exc}") from None
    return LoadedModel(model.to(device).eval(), meta, folder)


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


def check_camera(meta: dict, camera: dict, what: str = "this checkpoint") -> None:
    """Refuse a checkpoint whose canonical camera differs from the requested one."""
    have = meta["camera"]
    for key in ("sdd", "size", "pixel_spacing", "mirrored"):
        a, b = have[key], camera[key]
        same = a == b if isinstance(a, (bool, int)) and not isinstance(a, float) else abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
        if not same:
            raise CheckpointMismatchError(f"{what} uses another detector geometry ({key} {a} vs {b}); start a new run")
