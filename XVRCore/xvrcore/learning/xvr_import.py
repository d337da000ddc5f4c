"""Import of the reference implementation's ``.pth`` checkpoints into model folders, without running pickled code.

xvr's checkpoints are ``torch.save`` pickles. :func:`read_xvr_checkpoint` reads them with a
restricted unpickler that admits tensors, storages, plain containers, dates and paths (paths
become strings) and refuses everything else before it can run — a pickle can otherwise execute
arbitrary code on load. Every tensor record is checked against its storage (size, stride and
offset inside it; the storage's bytes those its record declares), and all storages together may
not exceed what the file could hold, so a forged record or a zip bomb is refused before memory is
spent on it. :func:`import_xvr` turns one into a model folder (:mod:`xvrcore.learning.model_files`)
with our architecture, pose decoding and canonical camera.
"""

from __future__ import annotations

import collections
import datetime
import math
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from ..geometry.carm import ORIENTATIONS, from_diffdrr
from ._files import file_sha256
from .model_files import CheckpointError, camera_metadata, check_tensors_fit, save_model
from .network import PARAMETERIZATIONS, ArchitectureSpec, InputSpec, PoseSpec

__all__ = ["CheckpointSecurityError", "import_xvr", "read_xvr_checkpoint", "xvr_metadata"]


class CheckpointSecurityError(CheckpointError):
    """A pickle asked for something other than tensors and plain values."""


class _RecordError(Exception):
    """A record of the pickle does not describe real tensor data (forged or damaged); the reader names the file."""


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


def _indices(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise _RecordError(f"a tensor record with a {what} of {str(values)[:60]}")
    return tuple(values)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """A view of ``storage``, once its size, stride and offset are shown to stay inside it."""
    if not isinstance(storage, torch.Tensor):
        raise _RecordError("a tensor record without a storage")
    shape, strides, (start,) = _indices(size, "size"), _indices(stride, "stride"), _indices((offset,), "offset")
    if len(shape) != len(strides):
        raise _RecordError(f"a tensor record with size {shape} but stride {strides}")
    end = start + sum((n - 1) * st for n, st in zip(shape, strides, strict=True)) + 1 if all(shape) else 0
    if end > storage.numel():
        raise _RecordError(f"a tensor record (size {shape}, stride {strides}, offset {start}) that reaches past its "
                           f"storage of {storage.numel()} values")
    return storage.as_strided(shape, strides, start)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    if not isinstance(data, torch.Tensor):
        raise _RecordError("a parameter record without a tensor")
    return data


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding != "latin1":
        raise _RecordError(f"an unexpected byte encoding {encoding!r}")
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
    """Unpickler that resolves only allow-listed globals and reads storages from the zip archive.

    The bytes all storages may take are bounded by ``budget``: torch writes them uncompressed, so
    a record that asks for more than the file could hold (a zip bomb, a forged count) is refused
    before anything is read.
    """

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str, budget: int) -> None:
        super().__init__(file)
        self._archive, self._prefix, self._source, self._budget = archive, prefix, source, budget
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
            self._storages[key] = self._read_storage(str(key), storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel) -> torch.Tensor:
        (count,) = _indices((numel,), "storage size")
        name = f"{self._prefix}/data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise _RecordError(f"a storage record for {key}, which the archive lacks") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if info.file_size != count * itemsize:
            raise _RecordError(f"storage {key} holds {info.file_size} bytes, but its record says {count} values of {itemsize} bytes")
        self._budget -= info.file_size
        if self._budget < 0:
            raise _RecordError("tensors larger than the file could hold (a forged size or a zip bomb)")
        raw = self._archive.read(name)
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)


# What a damaged or forged pickle can raise while it is read (beyond the reader's own errors).
_DAMAGE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError,
           OverflowError, zipfile.BadZipFile, zlib.error)
# Stored tensors may expand this much beyond the file (torch stores them uncompressed; a re-zipped file compresses a little).
_EXPANSION = 4


def _check_checkpoint_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not an xvr .pth checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is an empty file, not an xvr .pth checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a PyTorch zip checkpoint (legacy or raw pickles are not read)")


