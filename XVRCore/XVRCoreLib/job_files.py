"""The panels' job files: what a background job reads (a CT copy, label maps, X-ray DICOMs written from
nodes, start poses) lives in a folder of its own under Slicer's temporary directory, never in the
user's output folder, which receives only the results.

The folder is removed when the job ends, unless "keep temporary files" is on (one setting shared by
both panels, :data:`KEEP_SETTING` in Slicer's settings) or the job failed: then it stays, and the
panel says where, so the user can look at it or send it with a report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["KEEP_SETTING", "JobFolder", "bind_keep_checkbox", "keep_temporary_files", "set_keep_temporary_files",
           "temporary_base"]

#: The QSettings key of "keep temporary files" (both panels read and write it).
KEEP_SETTING = "XVR/KeepTemporaryFiles"
_FOLDER_NAME = "XVR"  # under Slicer's temporary directory: every job folder of the extension in one place


def _settings():
    """Slicer's settings (``qt.QSettings``), or None where Qt is not there (the logic used from a script)."""
    try:
        import qt
    except ImportError:
        return None
    return qt.QSettings()


def keep_temporary_files() -> bool:
    """Whether the user asked to keep the job files (False where no settings can be read)."""
    settings = _settings()
    if settings is None:
        return False
    return str(settings.value(KEEP_SETTING, "false")).lower() in ("true", "1")


def set_keep_temporary_files(keep: bool) -> None:
    settings = _settings()
    if settings is not None:
        settings.setValue(KEEP_SETTING, "true" if keep else "false")


def bind_keep_checkbox(checkbox) -> None:
    """Show the setting in ``checkbox`` and store every change of it (the panels' "Keep temporary files")."""
    checkbox.checked = keep_temporary_files()
    checkbox.connect("toggled(bool)", set_keep_temporary_files)


def temporary_base(base: str | Path | None = None) -> Path:
    """``base``, else Slicer's temporary directory (``slicer.app.temporaryPath``), else the system's."""
    if base is not None and str(base) not in ("", "."):
        return Path(base)
    try:
        import slicer

        return Path(slicer.app.temporaryPath)
    except (ImportError, AttributeError):  # the logic used outside the Slicer application
        return Path(tempfile.gettempdir())


class JobFolder:
    """One job's own folder of inputs: ``<base>/XVR/<kind>-<date>-<unique>``, created now.

    ``keep`` (None: the user's setting, read now) keeps it after a job that ended well; :meth:`finish`
    removes it or says that it stays.
    """

    def __init__(self, kind: str, base: str | Path | None = None, keep: bool | None = None) -> None:
        parent = temporary_base(base) / _FOLDER_NAME
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-"
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.keep = keep_temporary_files() if keep is None else bool(keep)
        self.kept: Path | None = None  # where the files stay once finished (None: removed, or not finished)
        self.finished = False

    def finish(self, failed: bool) -> Path | None:
        """The job ended: remove the folder unless it failed or the files are to be kept; where they stay."""
        if self.finished:
            return self.kept
        self.finished = True
        if failed or self.keep:
            self.kept = self.path
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return self.kept

    def discard(self) -> None:
        """Remove the folder of a job that never started (its inputs could not all be written)."""
        self.finished = True
        shutil.rmtree(self.path, ignore_errors=True)

    def __fspath__(self) -> str:
        return os.fspath(self.path)
