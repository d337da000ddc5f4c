"""The X-rays of a batch: DICOM files named or found in folders, their output names, and the per-X-ray
files that go with them.

Each input's results are named by its *output name* (:func:`name_inputs`), by one of :data:`NAMINGS`:

* ``"stem"`` (the default) — the file name without a DICOM suffix (``IM000001``);
* ``"uid"`` — the SOP Instance UID (``1.2.826.0.1.3680043.8.498.1``), so no file name is used;
* ``"hash"`` — the first 16 hex digits of the SHA-256 of the SOP Instance UID, a name that identifies
  nothing outside this folder.

Inputs that would get the same name (two ``IM000001`` from different series folders, usual on CD
exports; two copies of one image) get a short suffix instead: ``IM000001-<8 hex digits>``, from the
SHA-256 of the SOP Instance UID where that tells them apart, else of the resolved path. A file
without a readable SOP Instance UID is named by the hash of its resolved path under ``uid`` and
``hash``. Names are compared case-insensitively (Windows and macOS folders are).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from ..volume.dicom_series import is_dicom_file

__all__ = ["NAMINGS", "BatchInput", "collect_inputs", "input_stem", "name_inputs", "per_input_file",
           "sop_instance_uid"]

NAMINGS = ("stem", "uid", "hash")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # DICOM UIDs: digits and dots, at most 64 characters
_SUFFIX_DIGITS = 8


@dataclass(frozen=True)
class BatchInput:
    """One X-ray of a batch and the name its results carry (unique in the batch)."""

    path: Path  # resolved
    name: str  # <name>.json, <name>.tfm, ... and the per-X-ray <name>.json of a start folder
    sop_instance_uid: str | None  # None if the file has no readable one


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        return is_dicom_file(path)  # the "DICM" preamble
    except OSError:
        return False


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The DICOM files named, and those in named folders (not recursive), in order, without repeats."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _is_dicom(p))
            if not found:
                raise ValueError(f"{path}: the folder holds no DICOM files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in files))


def input_stem(path: str | Path) -> str:
    """The file name without a DICOM suffix (names such as ``1.2.840.10008.1`` keep their dots)."""
    name = Path(path).name
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in _DICOM_SUFFIXES else name


def sop_instance_uid(path: str | Path) -> str | None:
    """The file's SOP Instance UID if it has a valid one (header only; nothing else is read)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
        uid = str(ds.get("SOPInstanceUID", "") or "").strip().rstrip("\0")
    except Exception:  # noqa: BLE001 - any unreadable file fails later, with its own clear error
        return None
    return uid if len(uid) <= 64 and _UID.fullmatch(uid) else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _base_name(path: Path, uid: str | None, naming: str) -> str:
    if naming == "stem":
        return input_stem(path)
    if uid is None:
        return _sha(str(path))[:16]
    return uid if naming == "uid" else _sha(uid)[:16]


def _suffixed(items: list[tuple[Path, str | None, str]]) -> list[str]:
    """Names for inputs whose base names collide: the base plus a short hash of what tells them apart."""
    uids = Counter(uid for _, uid, _ in items)
    return [f"{base}-{_sha(uid if uid is not None and uids[uid] == 1 else str(path))[:_SUFFIX_DIGITS]}"
            for path, uid, base in items]


def name_inputs(files: Sequence[str | Path], naming: str = "stem") -> list[BatchInput]:
    """Each input with the name of its results, unique in the batch (see the module docstring)."""
    if naming not in NAMINGS:
        raise ValueError(f"unknown output naming {naming!r}; expected one of {', '.join(NAMINGS)}")
    paths = [Path(f).resolve() for f in files]
    uids = [sop_instance_uid(p) for p in paths]
    items = [(p, uid, _base_name(p, uid, naming)) for p, uid in zip(paths, uids, strict=True)]
    groups: dict[str, list[int]] = {}
    for index, (_, _, base) in enumerate(items):
        groups.setdefault(base.casefold(), []).append(index)
    names = [base for _, _, base in items]
    for members in groups.values():
        if len(members) > 1:
            for index, name in zip(members, _suffixed([items[i] for i in members]), strict=True):
                names[index] = name
    clash = [n for n, count in Counter(n.casefold() for n in names).items() if count > 1]
    if clash:  # a file literally named like another's suffixed name: never overwrite silently
        raise ValueError(f"inputs would write the same results ({clash[0]}.json); register them into "
                         "different output folders")
    return [BatchInput(p, name, uid) for (p, uid, _), name in zip(items, names, strict=True)]


def per_input_file(path: str | Path, stem: str, what: str) -> Path:
    """``path`` itself, or ``path/<stem>.json`` when ``path`` is a folder of per-X-ray files.

    ``stem`` is the input's output name (:func:`name_inputs`), so two inputs with one file name find
    their own files (``IM000001-1a2b3c4d.json``).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{stem}.json"
        if not candidate.is_file():
            raise ValueError(f"{what} folder {path} has no {stem}.json for this X-ray")
        return candidate
    return path
