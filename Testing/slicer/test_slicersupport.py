"""XVRCoreLib.slicersupport: the helpers both panels share (dependency check, worker environment)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

from slicertest_utils import REPO


def _support(registration_module):
    # The module fixture installs the stubs of Slicer's application-only modules first.
    from XVRCoreLib import slicersupport

    return slicersupport


def test_missing_requirements_names_absent_and_outdated_packages(registration_module, tmp_path):
    support = _support(registration_module)
    numpy_version = importlib.metadata.version("numpy")
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\n"
                    f"numpy=={numpy_version}\n"  # satisfied
                    "numpy<1.0\n"  # installed, but outside the range
                    "xvr-no-such-package>=1\n")  # absent
    assert support.missing_requirements(str(path)) == ["numpy<1.0", "xvr-no-such-package>=1"]


def test_the_modules_requirements_are_installed_here(registration_module):
    support = _support(registration_module)
    for module in ("XVRTraining", "XVRRegistration"):
        assert support.missing_requirements(str(REPO / module / "Resources" / "requirements.txt")) == []


def test_worker_environment_imports_xvrcore_and_hides_gpus_on_request(registration_module, tmp_path):
    support = _support(registration_module)
    env = support.process_environment("cpu")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in support.process_environment("auto")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: no site-packages, so the editable install cannot help; only the PYTHONPATH given finds xvrcore
    out = subprocess.run([support.python_executable(), "-S", "-c", "import xvrcore; print(xvrcore.__version__)"],
                         env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == support.core_version()
