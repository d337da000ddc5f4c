"""The "XVR pelvis CT" sample: a CT shipped with the extension (small, local, with its provenance) that Slicer's
reader loads, and the simulated XA DICOM of it written at first use, which the core reads with its C-arm
geometry and XVR Registration imports. Sample Data itself exists only in the Slicer application: its
registration call is checked against a recording stand-in for ``SampleData.SampleDataLogic``.
"""

from __future__ import annotations

import hashlib
import sys
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")

from XVRCoreLib import sample_data


@pytest.fixture(scope="module")
def ct_path(training_module):
    from XVRTrainingLib.sample_data import sampleCtPath

    return sampleCtPath()


def test_the_shipped_ct_is_small_documented_and_loads(ct_path, scene):
    assert ct_path.stat().st_size < 3 * 1024 * 1024  # the extension ships it
    note = ct_path.with_suffix("").with_suffix(".txt").read_text()
    assert hashlib.sha256(ct_path.read_bytes()).hexdigest() in note and "Apache" in note
    node = sample_data.load_sample_ct(scene, ct_path)
    assert node.GetName() == sample_data.SAMPLE_CT_NAME
    assert node.GetImageData().GetDimensions() == (122, 101, 64)
    np.testing.assert_allclose(node.GetSpacing(), (3.0, 3.0, 3.0))
    hu = slicer.util.arrayFromVolume(node)
    assert hu.min() >= -1300 and (hu > 300).sum() > 5000  # air to bone: a CT in HU with a pelvis in it


def test_the_simulated_xray_has_its_geometry_and_is_written_once(ct_path, tmp_path):
    from xvrcore.geometry.positioner import pose_from_positioner
    from xvrcore.volume import load_volume
    from xvrcore.xray import read_xray

    path = sample_data.write_sample_xray(ct_path, tmp_path / "XVR" / "SampleData")
    xray = read_xray(path)
    view, d = sample_data.SAMPLE_VIEW, sample_data.SAMPLE_DETECTOR
    assert xray.modality == "XA" and xray.pixels.shape == (d["rows"], d["cols"])
    assert xray.detector.sdd == pytest.approx(d["sdd"]) and xray.detector.row_spacing == pytest.approx(d["spacing"])
    assert xray.primary_angle == pytest.approx(view["primary"], abs=0.01)
    assert xray.secondary_angle == pytest.approx(view["secondary"], abs=0.01)
    assert xray.sod == pytest.approx(view["sod"], abs=0.5)
    exposed = xray.pixels[xray.mask]
    assert 0.5 < xray.mask.mean() < 1.0 and exposed.std() > 0.1 * abs(exposed.mean())  # collimated, with anatomy

    # The true pose is off the header's nominal one (roll, offset), as on a real C-arm: registration has work.
    center = load_volume(ct_path).center
    nominal = pose_from_positioner(view["primary"], view["secondary"], view["sod"], torch.as_tensor(center)).numpy()
    truth = sample_data.sample_xray_pose(center)
    offset = np.linalg.norm(truth[:3, 3] - nominal[:3, 3])
    assert offset == pytest.approx(np.hypot(*view["offset"]), abs=1e-6)

    before = path.stat().st_mtime_ns
    assert sample_data.write_sample_xray(ct_path, path.parent) == path and path.stat().st_mtime_ns == before


def test_registration_imports_the_sample_xray_onto_the_sample_ct(registration_module, ct_path, scene, tmp_path):
    ct = sample_data.load_sample_ct(scene, ct_path)
    path = sample_data.write_sample_xray(ct_path, tmp_path)
    logic = registration_module.XVRRegistrationLogic()
    node = logic.xrays.importXray(str(path), scene, ct)
    assert logic.xrays.xrayNodes(scene) == [node]
    source = logic.poses.pose(node)[:3, 3]
    distance = np.linalg.norm(source - sample_data.sample_xray_pose(load_center(ct_path))[:3, 3])
    assert distance == pytest.approx(np.hypot(*sample_data.SAMPLE_VIEW["offset"]), abs=0.5)  # the header's pose


def load_center(ct_path):
    from xvrcore.volume import load_volume

    return load_volume(ct_path).center


def test_sample_data_registration_is_local(training_module, ct_path, monkeypatch):
    calls = []
    stand_in = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: calls.append(kwargs)))
    monkeypatch.setitem(sys.modules, "SampleData", stand_in)
    from XVRTrainingLib.sample_data import loadSample, registerSampleData

    registerSampleData()
    (call,) = calls
    assert call["sampleName"] == sample_data.SAMPLE_CT_NAME and call["customDownloader"] is loadSample
    assert call["uris"] == ct_path.as_uri() and call["uris"].startswith("file://")  # nothing to download
    assert ct_path.is_file()


def test_the_sample_button_loads_the_ct_and_writes_the_xray_into_slicers_temporary_folder(slicer_app, training_module,
                                                                                          ct_path, scene):
    from pathlib import Path

    from xvrcore.xray import read_xray
    from XVRTrainingLib.sample_data import loadSample

    (ct,) = loadSample()
    assert scene.GetFirstNodeByName(sample_data.SAMPLE_CT_NAME) is ct
    xray = Path(ct.GetAttribute("XVR.SampleXray"))
    assert xray.parent == Path(slicer_app.temporaryPath) / "XVR" / "SampleData"
    assert read_xray(xray).modality == "XA"
    assert [(kind, str(xray) in text) for kind, text in slicer_app.dialogs] == [("infoDisplay", True)]
