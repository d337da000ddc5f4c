"""The state of a training run on disk: checkpoint folders that resume a run exactly, never unpickled.

A training run (``xvrcore train --output DIR``) holds the latest model files
(:mod:`xvrcore.learning.model_files`) plus ``checkpoint-NNNNNNN/`` folders with the model and
``state.safetensors`` + ``state.json`` (optimizer, iteration, history, random state), each folder
written under a temporary name and renamed into place, and ``LATEST`` naming the newest complete one.

The state is a nested tree of dicts, lists, tuples, plain values and tensors: the tensors go to the
safetensors file, the tree (with the types of dict keys and of tuples) to the JSON file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_write_text
from ._files import load_tensors, save_tensors
from .model_files import MODEL_JSON

__all__ = [
    "LATEST",
    "STATE_JSON",
    "STATE_TENSORS",
    "checkpoint_name",
    "latest_checkpoint",
    "load_state",
    "save_state",
    "write_checkpoint",
]

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LATEST = "LATEST"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


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
    """The tree :func:`save_state` wrote (tensors on the CPU)."""
    tree = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    return _decode(tree, load_tensors(directory / STATE_TENSORS))


def write_checkpoint(output: Path, iteration: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Write a checkpoint folder atomically (temporary folder, rename) and point ``LATEST`` at it."""
    output.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(iteration)
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
