"""The hostile-input suite's shared pieces: a small real CT, a good synthetic XA DICOM of it, and
the checks every case makes (exit code, one clear line naming the file, results left untouched).

Every bad input is generated in the test from these (pydicom, SimpleITK, plain bytes); nothing
here is a stored fixture file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from core_helpers import small_synthetic_xa

REPO_ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Outcome:
    """What a command-line run left: its exit code and what it wrote to stdout and stderr."""

    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def good_xa(torso_ct: Path, tmp_path_factory) -> Path:
    """A valid 64×64 synthetic XA DICOM of ``torso_ct`` with full C-arm geometry in its header."""
    return small_synthetic_xa(torso_ct, tmp_path_factory.mktemp("good") / "good_xa.dcm")


def run_cli(*args: str | Path, capsys) -> Outcome:
    """Run ``xvrcore`` in this process (fast); for faults that need a process of their own, use ``run_process``."""
    from xvrcore.app.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def run_process(*args: str | Path, timeout: float = 300, env: dict | None = None, preexec_fn=None) -> Outcome:
    """Run ``python -m xvrcore`` as its own process (memory limits, signals, kills)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "XVRCore"), "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "xvrcore", *map(str, args)], capture_output=True, text=True, encoding="utf-8", errors="replace", check=False,
                          timeout=timeout, env=environment, preexec_fn=preexec_fn)
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_clear_error(outcome: Outcome, code: int, names: str | Path, *words: str) -> str:
    """The run exited with ``code``, printed no traceback, and one line of stderr names ``names``
    (a file's name or any text) and contains each of ``words`` (case-insensitive). Returns that line."""
    assert outcome.code == code, f"exit code {outcome.code}, expected {code}; stderr:\n{outcome.err}"
    assert "Traceback" not in outcome.err, outcome.err
    name = Path(names).name if isinstance(names, Path) else names
    lines = [line for line in outcome.err.splitlines() if name in line]
    assert lines, f"no line of stderr names {name!r}:\n{outcome.err}"
    matching = [line for line in lines if all(w.lower() in line.lower() for w in words)]
    assert matching, f"no line naming {name!r} says {words}:\n{outcome.err}"
    return matching[0]


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path: compare before and after a fault."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
