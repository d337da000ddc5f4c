"""XVRCoreLib.slicersupport: the helpers both panels share (dependency check, worker environment)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

from slicertest_utils import REPO, InstallerStandIns


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


# ---- installing the dependencies (defect 11) -----------------------------------------------------------------


def _requirements(tmp_path, *lines) -> str:
    path = tmp_path / "requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_slicer_5_10_installs_after_one_question_and_offers_a_restart_for_packages_in_use(slicer_app, registration_module,
                                                                                      tmp_path, monkeypatch):
    support = _support(registration_module)
    stand_ins = InstallerStandIns(monkeypatch, packaging=False)
    requirements = _requirements(tmp_path, "numpy>=999", "xvr-no-such-package>=1", "packaging>=1")
    logged, steps = [], []
    support.ensure_dependencies(requirements, log=logged.append, status=steps.append)

    questions = [text for kind, text in slicer_app.dialogs if kind == "confirmOkCancelDisplay"]
    assert len(questions) == 2  # the installation (once, everything), then the restart
    assert "PyTorch >=2.2" in questions[0] and "numpy>=999" in questions[0] and "xvr-no-such-package>=1" in questions[0]
    assert stand_ins.calls[0] == ("installTorch", False, ">=2.2")  # PyTorchUtils does not ask again
    assert stand_ins.calls[1] == ("pip_install", ["numpy>=999", "xvr-no-such-package>=1"])
    assert "numpy>=999" in questions[1] and "xvr-no-such-package" not in questions[1]  # numpy is imported
    assert stand_ins.names() == ["installTorch", "pip_install", "restart"]
    assert any("Downloading torch-2.5.1" in line for line in logged)  # the download's output, line by line
    assert any(line.strip().startswith("42% |####") for line in logged)
    assert steps[0].startswith("Installing PyTorch") and steps[-1] == "The Python packages are installed."


def test_slicer_5_12_asks_once_and_leaves_install_and_restart_to_pip_ensure(slicer_app, registration_module, tmp_path,
                                                                            monkeypatch):
    support = _support(registration_module)
    stand_ins = InstallerStandIns(monkeypatch, packaging=True)
    support.ensure_dependencies(_requirements(tmp_path, "xvr-no-such-package>=1", "packaging>=1"))
    assert [kind for kind, _ in slicer_app.dialogs] == ["confirmOkCancelDisplay"]
    assert stand_ins.names() == ["installTorch", "pip_ensure"]
    _, requirements, options = stand_ins.calls[1]
    assert requirements == ["xvr-no-such-package>=1"]
    assert options["prompt_install"] is False and options["prompt_restart"] is True


def test_declining_installs_nothing_and_nothing_is_asked_when_all_is_there(slicer_app, registration_module, tmp_path,
                                                                           monkeypatch):
    import pytest
    import slicer.util

    support = _support(registration_module)
    stand_ins = InstallerStandIns(monkeypatch, packaging=True)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: False)
    with pytest.raises(RuntimeError, match="not installed"):
        support.ensure_dependencies(_requirements(tmp_path, "xvr-no-such-package>=1"))
    assert stand_ins.calls == []

    stand_ins.torch_installed = True
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: pytest.fail("asked"))
    support.ensure_dependencies(_requirements(tmp_path, "packaging>=1"))
    assert stand_ins.calls == []
