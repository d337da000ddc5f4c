"""The panels' background processes, started as Slicer starts console processes and stopped as a whole tree.

``slicer.util.launchConsoleProcess`` hides the console window on Windows (``STARTUPINFO`` with
``SW_HIDE``); a raw ``Popen`` of ``PythonSlicer`` opens one per job, and closing it kills the job. On
Windows ``PythonSlicer`` is a launcher that starts ``python-real`` as its child, so stopping only the
launcher leaves the worker running: :class:`SlicerJobRunner` stops the whole process tree (psutil, which
Slicer ships; the process group where it is missing).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from xvrcore.app.jobs import JobRunner

__all__ = ["CREATE_NEW_PROCESS_GROUP", "CREATE_NO_WINDOW", "SlicerJobRunner", "popen_options", "stop_process_tree"]

CREATE_NEW_PROCESS_GROUP = 0x00000200  # Windows process creation flags (winbase.h)
CREATE_NO_WINDOW = 0x08000000
_STARTF_USESHOWWINDOW, _SW_HIDE = 0x00000001, 0


def popen_options(os_name: str | None = None) -> dict[str, Any]:
    """``Popen`` keywords for a worker: its own process group/session, and no console window on Windows."""
    if (os_name or os.name) != "nt":
        return {"start_new_session": True}
    options: dict[str, Any] = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):
        info = subprocess.STARTUPINFO()
        info.dwFlags |= _STARTF_USESHOWWINDOW
        info.wShowWindow = _SW_HIDE
        options["startupinfo"] = info
    return options


def stop_process_tree(pid: int, grace_s: float = 5.0) -> list[int]:
    """Terminate a process and all its descendants, kill what is left after ``grace_s``; the PIDs stopped."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return []
    for process in tree:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in tree]


class SlicerJobRunner(JobRunner):
    """:class:`xvrcore.app.jobs.JobRunner` with the worker started without a console window and stopped
    with its whole process tree.
    """

    def popen_options(self) -> dict[str, Any]:
        return popen_options()

    def terminate(self, grace_s: float = 10.0) -> None:
        """Stop the worker's process tree: after ``grace_s`` seconds of a requested cancel, or now."""
        import time

        if not self.running:
            return
        if self._cancel_requested_at is not None and time.monotonic() - self._cancel_requested_at < grace_s:
            return
        try:
            import psutil  # noqa: F401 - Slicer ships it; without it, the process group is stopped
        except ImportError:
            super().terminate(grace_s)
            return
        stop_process_tree(self.process.pid)
