"""The fields of a model folder's ``model.json``, checked one by one for their types and ranges.

A hand-edited, damaged or forged file is refused in one line that names the file, the field and
what it must be (``model.json: camera.sdd must be a positive number, not 'far'``), before any
value reaches the network builder or the camera maths.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..geometry.carm import ORIENTATIONS
from ..volume.modality import MODALITIES
from .network import ARCHITECTURES, PARAMETERIZATIONS

INTRINSICS = ("fx", "fy", "cx", "cy", "width", "height")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_AXES = re.compile(r"^[XYZ]{3}$")


class _Fields:
    """Typed reads of one object of ``model.json``; every complaint names the file and the field."""

    def __init__(self, data: object, source: Path, where: str, error: type[Exception]) -> None:
        if not isinstance(data, dict):
            raise error(f"{source}: {where or 'the file'} must be a JSON object, not {_shown(data)}")
        self.data, self.source, self.where, self.error = data, source, where, error

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def value(self, key: str):
        if key not in self.data:
            raise self.error(f"{self.source}: no {self._name(key)!r} entry")
        return self.data[key]

    def bad(self, key: str, wanted: str) -> Exception:
        return self.error(f"{self.source}: {self._name(key)} must be {wanted}, not {_shown(self.data.get(key))}")

    def child(self, key: str) -> _Fields:
        return _Fields(self.value(key), self.source, self._name(key), self.error)

    def children(self, key: str) -> list[_Fields]:
        items = self.value(key)
        if not isinstance(items, list):
            raise self.bad(key, "a list of JSON objects")
        return [_Fields(v, self.source, f"{self._name(key)}[{i}]", self.error) for i, v in enumerate(items)]

    def number(self, key: str, positive: bool = False, nonzero: bool = False) -> float:
        v = self.value(key)
        if not _finite(v) or (positive and v <= 0) or (nonzero and v == 0):
            raise self.bad(key, "a positive number" if positive else "a non-zero number" if nonzero else "a finite number")
        return float(v)

    def integer(self, key: str, minimum: int, maximum: int | None = None) -> int:
        v = self.value(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum or (maximum is not None and v > maximum):
            raise self.bad(key, f"an integer from {minimum} to {maximum}" if maximum is not None else f"an integer of at least {minimum}")
        return v

    def text(self, key: str, choices=None, pattern: re.Pattern | None = None, wanted: str = "text") -> str:
        v = self.value(key)
        if not isinstance(v, str) or (choices is not None and v not in choices) or (pattern and not pattern.match(v)):
            raise self.bad(key, f"one of {sorted(choices)}" if choices is not None else wanted)
        return v

    def flag(self, key: str) -> bool:
        v = self.value(key)
        if not isinstance(v, bool):
            raise self.bad(key, "true or false")
        return v

    def numbers(self, key: str, shape: tuple[int, ...]) -> None:
        try:
            a = np.asarray(self.value(key), dtype=np.float64)
        except (TypeError, ValueError):
            a = None
        if a is None or a.shape != shape or not np.isfinite(a).all():
            raise self.bad(key, f"{'×'.join(map(str, shape))} finite numbers")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(meta: dict, source: Path, error: type[Exception], newest_version: int) -> None:
    """Raise ``error`` naming ``source`` and the field unless every field of ``meta`` is usable."""
    top = _Fields(meta, source, "", error)
    version = top.integer("format_version", 1)
    if version > newest_version:
        raise error(f"{source} was written by a newer xvrcore (format {version}); update xvrcore")
    weights = top.child("weights")
    weights.text("file", wanted="a file name")
    weights.text("sha256", pattern=_SHA256, wanted="a SHA-256 (64 hex digits)")
    _check_network(top.child("architecture"), top.child("pose"))
    _check_camera(top.child("camera"))
    inputs = top.child("input")
    if inputs.has("scaling"):
        inputs.text("scaling", ("minmax",))
    inputs.number("mean")
    inputs.number("std", positive=True)
    _check_records(top)


def _check_network(arch: _Fields, pose: _Fields) -> None:
    arch.text("name", ARCHITECTURES)
    arch.integer("width", 1, 1024)
    if arch.has("norm"):
        arch.text("norm", ("groupnorm",))
    if arch.has("in_channels"):
        arch.integer("in_channels", 1, 1)
    pose.text("parameterization", PARAMETERIZATIONS)
    pose.text("convention", pattern=_AXES, wanted="three rotation axes such as 'ZXY'")
    pose.text("orientation", ORIENTATIONS)
    pose.numbers("translation_offset", (3,))
    pose.number("translation_scale", positive=True)


def _check_camera(camera: _Fields) -> None:
    camera.number("sdd", positive=True)
    camera.integer("size", 2)
    camera.number("pixel_spacing", positive=True)
    camera.flag("mirrored")
    k = camera.child("intrinsics")
    k.number("fx", nonzero=True)
    k.number("fy", positive=True)
    k.number("cx")
    k.number("cy")
    k.integer("width", 2)
    k.integer("height", 2)


def _check_records(top: _Fields) -> None:
    """The volume(s) the model was trained on, their modality, its frame correction and its training record."""
    volumes = ([top.child("volume")] if top.has("volume") else []) + (top.children("volumes") if top.has("volumes") else [])
    for volume in volumes:
        if volume.has("sha256"):
            volume.text("sha256")
        if volume.has("center"):
            volume.numbers("center", (3,))
    if top.has("frame") and top.child("frame").has("correction"):
        top.child("frame").numbers("correction", (4, 4))
    if top.has("training") and top.child("training").has("kind"):
        top.child("training").text("kind")
    if top.has("modality"):
        top.text("modality", MODALITIES)
