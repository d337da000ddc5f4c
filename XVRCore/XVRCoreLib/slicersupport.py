"""What both XVR panels need from Slicer: dependency installation and the background worker's setup.

Imported by XVRTraining and XVRRegistration at load time, so only light imports at the top: torch and
xvrcore are imported inside the functions, after ``ensure_dependencies`` has made them available.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import sys

import slicer
from slicer.i18n import tr as _

__all__ = [
    "DEPENDENCY_MODULES",
    "REQUESTER",
    "TORCH_VERSION_REQUIREMENT",
    "core_version",
    "cuda_available",
    "dependencies_available",
    "ensure_dependencies",
    "imported_distributions",
    "missing_requirements",
    "process_environment",
    "python_executable",
    "skipped_without_dependencies",
]

TORCH_VERSION_REQUIREMENT = ">=2.2"
REQUESTER = "SlicerXVR"  # the name the installation dialogs show
#: What xvrcore imports that Slicer does not ship (installed on first use).
DEPENDENCY_MODULES = ("torch", "SimpleITK", "pydicom", "safetensors")


def cuda_available() -> bool | None:
    """True or False as torch sees a CUDA GPU; None before torch is installed (nothing to ask yet)."""
    try:
        import torch
    except ImportError:
        return None
    return bool(torch.cuda.is_available())


def dependencies_available() -> bool:
    """Whether the packages xvrcore needs are installed (found, not imported: cheap, no side effects).

    Used to skip, rather than fail, what needs them before the user installed them: the in-Slicer tests
    (on the extension build machines and in "Reload and Test") and the restore after a scene load.
    """
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in DEPENDENCY_MODULES)


def skipped_without_dependencies(test) -> bool:
    """For a module test's ``runTest``: True (logged and shown) when the dependencies are missing, so the
    test is skipped rather than failed, as SlicerTotalSegmentator's are."""
    if dependencies_available():
        return False
    logging.getLogger(type(test).__module__).warning(
        "%s tests skipped: install the dependencies first (use the module once).", type(test).__name__)
    test.delayDisplay("Skipped: the Python dependencies are not installed yet")
    return True


class _LineTee:
    """A text stream that passes what is written on and hands each complete line to ``log``."""

    def __init__(self, log, passOn) -> None:
        self._log, self._passOn, self._partial = log, passOn, ""

    def write(self, text: str) -> int:
        if self._passOn is not None:
            self._passOn.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._log(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._passOn is not None:
            self._passOn.flush()


@contextlib.contextmanager
def _console_lines_to(log):
    """While installing, the lines Slicer prints for pip and light-the-torch (``slicer.util.logProcessOutput``
    prints each and lets the GUI refresh) also go to ``log``: the panel shows the download's progress."""
    if log is None:
        yield
        return
    with contextlib.redirect_stdout(_LineTee(log, sys.stdout)):
        yield


def _slicer_packaging():
    """``slicer.packaging`` (Slicer >= 5.11), imported: it is a submodule, absent as an attribute until
    imported; None on older Slicer versions."""
    import importlib

    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None


def _report(status, log, text: str) -> None:
    if status is not None:
        status(text)
    if log is not None:
        log(text)
    app = getattr(slicer, "app", None)
    if app is not None:
        app.processEvents()  # shown before the long call that follows


def ensure_dependencies(requirements_path: str, log=None, status=None) -> None:
    """Install what xvrcore needs, asking the user once for everything. Call on first use only, never at import.

    torch comes from the PyTorch extension (PyTorchUtils picks the CUDA or CPU build); the other runtime
    dependencies are listed in the module's ``Resources/requirements.txt``. ``log(line)`` gets the
    installers' output (the panel's log: the multi-GB torch download shows its progress there) and
    ``status(text)`` each step. A package that was already imported and is updated needs a restart of
    Slicer, which is offered. Raises RuntimeError if something is missing and the user declines.
    """
    torchLogic = _torch_logic()
    needTorch = not torchLogic.torchInstalled()
    if not needTorch:
        _check_torch_version()
    missing = missing_requirements(requirements_path)
    if not needTorch and not missing:
        return
    if slicer.app.testingEnabled():
        logging.getLogger(__name__).warning("Not installing %s in testing mode", missing + (["torch"] if needTorch else []))
        return
    _confirm_installation(needTorch, missing)
    inUse = imported_distributions(missing)
    with _console_lines_to(log):
        if needTorch:
            _report(status, log, _("Installing PyTorch: a download of up to a few GB, this can take several minutes..."))
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_VERSION_REQUIREMENT) is None:
                raise RuntimeError(_("PyTorch is required but was not installed."))
            _check_torch_version()
        if missing:
            _report(status, log, _("Installing {packages}...").format(packages=", ".join(missing)))
            _install_requirements(missing, inUse)
    _report(status, log, _("The Python packages are installed."))


def _confirm_installation(needTorch: bool, missing: list[str]) -> None:
    """One question for everything that will be installed (raises RuntimeError if the user declines)."""
    packages = ([_("PyTorch {requirement} (from the PyTorch extension; up to a few GB)").format(
        requirement=TORCH_VERSION_REQUIREMENT)] if needTorch else []) + missing
    message = _("SlicerXVR will now download and install these Python packages:")
    if not slicer.util.confirmOkCancelDisplay(message + "\n" + "\n".join(packages), windowTitle=REQUESTER):
        raise RuntimeError(_("Required Python packages were not installed."))


def _install_requirements(missing: list[str], inUse: list[str]) -> None:
    """pip-install ``missing`` (already confirmed); offer a restart when a package in use was updated."""
    packaging = _slicer_packaging()
    if packaging is not None:  # Slicer >= 5.11 checks, installs, and offers the restart itself
        packaging.pip_ensure(missing, prompt_install=False, prompt_restart=True, requester=REQUESTER)
        return
    slicer.util.pip_install(missing)
    if inUse:
        question = _("These packages were updated while in use; restart Slicer now to use the new versions?")
        if slicer.util.confirmOkCancelDisplay(question + "\n" + "\n".join(inUse), windowTitle=REQUESTER):
            slicer.util.restart()


def imported_distributions(requirements: list[str]) -> list[str]:
    """The requirements whose package is imported in this session (an update needs a restart)."""
    from packaging.requirements import Requirement

    def normal(name: str) -> str:
        return name.lower().replace("-", "_").replace(".", "_")

    owners = {}  # distribution -> its top-level modules
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            owners.setdefault(normal(distribution), set()).add(module)
    inUse = []
    for requirement in requirements:
        name = normal(Requirement(requirement).name)
        if any(module in sys.modules for module in owners.get(name, {name})):
            inUse.append(requirement)
    return inUse


def _torch_logic():
    try:
        import PyTorchUtils
    except ModuleNotFoundError as e:
        message = _("This module requires the PyTorch extension; install it in the Extensions Manager.")
        raise RuntimeError(message) from e
    return PyTorchUtils.PyTorchUtilsLogic()


def _check_torch_version() -> None:
    from packaging.requirements import Requirement

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
