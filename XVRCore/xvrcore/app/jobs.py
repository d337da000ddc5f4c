"""The parent side of a background job: run the worker, collect its events and log lines, cancel it.

The protocol (event lines, the cancel file, the exit code of a cancelled worker) is
:mod:`xvrcore.io.events`. If the worker does not stop within a grace period after a cancel, its
process tree is terminated. Nothing here imports Qt; the Slicer panels poll
:meth:`JobRunner.poll` from a timer.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.events import CANCEL_FILE, parse_line

__all__ = ["JobRunner", "JobUpdate"]


@dataclass
class JobUpdate:
    """What :meth:`JobRunner.poll` collected since the last call."""

    events: list[dict] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    returncode: int | None = None


class JobRunner:
    """Run a worker process, collect its events and log lines, and cancel it.

    ``job_dir`` holds the cancel file; the worker is expected to poll it (``CancelToken``).
    """

    def __init__(self, command: Sequence[str], job_dir: str | Path, env: dict | None = None,
                 cwd: str | Path | None = None) -> None:
        self.command = list(command)
        self.job_dir = Path(job_dir)
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._cancel_requested_at: float | None = None

    @property
    def cancel_file(self) -> Path:
        """The file whose appearance asks the worker to stop (``job_dir/CANCEL``)."""
        return self.job_dir / CANCEL_FILE

    def popen_options(self) -> dict[str, Any]:
        """``Popen`` keywords that start the worker in its own process group (overridden by the panels)."""
        if os.name == "posix":
            return {"start_new_session": True}
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]

    def start(self) -> None:
        """Start the worker in its own process group (a stale cancel file is removed first)."""
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_file.unlink(missing_ok=True)
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
            cwd=self.cwd, encoding="utf-8", errors="replace", **self.popen_options(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def poll(self, max_lines: int = 10000) -> JobUpdate:
        """The events and log lines since the last call; ``returncode`` once the worker ended and was drained."""
        update = JobUpdate()
        for _ in range(max_lines):
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            event = parse_line(line)
            (update.events.append(event) if event is not None else update.log.append(line))
        if self.process is not None:
            update.returncode = self.process.poll()
            if update.returncode is not None and self._reader is not None and self._reader.is_alive():
                update.returncode = None  # the process ended; report it once its output is drained
        return update

    @property
    def running(self) -> bool:
        """Whether the worker process is alive."""
        return self.process is not None and self.process.poll() is None

    def cancel(self) -> None:
        """Ask the worker to stop cleanly (it saves and exits); see :meth:`terminate`."""
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_file.touch()
        self._cancel_requested_at = time.monotonic()

    def terminate(self, grace_s: float = 10.0) -> None:
        """Stop the worker's process tree: after ``grace_s`` seconds of a requested cancel, or now."""
        if not self.running:
            return
        if self._cancel_requested_at is not None and time.monotonic() - self._cancel_requested_at < grace_s:
            return
        assert self.process is not None
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.terminate()
            self.process.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            if os.name == "posix":
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                self.process.kill()

    def wait(self, timeout: float | None = None) -> JobUpdate:
        """Block until the worker ends; returns everything not yet polled."""
        assert self.process is not None
        self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        update = self.poll()
        update.returncode = self.process.returncode
        return update
