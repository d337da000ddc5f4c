"""What both XVR panels need from Slicer: dependency installation and the background worker's setup.

Imported by XVRTraining and XVRRegistration at load time, so only light imports at the top: torch and
xvrcore are imported inside the functions, after ``ensure_dependencies`` has made them available.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import sys

import slicer
from slicer.i18n import tr as _

__all__ = [
    "TORCH_VERSION_REQUIREMENT",
    "core_version",
    "ensure_dependencies",
    "missing_requirements",
    "process_environment",
    "python_executable",
]

TORCH_VERSION_REQUIREMENT = ">=2.2"


def ensure_dependencies(requirements_path: str) -> None:
    """Install what xvrcore needs, asking the user first. Call on first use only, never at import.

    torch comes from the PyTorch extension (PyTorchUtils picks the CUDA or CPU build); the other
    runtime dependencies are listed in the module's ``Resources/requirements.txt``.
    Raises RuntimeError if a package is missing and the user declines to install it.
    """
    _ensure_torch()
    if hasattr(slicer, "packaging"):  # Slicer >= 5.11: checks, asks, installs and offers a restart
        slicer.packaging.pip_ensure(slicer.packaging.load_requirements(requirements_path), requester="SlicerXVR")
        return
    missing = missing_requirements(requirements_path)
    if not missing:
        return
    if slicer.app.testingEnabled():
        logging.warning(f"Not installing {missing} in testing mode")
        return
    message = _("SlicerXVR will now download and install these Python packages:")
    if not slicer.util.confirmOkCancelDisplay(message + "\n" + "\n".join(missing)):
        raise RuntimeError(_("Required Python packages were not installed."))
    slicer.util.pip_install(missing)


def _ensure_torch() -> None:
    from packaging.requirements import Requirement

    try:
        import PyTorchUtils
    except ModuleNotFoundError as e:
        message = _("This module requires the PyTorch extension; install it in the Extensions Manager.")
        raise RuntimeError(message) from e
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
        if torch is None:
            raise RuntimeError(_("PyTorch is required but was not installed."))
    required = Requirement("torch" + TORCH_VERSION_REQUIREMENT)
    installed = importlib.metadata.version("torch")
    if not required.specifier.contains(installed, prereleases=True):
        message = _("PyTorch {installed} is installed but {required} is needed: update it in PyTorch Utils.")
        raise RuntimeError(message.format(installed=installed, required=str(required)))


def missing_requirements(requirements_path: str) -> list[str]:
    """The requirements in the file that are not installed, or installed at a version outside their range."""
    from packaging.requirements import Requirement

    with open(requirements_path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    missing = []
    for requirement in [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]:
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(str(requirement))
    return missing


def python_executable() -> str:
    """Slicer's Python (PythonSlicer) inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def process_environment(device: str = "auto") -> dict:
    """Environment of a worker process: xvrcore importable (the XVRCore module folder), CPU only if asked."""
    import xvrcore

    core_parent = os.path.dirname(os.path.dirname(os.path.abspath(xvrcore.__file__)))
    paths = [core_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def core_version() -> str:
    """Version of the xvrcore library (importable because the XVRCore module's folder is on sys.path)."""
    import xvrcore

    return xvrcore.__version__
