"""Import of the reference implementation's ``.pth`` checkpoints into model folders, without running pickled code.

xvr's checkpoints are ``torch.save`` pickles. :func:`read_xvr_checkpoint` reads them with a
restricted unpickler that admits tensors, storages, plain containers, dates and paths (paths
become strings) and refuses everything else before it can run — a pickle can otherwise execute
arbitrary code on load. :func:`import_xvr` turns one into a model folder
(:mod:`xvrcore.learning.model_files`) with our architecture, pose decoding and canonical camera.
"""

from __future__ import annotations

import collections
import datetime
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from ..geometry.carm import from_diffdrr
from ._files import file_sha256
from .model_files import CheckpointError, camera_metadata, save_model
from .network import ArchitectureSpec, InputSpec, PoseSpec

__all__ = ["CheckpointSecurityError", "import_xvr", "read_xvr_checkpoint", "xvr_metadata"]


class CheckpointSecurityError(CheckpointError):
    """A pickle asked for something other than tensors and plain values."""


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
            "file_sha256": file_sha256(pth),
            "date": date.isoformat() if isinstance(date, (datetime.date, datetime.datetime)) else None,
            "config": {k: config[k] for k in _XVR_KEYS if k in config},
        },
    }
    return save_model(out_dir, model, metadata)
