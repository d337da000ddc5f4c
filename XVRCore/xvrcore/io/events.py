"""The background-job protocol: JSON-line progress events and cancellation.

Long work (training, registration of many X-rays) runs in a separate process so that Slicer stays
responsive. The worker writes ordinary log lines and, for the machine, one JSON object per line
after a fixed prefix::

    @@XVR {"event": "progress", "done": 120, "total": 500, "loss": 0.031}

A job is cancelled by creating a file that the worker polls (:class:`CancelToken`); the worker
saves what it has and exits with :data:`EXIT_CANCELLED`. The parent side is
:class:`xvrcore.app.jobs.JobRunner`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

__all__ = ["CANCEL_FILE", "EXIT_CANCELLED", "PREFIX", "CancelToken", "emit", "format_event", "parse_line"]

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
