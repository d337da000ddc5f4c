"""The state of a training run on disk: checkpoint folders that resume a run exactly, never unpickled.

A training run (``xvrcore train --output DIR``) holds the latest model files
(:mod:`xvrcore.learning.model_files`) plus ``checkpoint-NNNNNNN/`` folders with the model and
``state.safetensors`` + ``state.json`` (optimizer, iteration, history, random state), each folder
written under a temporary name and renamed into place, and ``LATEST`` naming the newest complete one.

A checkpoint is one unit: its folder appears complete or not at all. A kill while one is written
leaves its temporary folder (``.tmp-checkpoint-<pid>@<host>-…``); :func:`clean_stale_temporaries`
removes those whose process is gone — never one that a live run on this machine is still writing.
A full disk while one is written removes the temporary, keeps the previous checkpoint and
``LATEST`` untouched, and raises the ``OSError`` naming the checkpoint
(:func:`xvrcore.io.atomic.is_disk_full`).

The state is a nested tree of dicts, lists, tuples, plain values and tensors: the tensors go to the
safetensors file, the tree (with the types of dict keys and of tuples) to the JSON file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_write_text, is_disk_full, read_json
from ..io.processes import process_alive
from ._files import load_tensors, save_tensors
from .model_files import MODEL_JSON, CheckpointError

__all__ = [
    "LATEST",
    "STATE_JSON",
    "STATE_TENSORS",
    "checkpoint_name",
    "clean_stale_temporaries",
    "latest_checkpoint",
    "load_state",
    "save_state",
    "write_checkpoint",
]

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LATEST = "LATEST"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-checkpoint-"
_TMP_RE = re.compile(r"^\.tmp-checkpoint-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9._]*)-)?")


def checkpoint_name(iteration: int) -> str:
    """Folder name of the checkpoint taken after ``iteration`` iterations."""
    return f"checkpoint-{iteration:07d}"


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
    save_tensors(directory / STATE_TENSORS, tensors)
    atomic_write_text(directory / STATE_JSON, json.dumps(tree) + "\n")


def load_state(directory: Path) -> dict:
    """The tree :func:`save_state` wrote (tensors on the CPU); a damaged one raises :class:`CheckpointError`."""
    tree = read_json(directory / STATE_JSON, CheckpointError, "training state")
    tensors = load_tensors(directory / STATE_TENSORS, CheckpointError)
    try:
        state = _decode(tree, tensors)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{directory / STATE_JSON}: damaged training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{directory / STATE_JSON}: damaged training state (not a dict)")
    return state


def write_checkpoint(output: Path, iteration: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Write a checkpoint folder atomically (temporary folder, rename) and point ``LATEST`` at it."""
    output.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(iteration)
    final = output / name
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}@{_host()}-", dir=output))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; checkpoints are ordinary folders
        write(tmp)
        _move_into_place(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc) and isinstance(exc, OSError):
            exc.filename = str(final)  # the checkpoint the disk had no room for, not a file of its temporary
        raise
    atomic_write_text(output / LATEST, name + "\n")
    for old in _checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (the same iteration saved again) is set aside
    first and removed after, so there is always a complete folder of that name or a complete one beside."""
    if not final.exists():
        os.rename(tmp, final)
        return
    aside = tmp.with_name(tmp.name + "-replaced")
    os.rename(final, aside)
    os.rename(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def clean_stale_temporaries(output: str | Path) -> list[Path]:
    """Remove the temporary checkpoint folders that interrupted runs left in ``output``; returns them.

    A temporary is stale when its process (the pid and host in its name) is gone; those of live
    processes, and those of other machines (which this one cannot check), are kept. Temporaries
    without an owner in their name were left by older versions and are removed.
    """
    output, removed = Path(output), []
    if not output.is_dir():
        return removed
    for path in sorted(output.iterdir()):
        owner = _TMP_RE.match(path.name)
        if owner is None or not path.is_dir() or path.is_symlink():
            continue
        if owner["pid"] is not None and (owner["host"] != _host() or process_alive(int(owner["pid"]))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _checkpoints(output: Path) -> list[Path]:
    found = [p for p in output.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name)] if output.is_dir() else []
    return sorted(found, key=lambda p: int(_CHECKPOINT_RE.match(p.name).group(1)))


def latest_checkpoint(output: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a training run, or None (``LATEST`` may only name one of them)."""
    output = Path(output)
    complete = [p for p in _checkpoints(output) if (p / STATE_JSON).is_file() and (p / MODEL_JSON).is_file()]
    try:
        named = (output / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = None
    chosen = [p for p in complete if p.name == named]
    return chosen[0] if chosen else (complete[-1] if complete else None)
