"""Fixtures for the Slicer-side tests: real MRML scenes from the ``slicer-core`` wheel, the module scripts
imported with the few application-only modules stubbed, synthetic X-ray DICOMs of a real CT.

What is stubbed is only what exists in the Slicer *application* and not in the ``slicer-core`` wheel:
``slicer.ScriptedLoadableModule`` (the base classes), ``slicer.i18n`` (translation) and
``slicer.parameterNodeWrapper`` (needs Qt widgets). The scene, the nodes, the logics, storage and
rendering are Slicer's own.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from slicertest_utils import TORSO, load_module_script, new_scene, true_pose

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen, no X server
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Two cores shared with other jobs: one thread keeps the small renders fast and predictable."""
    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def scene(tmp_path):
    return new_scene(tmp_path / "cache")


@pytest.fixture(scope="session")
def registration_module():
    return load_module_script("XVRRegistration")


@pytest.fixture(scope="session")
def training_module():
    return load_module_script("XVRTraining")


# ---- data ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def torso_path(shared_data) -> Path:
    return shared_data / TORSO / "torso_ct_3mm.nii.gz"


@pytest.fixture(scope="session")
def torso_crop(shared_data):
    """The 30-slice torso CT with its TotalSegmentator labels (a few structures kept)."""
    from xvrcore.volume import load_labelmap, load_volume

    ct = load_volume(shared_data / TORSO / "torso_ct_3mm_crop30.nii.gz")
    labels = load_labelmap(shared_data / TORSO / "torso_ct_3mm_crop30_labels.nii.gz", reference=ct)
    return ct, labels


@pytest.fixture(scope="session")
def synthetic_xrays(torso_path, tmp_path_factory):
    """Two synthetic XA DICOMs of the torso CT at known poses: {name: (path, camera_to_world)}."""
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

    ct = load_volume(torso_path)
    volume = DRRVolume.from_volume(to_attenuation(ct))
    detector = Detector(1000.0, 80, 96, 2.4, 2.4)
    folder = tmp_path_factory.mktemp("xrays")
    out = {}
    for seed, (name, angles) in enumerate({"view_a": (20.0, -8.0), "view_b": (-30.0, 12.0)}.items()):
        pose = true_pose(ct.center, *angles)
        image = synthesize_xray(volume, pose, detector, rng=np.random.default_rng(seed))
        path = write_xray_dicom(folder / f"{name}.dcm", image, detector, pose, ct.center)
        out[name] = (Path(path), pose.numpy())
    return out


# ---- the panels: their real widget classes on their real .ui files (slicer_gui) ------------------------------


@pytest.fixture
def slicer_app(scene, tmp_path, monkeypatch):
    """``slicer.app``, ``slicer.mrmlScene``, ``qt`` and ``ctk`` for one test (see slicer_gui's docstring).

    Dialogs are recorded in ``app.dialogs``; an exception raised in a slot fails the test (PythonQt would
    print it in the Python console and leave the panel half-updated).
    """
    pytest.importorskip("PySide6")
    import types

    import slicer
    import slicer.util
    from PySide6 import QtCore, QtWidgets
    from slicer_gui import SlicerApplication, install_qt_modules, slot_errors

    install_qt_modules()
    QtWidgets.QApplication.instance() or QtWidgets.QApplication(["xvr-panel-test"])
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(tmp_path / "settings"))
    QtCore.QCoreApplication.setOrganizationName("XVRPanelTest")
    QtCore.QCoreApplication.setApplicationName("Slicer")
    app = SlicerApplication(scene, tmp_path / "slicer-temp")
    volume_rendering = slicer.vtkSlicerVolumeRenderingLogic()
    volume_rendering.SetMRMLScene(scene)
    volume_rendering.SetMRMLApplicationLogic(scene._xvr_keep[0])
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
        volumerendering=types.SimpleNamespace(logic=lambda: volume_rendering)), raising=False)
    for kind in ("errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay"):
        monkeypatch.setattr(slicer.util, kind, app.record(kind))
    slot_errors.clear()
    yield app
    app.close()
    errors, slot_errors[:] = list(slot_errors), []
    assert not errors, "a slot raised:\n" + "\n".join(errors)


# ---- the panels, created and entered (shared by the panel test files) --------------------------------------


@pytest.fixture
def ct_node(scene, torso_path):
    from XVRCoreLib import volumes

    return volumes.load_volume_node(scene, torso_path, name="CT")


@pytest.fixture
def registration_panel(slicer_app, registration_module, ct_node, monkeypatch):
    """The registration panel, entered (the module shown), with the CT loaded."""
    panel = slicer_app.createPanel(registration_module, "XVRRegistration")
    monkeypatch.setattr(panel.logic, "ensureDependencies", lambda **kwargs: None)  # the PyTorch extension is Slicer's
    slicer_app.enter(panel)
    return panel


@pytest.fixture
def training_panel(slicer_app, training_module, monkeypatch):
    """The training panel, entered."""
    panel = slicer_app.createPanel(training_module, "XVRTraining")
    monkeypatch.setattr(panel.logic, "ensureDependencies", lambda **kwargs: None)
    slicer_app.enter(panel)
    return panel
