"""Whether a process of this machine still runs: the one check behind folder locks and checkpoint temporaries."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["process_alive", "process_start"]


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID from its first owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the command name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs (a zombie does not; in doubt, it does). ``started``, from
    :func:`process_start` when the PID was recorded, rules out a later process that reuses the PID."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    if _zombie(pid):
        return False
    now = process_start(pid)
    return started is None or now is None or now == started


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False  # no /proc (macOS): it exists


def _windows_process_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    # os.kill(pid, 0) would send CTRL_C_EVENT on Windows; ask the process table instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
