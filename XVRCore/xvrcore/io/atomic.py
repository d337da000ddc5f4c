"""Atomic file output: a crash or a kill never leaves a truncated result behind.

One file: :func:`atomic_write` writes a temporary beside the target and renames it into place. Several
files that belong together (one X-ray's results): :class:`FileGroup` stages them all first and only then
renames them into place, the last one last, so that file marks the whole group as finished. A kill
leaves at most temporaries named ``.<name>.<8 random characters><suffixes>``, which
:func:`remove_stale_temporaries` recognises and removes (by the folder's owner, under its lock).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "EXIT_DISK_FULL",
    "FileGroup",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_disk_full",
    "read_json",
    "remove_stale_temporaries",
    "temporary_target",
]

# The exit code of a run stopped by a full disk (or quota, or file-size limit): not "bad input" (2).
EXIT_DISK_FULL = 3
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _temporary_beside(path: Path) -> Path:
    """An empty new file beside ``path`` named ``.<name>.<random><suffixes>`` (see :func:`temporary_target`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_temporary_suffix(path.name), dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def _temporary_suffix(name: str) -> str:
    """The target's format suffix (``.nii.gz`` counted as one), which writers such as ITK go by.

    Not every suffix: a name with dots (``1.2.840.10008.1.json``) would make a temporary twice its length.
    """
    suffixes = Path(name).suffixes
    keep = 2 if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES else 1
    return "".join(suffixes[-keep:]) or ".tmp"


def _write_temporary(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` on a new temporary beside ``path``, flushed to the disk; removed again if that fails."""
    tmp = _temporary_beside(path)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or temporary_target(Path(str(exc.filename)).name) is not None:
            exc.filename = str(path)  # name the file being written, not its temporary
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX and Windows when both live on the same filesystem, which the
    temporary file beside the target guarantees.
    """
    path = Path(path)
    tmp = _write_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class FileGroup:
    """Files written as one unit: all are staged as temporaries, then :meth:`commit` renames them into place.

    The file staged last is the group's commit marker: ``commit`` first removes the old marker (so a
    kill while renaming leaves the group unfinished, never old and new files mixed under an old
    marker), then renames the others in order and the marker last. Leaving the ``with`` block
    without ``commit`` (an error, a full disk) removes every temporary; the files in place stay as
    they were. Renames need no space, so a full disk never interrupts the commit itself.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def write(self, path: str | Path, write: Callable[[Path], None]) -> None:
        """Stage ``path``: ``write(tmp)`` writes its content to a temporary beside it."""
        path = Path(path)
        self._staged.append((_write_temporary(path, write), path))

    def commit(self) -> None:
        if not self._staged:
            return
        self._staged[-1][1].unlink(missing_ok=True)
        for tmp, path in self._staged:
            os.replace(tmp, path)
        self._staged.clear()

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()


# What tempfile.mkstemp puts between the prefix and the suffix.
_RANDOM_PART = re.compile(r"\.([a-z0-9_]{8})")


def temporary_target(name: str) -> str | None:
    """The name of the file a temporary of :func:`atomic_write` was for; None if ``name`` is not one."""
    if not name.startswith("."):
        return None
    for random in _RANDOM_PART.finditer(name, 1):
        target = name[1:random.start()]
        if target and name[random.end():] == _temporary_suffix(target):
            return target
    return None


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporaries that interrupted writes left in ``folder`` (not in its sub-folders).

    Only for the folder's owner while no one else writes there (e.g. under its
    :func:`~xvrcore.io.lock.lock_folder`). Returns the names removed.
    """
    removed = []
    for entry in sorted(Path(folder).iterdir()):
        if temporary_target(entry.name) is not None and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` (or what caused it) says the disk, the quota or the file-size limit is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_json(path: str | Path, error: type[Exception], what: str = "JSON file"):
    """Parse a JSON file; a missing or unreadable file raises ``error`` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable {what} ({exc})") from None
