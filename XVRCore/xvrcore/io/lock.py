"""One writer per output folder: a lock file that names the run holding it.

:func:`lock_folder` creates ``<folder>/.xvrcore.lock`` atomically (``O_CREAT | O_EXCL``) with the
holder's PID, host and process start time, and removes it when the run ends. A second run into the
same folder is refused with a message that names the folder and the first run's PID. A lock left
by a run that was killed (its PID no longer runs on this host, or runs a newer process) is taken
over, and the caller is told so. Creating the folder and the lock file is also the check that the
folder is writable, before any work is done.

A kill -9 leaves the lock file behind; it is stale by the test above. A lock from another host
(a shared network folder) cannot be checked, so it is refused with the file to delete if that run
is over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import is_disk_full
from .processes import process_alive, process_start

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LOCK_NAME", "FolderBusyError", "FolderLock", "OutputFolderError", "lock_folder"]

LOCK_NAME = ".xvrcore.lock"
_HOLDER_READ_TRIES = 20  # a lock file is written right after it is created: wait this many times ...
_HOLDER_READ_WAIT_S = 0.05  # ... this long for its content before calling it abandoned
_ATTEMPTS = 5  # create / take over rounds before giving up (only when other runs keep racing for it)


class OutputFolderError(OSError):
    """The output folder cannot be created or written; the message names it and says why."""


class FolderBusyError(OutputFolderError):
    """Another run holds the output folder's lock."""


@dataclass(frozen=True)
class _Holder:
    """What a lock file says about the run that holds it."""

    raw: bytes
    pid: int | None
    host: str | None
    started: int | None  # the process's start time (clock ticks since boot), where the OS tells it
    since: str | None

    @classmethod
    def parse(cls, raw: bytes) -> _Holder:
        try:
            data = json.loads(raw.decode("utf-8"))
            return cls(raw, int(data["pid"]), str(data["host"]), data.get("process_start"), data.get("since"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls(raw, None, None, None, None)

    def alive(self) -> bool:
        """Whether the holder may still run (another host's run counts as alive: it cannot be checked)."""
        if self.pid is None:
            return False
        if self.host != socket.gethostname():
            return True
        return process_alive(self.pid, self.started)

    def describe(self) -> str:
        where = f" on {self.host}" if self.host != socket.gethostname() else ""
        since = f", since {self.since}" if self.since else ""
        return f"PID {self.pid}{where}{since}"


class FolderLock:
    """The lock of one output folder, held until :meth:`release` (or the end of a ``with`` block)."""

    def __init__(self, folder: Path, token: str) -> None:
        self.folder, self.path, self._token = folder, folder / LOCK_NAME, token

    def release(self) -> None:
        """Remove the lock file, if it is still ours (a takeover of a lock judged stale is not undone)."""
        try:
            held = json.loads(self.path.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError, AttributeError):
            return
        if held == self._token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            what = "is a file" if blocking == folder else f"cannot be created: {blocking} is a file"
            raise OutputFolderError(f"{folder}: the output folder {what}; choose a folder") from None
        raise OutputFolderError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def _create(path: Path, token: str) -> bool:
    """Create the lock file (False if it exists); a folder we may not write to is an error here."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise OutputFolderError(f"{path.parent}: the output folder is not writable ({exc.strerror or exc}); "
                                "choose another folder or change its permissions") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token, "program": "xvrcore"}
    try:
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _read_holder(path: Path) -> _Holder | None:
    """The lock's holder; None if the lock vanished. Waits briefly for a lock that is being written."""
    for _ in range(_HOLDER_READ_TRIES):
        try:
            holder = _Holder.parse(path.read_bytes())
        except FileNotFoundError:
            return None
        if holder.pid is not None:
            return holder
        time.sleep(_HOLDER_READ_WAIT_S)
    return holder  # still unreadable: its writer died between creating and writing it


def _take_over(path: Path, stale: _Holder) -> bool:
    """Move the stale lock aside, if it is still the one judged stale; True if it was removed.

    Two runs may find the same stale lock: the rename lets only one of them move it, and a run that
    moved a lock another run had just created in its place puts that one back.
    """
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.read_bytes() == stale.raw:
        aside.unlink()
        return True
    try:
        os.link(aside, path)  # put the other run's lock back, unless a third run locked meanwhile
    except FileExistsError:
        pass
    except OSError:  # no hard links on this filesystem
        if not path.exists():
            os.rename(aside, path)
    aside.unlink(missing_ok=True)
    return False


def _busy(folder: Path, holder: _Holder) -> FolderBusyError:
    hint = (f"wait for it to finish or choose another folder (if that run is over, delete {folder / LOCK_NAME})"
            if holder.host != socket.gethostname() else "wait for it to finish (or stop it) or choose another folder")
    return FolderBusyError(f"{folder}: another xvrcore run ({holder.describe()}) is writing into this output "
                           f"folder; {hint}")


def lock_folder(folder: str | Path, notify: Callable[[str], None] | None = None) -> FolderLock:
    """Create ``folder`` if needed and lock it for this process; see the module docstring.

    Raises :class:`OutputFolderError` (a file in the way, no permission, read-only) or
    :class:`FolderBusyError` (another live run holds it), each naming the folder; a full disk
    raises its own ``OSError`` (:func:`~xvrcore.io.atomic.is_disk_full`). ``notify`` is told when
    a stale lock was taken over.
    """
    folder = Path(folder)
    _make_folder(folder)
    path, token = folder / LOCK_NAME, uuid.uuid4().hex
    for _ in range(_ATTEMPTS):
        if _create(path, token):
            return FolderLock(folder, token)
        holder = _read_holder(path)
        if holder is None:
            continue  # released meanwhile
        if holder.alive():
            raise _busy(folder, holder)
        if _take_over(path, holder) and notify is not None:
            left = f" (PID {holder.pid})" if holder.pid is not None else ""
            notify(f"{folder}: took over the lock of an earlier run{left} that ended without releasing it")
    raise FolderBusyError(f"{folder}: could not lock the output folder: other runs keep taking it; try again")

