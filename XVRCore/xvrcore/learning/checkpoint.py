"""Model and training checkpoints in a format that never unpickles, and import of xvr ``.pth`` files.

A **model folder** holds two files, each written atomically:

* ``model.safetensors`` — the network's weights (keys ``backbone.*``, ``xyz_regression.*``,
  ``rot_regression.*``, the reference implementation's names);
* ``model.json`` — everything needed to use them: architecture, pose decoding, canonical camera,
  input normalisation, pose sampling, renderer settings, the SHA-256 fingerprint of the CT it was
  trained on (voxels + affine), software versions, and the SHA-256 of the weights file (a
  half-replaced pair is detected and refused).

A **training run** (``xvrcore train --output DIR``) holds the latest model files plus
``checkpoint-NNNNNNN/`` folders with the model and ``state.safetensors`` + ``state.json``
(optimizer, scheduler, iteration, random states), each folder written under a temporary name and
renamed into place, and ``LATEST`` naming the newest complete one.

xvr's checkpoints are ``torch.save`` pickles. :func:`read_xvr_checkpoint` reads them with a
restricted unpickler that admits tensors, storages, plain containers, dates and paths (paths
become strings) and refuses everything else before it can run — a pickle can otherwise execute
arbitrary code on load.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import pickle
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..geometry.camera import Detector, Intrinsics
from ..geometry.carm import from_diffdrr
from ..io.atomic import atomic_write, atomic_write_text, read_json
from .network import ArchitectureSpec, InputSpec, PoseModel, PoseSpec

__all__ = [
    "FORMAT",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointSecurityError",
    "LoadedModel",
    "camera_metadata",
    "import_xvr",
    "latest_checkpoint",
    "load_model",
    "read_xvr_checkpoint",
    "save_model",
    "volume_fingerprint",
]

FORMAT = "xvrcore-pose-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LATEST = "LATEST"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """A model or checkpoint cannot be used; the message says why."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another CT or another geometry."""


class CheckpointSecurityError(CheckpointError):
    """A pickle asked for something other than tensors and plain values."""


# ---- fingerprints and small helpers ------------------------------------------------------------------


def volume_fingerprint(volume) -> str:
    """SHA-256 of a volume's voxels (as little-endian float32, C order), shape and affine.

    The affine is rounded to 1e-4 mm so that float32/float64 round trips of the same file agree.
    """
    digest = hashlib.sha256(b"xvrcore-volume-v1")
    data = np.ascontiguousarray(volume.data, dtype="<f4")
    digest.update(repr(tuple(data.shape)).encode())
    digest.update(np.round(np.asarray(volume.affine, dtype=np.float64), 4).astype("<f8").tobytes())
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or strided memory: give every tensor its own contiguous copy.
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, str(tmp), metadata=metadata))


def _load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


# ---- model folders -------------------------------------------------------------------------------------


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
        """4×4 frame correction (centred coordinates) from the network's frame to its CT's."""
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
    _save_tensors(weights, model.regressor.state_dict(), {"format": FORMAT})
    meta = {
        **metadata,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": metadata["architecture"],
        "pose": model.spec.to_dict(),
        "software": software_versions(),
        "weights": {"file": MODEL_WEIGHTS, "sha256": _file_sha256(weights)},
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
    if _file_sha256(weights) != meta["weights"]["sha256"]:
        raise CheckpointError(f"{folder}: {weights.name} does not match {MODEL_JSON} (interrupted copy?); refusing it")
    try:
        arch = ArchitectureSpec.from_dict(meta["architecture"])
        model = arch.build(PoseSpec.from_dict(meta["pose"]))
        model.regressor.load_state_dict(_load_tensors(weights), strict=True)
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


# ---- training state ------------------------------------------------------------------------------------


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str):
    """JSON tree of ``obj`` with tensors moved into ``tensors`` (keys keep their types)."""
    if torch.is_tensor(obj):
        tensors[path] = obj
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[[type(k).__name__, k], _encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]):
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {({"int": int, "str": str}[t])(k): _decode(v, tensors) for (t, k), v in tree["__dict__"]}
        if "__list__" in tree:
            return [_decode(v, tensors) for v in tree["__list__"]]
        if "__tuple__" in tree:
            return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    return tree


