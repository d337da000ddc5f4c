"""The X-rays of a batch: DICOM files named or found in folders, and the per-X-ray files that go with them.

Each input's results are named by its *stem* (the file name without a DICOM suffix); two inputs with
the same stem would overwrite each other's results, so they are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..volume.dicom_series import is_dicom_file

__all__ = ["collect_inputs", "input_stem", "per_input_file"]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


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
    unique = list(dict.fromkeys(p.resolve() for p in files))
    stems: dict[str, Path] = {}
    for path in unique:
        other = stems.setdefault(input_stem(path), path)
        if other != path:
            raise ValueError(f"{other} and {path} would write the same results ({input_stem(path)}.json); "
                             "register them into different output folders")
    return unique


def input_stem(path: str | Path) -> str:
    """The file name without a DICOM suffix (names such as ``1.2.840.10008.1`` keep their dots)."""
    name = Path(path).name
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in _DICOM_SUFFIXES else name


def per_input_file(path: str | Path, stem: str, what: str) -> Path:
    """``path`` itself, or ``path/<stem>.json`` when ``path`` is a folder of per-X-ray files."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{stem}.json"
        if not candidate.is_file():
            raise ValueError(f"{what} folder {path} has no {stem}.json for this X-ray")
        return candidate
    return path
