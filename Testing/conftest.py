"""Shared pytest fixtures: where the real data lives, and small helpers."""

from __future__ import annotations

import locale
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("XVR_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``../shared/data`` beside the clone, or ``$XVR_SHARED_DATA``)."""
    path = _shared_data_dir()
    if not (path / "open").is_dir():
        pytest.fail(f"real test data not found at {path}; set XVR_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def pelvis_ct_path(shared_data: Path) -> Path:
    return shared_data / "open" / "ct" / "pelvis_vhf" / "pelvis_ct_vhf_1mm.nii.gz"


@pytest.fixture(scope="session")
def torso_ct(shared_data: Path) -> Path:
    """A real CT small enough for many runs (122×101×112 voxels of 3 mm)."""
    return shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz"


@pytest.fixture(scope="session")
def head_ct_path(shared_data: Path) -> Path:
    return shared_data / "open" / "ct" / "head_skull_dbdicom" / "head_ct.nii.gz"


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).

    Two cores shared with other jobs: OpenMP threads spin-waiting on each other slow small tensor
    ops by 10-100×; one thread keeps such modules fast and their timings meaningful.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _keep_the_locale():
    """Restore the process locale after each test: SimpleITK's DICOM writer (GDCM), which tests use to
    make DICOM series, sets LC_CTYPE to "C", and later tests would then decode text as ASCII."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != saved:
        locale.setlocale(locale.LC_ALL, saved)
