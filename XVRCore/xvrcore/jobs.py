"""Background-job protocol: JSON-line progress events, cancellation, and a subprocess runner.

Long work (training, registration of many X-rays) runs in a separate process so that Slicer stays
responsive. The worker writes ordinary log lines and, for the machine, one JSON object per line
after a fixed prefix::

    @@XVR {"event": "progress", "done": 120, "total": 500, "loss": 0.031}

The parent reads both from the worker's stdout. A job is cancelled by creating a file (the
worker polls it, saves what it has and exits with :data:`EXIT_CANCELLED`) and, if the worker does
not stop within a grace period, by terminating its process tree. Nothing here imports Qt; the
Slicer panels poll :meth:`JobRunner.poll` from a timer.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PREFIX = "@@XVR "
EXIT_CANCELLED = 130
CANCEL_FILE = "CANCEL"


def format_event(event: str, **fields: Any) -> str:
    """One protocol line (without newline); values must be JSON-serialisable."""
    return PREFIX + json.dumps({"event": event, **fields}, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def emit(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one event line and flush, so the parent sees it at once."""
    stream = stream or sys.stdout
    stream.write(format_event(event, **fields) + "\n")
    stream.flush()


def parse_line(line: str) -> dict | None:
    """The event of a protocol line, or None for an ordinary log line (or a damaged event)."""
    if not line.startswith(PREFIX):
        return None
    try:
        data = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "event" in data else None


class CancelToken:
    """Whether the job was asked to stop: a cancel file exists, or SIGINT/SIGTERM arrived."""

    def __init__(self, cancel_file: str | Path | None = None, handle_signals: bool = False) -> None:
        self.cancel_file = Path(cancel_file) if cancel_file else None
        self._flag = threading.Event()
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._flag.set())

    def cancel(self) -> None:
        self._flag.set()

    def __call__(self) -> bool:
        if not self._flag.is_set() and self.cancel_file is not None and self.cancel_file.exists():
            self._flag.set()
        return self._flag.is_set()


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

    def __init__(self, command: Sequence[str], job_dir: str | Path, env: dict | None = None, cwd=None) -> None:
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
        return self.job_dir / CANCEL_FILE

    def start(self) -> None:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_file.unlink(missing_ok=True)
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        }
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
            cwd=self.cwd, encoding="utf-8", errors="replace", **kwargs,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def poll(self, max_lines: int = 10000) -> JobUpdate:
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