def save_state(directory: Path, state: dict) -> None:
    """Write a nested dict of tensors and plain values as safetensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    _save_tensors(directory / STATE_TENSORS, tensors)
    atomic_write_text(directory / STATE_JSON, json.dumps(tree) + "\n")


def load_state(directory: Path) -> dict:
    tree = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    return _decode(tree, _load_tensors(directory / STATE_TENSORS))


def write_checkpoint(output: Path, iteration: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Write a checkpoint folder atomically (temporary folder, rename) and point ``LATEST`` at it."""
    output.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{iteration:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-checkpoint-", dir=output))
    try:
        write(tmp)
        final = output / name
        if final.exists():  # the same iteration written again (e.g. cancelled right after a save)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(output / LATEST, name + "\n")
    for old in _checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return output / name


def _checkpoints(output: Path) -> list[Path]:
    found = [p for p in output.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name)] if output.is_dir() else []
    return sorted(found, key=lambda p: int(_CHECKPOINT_RE.match(p.name).group(1)))


def latest_checkpoint(output: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a training run, or None."""
    output = Path(output)
    pointer = output / LATEST
    if pointer.is_file():
        candidate = output / pointer.read_text(encoding="utf-8").strip()
        if (candidate / STATE_JSON).is_file():
            return candidate
    complete = [p for p in _checkpoints(output) if (p / STATE_JSON).is_file() and (p / MODEL_JSON).is_file()]
    return complete[-1] if complete else None


# ---- xvr .pth import (restricted unpickling) ----------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise CheckpointSecurityError("malformed tensor record in the checkpoint")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    return data


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise CheckpointSecurityError(f"unexpected byte encoding {encoding!r} in the checkpoint")
    return text.encode("latin1")


def _path_string(*parts) -> str:
    return str(PurePosixPath(*[str(p) for p in parts]))


def _windows_path_string(*parts) -> str:
    return str(PureWindowsPath(*[str(p) for p in parts]))


_PATH_CLASSES = ("Path", "PosixPath", "PurePath", "PurePosixPath")
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    **{(module, name): _path_string for module in ("pathlib", "pathlib._local") for name in _PATH_CLASSES},
    **{(module, name): _windows_path_string for module in ("pathlib", "pathlib._local") for name in ("WindowsPath", "PureWindowsPath")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and reads storages from the zip archive."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self._archive, self._prefix, self._source = archive, prefix, source
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CheckpointSecurityError(
            f"refusing to load {self._source}: it asks to import {module}.{name}, which is not a tensor or a plain "
            "value (a pickle can run code this way). Only load checkpoints from sources you trust; nothing was executed."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointSecurityError(f"refusing to load {self._source}: unexpected persistent record {type(pid).__name__}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:  # tensors that share a storage share it here too
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            dtype = storage_type.dtype
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() != int(numel):
                raise CheckpointError(f"{self._source}: storage {key} holds {flat.numel()} values, expected {numel}")
            self._storages[key] = flat
        return self._storages[key]


def read_xvr_checkpoint(path: str | Path) -> dict:
    """The dict inside an xvr ``.pth`` file, read with the restricted unpickler (paths become strings)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a PyTorch zip checkpoint (legacy or raw pickles are not read)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as fh:
            try:
                data = _RestrictedUnpickler(fh, archive, prefix, path.name).load()
            except CheckpointError:
                raise
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as exc:
                raise CheckpointError(f"{path}: damaged or unsupported checkpoint: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


# Config keys of xvr checkpoints that describe the network and its geometry (paths and other keys,
# which may name patients, are not copied).
_XVR_KEYS = (
    "model_name", "norm_layer", "parameterization", "convention", "height", "sdd", "delx", "orientation",
    "reverse_x_axis", "unit_conversion_factor", "renderer", "p_augmentation", "lr", "batch_size",
    "n_total_itrs", "weight_geo", "weight_ncc",
    *[f"{p}{m}" for p in ("alpha", "beta", "gamma", "tx", "ty", "tz") for m in ("min", "max")],
)


def _xvr_state_dict(ckpt: dict, source: str) -> dict[str, torch.Tensor]:
    state = ckpt.get("model_state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: no model_state_dict in the checkpoint")
    clean = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel / torch.compile wrappers
            key = key.removeprefix(prefix)
        if not torch.is_tensor(value):
            raise CheckpointError(f"{source}: model_state_dict entry {key} is not a tensor")
        clean[key] = value.to(torch.float32) if value.is_floating_point() else value
    return clean


def xvr_metadata(config: dict, source: str) -> tuple[ArchitectureSpec, PoseSpec, dict]:
    """Our architecture, pose decoding and camera for an xvr checkpoint's ``config``."""
    missing = [k for k in ("model_name", "parameterization", "height", "sdd", "delx", "orientation") if k not in config]
    if missing:
        raise CheckpointError(f"{source}: config lacks {', '.join(missing)}")
    norm = config.get("norm_layer") or "batchnorm"
    if norm != "groupnorm":
        raise CheckpointError(f"{source}: norm_layer {norm!r} is not supported (GroupNorm networks only)")
    if config["model_name"] not in ("resnet18", "resnet34"):
        raise CheckpointError(f"{source}: backbone {config['model_name']!r} is not supported (resnet18, resnet34)")
    if config["parameterization"] == "se3_log_map":
        raise CheckpointError(f"{source}: the se3_log_map parameterization is not supported")
    arch = ArchitectureSpec(config["model_name"], 64)
    orientation = str(config["orientation"]).upper()
    spec = PoseSpec(
        parameterization=config["parameterization"],
        convention=config.get("convention") or "ZXY",
        orientation=orientation,
        translation_offset=(0.0, 0.0, 0.0),
        translation_scale=float(config.get("unit_conversion_factor") or 1.0),
    )
    _, mirrored = from_diffdrr(torch.eye(4, dtype=torch.float64), orientation, bool(config.get("reverse_x_axis", False)))
    camera = camera_metadata(float(config["sdd"]), int(config["height"]), float(config["delx"]), mirrored)
    return arch, spec, camera


def import_xvr(pth: str | Path, out_dir: str | Path) -> Path:
    """Convert an xvr ``.pth`` checkpoint into a model folder; returns the folder."""
    pth = Path(pth)
    ckpt = read_xvr_checkpoint(pth)
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{pth.name}: no config in the checkpoint")
    arch, spec, camera = xvr_metadata(config, pth.name)
    model = arch.build(spec)
    try:
        model.regressor.load_state_dict(_xvr_state_dict(ckpt, pth.name), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{pth.name}: weights do not fit a {arch.name} with GroupNorm: {exc}") from None
    date = ckpt.get("date")
    metadata = {
        "architecture": arch.to_dict(),
        "camera": camera,
        "input": InputSpec().to_dict(),
        "volume": None,  # xvr does not record its CT; poses are about the centre of the CT used at inference
        "frame": {"correction": None},
        "training": {"kind": "imported", "iteration": ckpt.get("itr", ckpt.get("epoch"))},
        "source": {
            "kind": "xvr",
            "file": pth.name,
            "file_sha256": _file_sha256(pth),
            "date": date.isoformat() if isinstance(date, (datetime.date, datetime.datetime)) else None,
            "config": {k: config[k] for k in _XVR_KEYS if k in config},
        },
    }
    return save_model(out_dir, model, metadata)