def read_xvr_checkpoint(path: str | Path) -> dict:
    """The dict inside an xvr ``.pth`` file, read with the restricted unpickler (paths become strings)."""
    path = Path(path)
    _check_checkpoint_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = _unpickle(archive, path, _EXPANSION * os.path.getsize(path))
    except _RecordError as exc:
        raise CheckpointError(f"{path}: forged or damaged checkpoint: {exc}") from None
    except CheckpointError:
        raise
    except _DAMAGE as exc:
        raise CheckpointError(f"{path}: damaged or unsupported checkpoint: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def _unpickle(archive: zipfile.ZipFile, path: Path, budget: int):
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
    prefix = pickles[0].rsplit("/", 1)[0]
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    budget -= archive.getinfo(pickles[0]).file_size
    if budget < 0:
        raise _RecordError("a pickle larger than the file could hold (a zip bomb)")
    with archive.open(pickles[0]) as fh:
        return _RestrictedUnpickler(fh, archive, prefix, path.name, budget).load()


_EULER_CONVENTIONS = {a + b + c for a in "XYZ" for b in "XYZ" for c in "XYZ" if a != b and b != c}

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
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: model_state_dict has a key {str(key)[:60]!r} that is not a tensor name")
        for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel / torch.compile wrappers
            key = key.removeprefix(prefix)
        if not torch.is_tensor(value):
            raise CheckpointError(f"{source}: model_state_dict entry {key} is not a tensor")
        clean[key] = value.to(torch.float32) if value.is_floating_point() else value
    return clean


def _positive(config: dict, key: str, kind: type, source: str):
    """``config[key]`` as a positive finite ``kind`` (int or float), or an error naming the file and the key."""
    value = config[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (kind is int and value != int(value)):
        raise CheckpointError(f"{source}: config {key} must be a positive {'integer' if kind is int else 'number'}, not {str(value)[:60]!r}")
    return kind(value)


def _choice(config: dict, key: str, choices, source: str, default=None) -> str:
    value = config.get(key) or default
    if not isinstance(value, str) or value not in choices:
        raise CheckpointError(f"{source}: config {key} {str(value)[:60]!r} is not supported (one of {', '.join(sorted(choices))})")
    return value


def xvr_metadata(config: dict, source: str) -> tuple[ArchitectureSpec, PoseSpec, dict]:
    """Our architecture, pose decoding and camera for an xvr checkpoint's ``config``."""
    missing = [k for k in ("model_name", "parameterization", "height", "sdd", "delx", "orientation") if k not in config]
    if missing:
        raise CheckpointError(f"{source}: config lacks {', '.join(missing)}")
    norm = config.get("norm_layer") or "batchnorm"
    if norm != "groupnorm":
        raise CheckpointError(f"{source}: norm_layer {str(norm)[:60]!r} is not supported (GroupNorm networks only)")
    if config["model_name"] not in ("resnet18", "resnet34"):
        raise CheckpointError(f"{source}: backbone {str(config['model_name'])[:60]!r} is not supported (resnet18, resnet34)")
    if config["parameterization"] == "se3_log_map":
        raise CheckpointError(f"{source}: the se3_log_map parameterization is not supported")
    arch = ArchitectureSpec(config["model_name"], 64)
    orientation = _choice({"orientation": str(config["orientation"]).upper()}, "orientation", ORIENTATIONS, source)
    unit = config.get("unit_conversion_factor") or 1.0
    spec = PoseSpec(
        parameterization=_choice(config, "parameterization", PARAMETERIZATIONS, source),
        convention=_choice(config, "convention", _EULER_CONVENTIONS, source, default="ZXY"),
        orientation=orientation,
        translation_offset=(0.0, 0.0, 0.0),
        translation_scale=_positive({"unit_conversion_factor": unit}, "unit_conversion_factor", float, source),
    )
    _, mirrored = from_diffdrr(torch.eye(4, dtype=torch.float64), orientation, config.get("reverse_x_axis") is True)
    camera = camera_metadata(_positive(config, "sdd", float, source), _positive(config, "height", int, source),
                             _positive(config, "delx", float, source), mirrored)
    return arch, spec, camera


def _plain(value) -> bool:
    """Whether ``value`` is a JSON value (what a config entry may carry into model.json)."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


def import_xvr(pth: str | Path, out_dir: str | Path) -> Path:
    """Convert an xvr ``.pth`` checkpoint into a model folder; returns the folder."""
    pth = Path(pth)
    ckpt = read_xvr_checkpoint(pth)
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{pth.name}: no config in the checkpoint")
    arch, spec, camera = xvr_metadata(config, pth.name)
    model = arch.build(spec)
    weights = _xvr_state_dict(ckpt, pth.name)
    check_tensors_fit(model.regressor.state_dict(), weights, f"{pth.name} (model_state_dict)")
    model.regressor.load_state_dict(weights, strict=True)
    date, iteration = ckpt.get("date"), ckpt.get("itr", ckpt.get("epoch"))
    metadata = {
        "architecture": arch.to_dict(),
        "camera": camera,
        "input": InputSpec().to_dict(),
        "volume": None,  # xvr does not record its CT; poses are about the centre of the CT used at inference
        "frame": {"correction": None},
        "training": {"kind": "imported", "iteration": iteration if isinstance(iteration, int) and not isinstance(iteration, bool) else None},
        "source": {
            "kind": "xvr",
            "file": pth.name,
            "file_sha256": file_sha256(pth),
            "date": date.isoformat() if isinstance(date, (datetime.date, datetime.datetime)) else None,
            "config": {k: config[k] for k in _XVR_KEYS if k in config and _plain(config[k])},
        },
    }
    return save_model(out_dir, model, metadata)
