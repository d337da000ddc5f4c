"""The XVR DICOM plugin (``XVRRegistration/DICOMXVRPlugin.py``) as Slicer's DICOM browser drives it.

DICOMLib exists only in the Slicer application. The stand-ins below behave like Slicer's where the plugin
depends on them (learned from Slicer 5.10's ``Modules/Scripted/DICOMLib/DICOMPlugin.py``,
``DICOMUtils.py`` and ``DICOMPlugins/``): a loadable's attributes and defaults, the plugin's ``tags``,
``loadableCache`` keyed by the file list, ``examine`` → ``examineForImport`` (5.10's base examines
nothing), the DICOM database's ``fileValue(file, "gggg,eeee")`` strings, and the browser's choice
across plugins (per series, every loadable at the highest confidence is selected; the others are not).
Slicer's Scalar Volume plugin (0.5 for any image series) and Image Sequence plugin (0.7 for each
XA/RF/US instance, and secondary captures of those modalities) are reduced to the confidence they give.

Real files: the GE XA phantom (geometry from the header), the WG04 XA secondary capture (no geometry),
two WG04 CR radiographs (no SID; a zero PixelSpacing) and a CT slice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from slicertest_utils import REPO

XA_PHANTOM = Path("open") / "xray" / "xa_phantom_kragujevac" / "IM1.dcm"
RADIOGRAPHS = Path("open") / "xray" / "radiographs"
CT_SLICE = Path("open") / "ct" / "head_skull_dbdicom" / "dicom_axial_2p5mm" / "slice_000.dcm"
SERIES_UID_TAG = "0020,000E"


# ---- the stand-ins of Slicer's DICOM module -------------------------------------------------------------------


class DicomDatabase:
    """``slicer.dicomDatabase`` for what plugins ask of it: a tag's value as a string ('' when absent)."""

    def __init__(self):
        self.headers = {}

    def _header(self, path):
        import pydicom

        if path not in self.headers:
            self.headers[path] = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return self.headers[path]

    def fileValue(self, path, tag: str) -> str:
        group, element = (int(part, 16) for part in tag.split(","))
        item = self._header(path).get((group, element))
        if item is None or item.value is None:
            return ""
        values = item.value if item.VM > 1 else [item.value]
        return "\\".join(str(v) for v in values)  # multi-valued attributes as DCMTK writes them

    def fileValueExists(self, path, tag: str) -> bool:
        return self.fileValue(path, tag) != ""


class DICOMLoadable:
    """As DICOMLib's: what a plugin offers for a list of files."""

    def __init__(self):
        self.files = []
        self.name = "Unknown"
        self.tooltip = "No further information available"
        self.warning = ""
        self.selected = False
        self.confidence = 0.5


class DICOMPlugin:
    """As DICOMLib's base class (5.10): the tags, the cache keyed by the file list, ``examine``, the hierarchy."""

    def __init__(self):
        self.loadType = "Generic DICOM"
        self.loadableCache = {}
        self.tags = {"seriesDescription": "0008,103E", "seriesNumber": "0020,0011", "seriesInstanceUID": SERIES_UID_TAG,
                     "modality": "0008,0060", "instanceUID": "0008,0018", "sopClassUID": "0008,0016"}

    def hashFiles(self, files):
        digest = hashlib.md5()
        for name in files:
            digest.update(name.encode("UTF-8", "ignore"))
        return digest.digest()

    def getCachedLoadables(self, files):
        return self.loadableCache.get(self.hashFiles(files))

    def cacheLoadables(self, files, loadables):
        self.loadableCache[self.hashFiles(files)] = loadables

    def examineForImport(self, fileLists):
        return []

    def examine(self, fileLists):
        return self.examineForImport(fileLists)

    def load(self, loadable):
        return True

    def addSeriesInSubjectHierarchy(self, loadable, dataNode):
        """The part the browser shows: the node's hierarchy item carries the series' DICOM UID."""
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), dataNode)  # the node's existing item, as in Slicer
        series = slicer.dicomDatabase.fileValue(loadable.files[0], SERIES_UID_TAG)
        hierarchy.SetItemUID(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName(), series)


class ScalarVolumeStandIn(DICOMPlugin):
    """Slicer's Scalar Volume plugin, by its confidence: 0.5 for every list of files with pixel data."""

    def examineForImport(self, fileLists):
        loadables = []
        for files in fileLists:
            loadable = DICOMLoadable()
            loadable.files, loadable.selected = list(files), True
            loadables.append(loadable)
        return loadables


class ImageSequenceStandIn(DICOMPlugin):
    """Slicer's Image Sequence plugin, by its confidence: 0.7 for each XA/RF/US instance (and their captures)."""

    CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.3.1",
                         "1.2.840.10008.5.1.4.1.1.6.1"})
    CAPTURES = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2"})

    def examine(self, fileLists):
        import slicer

        loadables = []
        for path in (p for files in fileLists for p in files):
            sop = slicer.dicomDatabase.fileValue(path, self.tags["sopClassUID"])
            modality = slicer.dicomDatabase.fileValue(path, self.tags["modality"])
            if sop in self.CLASSES or (sop in self.CAPTURES and modality in ("US", "XA", "RF", "ES")):
                loadable = DICOMLoadable()
                loadable.files, loadable.selected, loadable.confidence = [path], True, 0.7
                loadables.append(loadable)
        return loadables


def examine_all(plugins, fileLists) -> dict:
    """The browser's examination: ``examineForImport``, else (nothing found) the older ``examine``."""
    return {plugin: plugin.examineForImport(fileLists) or plugin.examine(fileLists) for plugin in plugins}


def select_highest_confidence(loadablesByPlugin) -> None:
    """The browser's default selection: per series, the loadables at the highest confidence (ties: all)."""
    import slicer

    bySeries = {}
    for loadables in loadablesByPlugin.values():
        for loadable in loadables:
            bySeries.setdefault(slicer.dicomDatabase.fileValue(loadable.files[0], SERIES_UID_TAG), []).append(loadable)
    for loadables in bySeries.values():
        best = max(loadable.confidence for loadable in loadables)
        for loadable in loadables:
            loadable.selected = loadable.confidence == best


def selected_plugins(loadablesByPlugin) -> list:
    return [type(plugin).__name__ for plugin, loadables in loadablesByPlugin.items() for l in loadables if l.selected]


# ---- fixtures -------------------------------------------------------------------------------------------------


def _import_plugin(monkeypatch, dicomlib):
    """A fresh import of the plugin file, with ``DICOMLib`` as given (None: absent, as outside Slicer)."""
    monkeypatch.setitem(sys.modules, "DICOMLib", dicomlib)
    spec = importlib.util.spec_from_file_location("DICOMXVRPlugin", REPO / "XVRRegistration" / "DICOMXVRPlugin.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "DICOMXVRPlugin", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dicom_slicer(registration_module, scene, monkeypatch):
    """``slicer`` as the DICOM browser sees it: the scene, the database, ``slicer.modules``."""
    import slicer

    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(), raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    return slicer


@pytest.fixture
def plugin_module(dicom_slicer, monkeypatch):
    dicomlib = types.ModuleType("DICOMLib")
    dicomlib.DICOMPlugin, dicomlib.DICOMLoadable = DICOMPlugin, DICOMLoadable
    return _import_plugin(monkeypatch, dicomlib)


@pytest.fixture
def plugin(plugin_module):
    return plugin_module.DICOMXVRPluginClass()


@pytest.fixture
def data(shared_data):
    return lambda relative: str(shared_data / relative)


# ---- registration with the DICOM module ------------------------------------------------------------------------


def test_the_file_loads_and_registers_nothing_without_dicomlib(dicom_slicer, monkeypatch):
    module = _import_plugin(monkeypatch, None)
    parent = types.SimpleNamespace()
    module.DICOMXVRPlugin(parent)
    assert parent.hidden is True and "XVRCore" in parent.dependencies
    assert not hasattr(dicom_slicer.modules, "dicomPlugins")


def test_the_hidden_module_registers_the_plugin_class(plugin_module, dicom_slicer):
    dicom_slicer.modules.dicomPlugins = {"DICOMScalarVolumePlugin": ScalarVolumeStandIn}  # the DICOM module came first
    parent = types.SimpleNamespace()
    plugin_module.DICOMXVRPlugin(parent)
    assert parent.hidden is True
    assert dicom_slicer.modules.dicomPlugins == {"DICOMScalarVolumePlugin": ScalarVolumeStandIn,
                                                 "DICOMXVRPlugin": plugin_module.DICOMXVRPluginClass}
    assert issubclass(plugin_module.DICOMXVRPluginClass, DICOMPlugin)


# ---- examine ---------------------------------------------------------------------------------------------------


def test_an_xa_with_geometry_is_selected_over_slicers_plugins(plugin, data):
    path = data(XA_PHANTOM)
    found = examine_all([ScalarVolumeStandIn(), ImageSequenceStandIn(), plugin], [[path]])
    ours = found[plugin]
    assert len(ours) == 1 and ours[0].files == [path]
    assert ours[0].confidence > 0.7 and ours[0].warning == ""
    assert "14 frames" in ours[0].tooltip and "SID 860 mm" in ours[0].tooltip  # the phantom's header
    select_highest_confidence(found)
    assert selected_plugins(found) == ["DICOMXVRPluginClass"]


@pytest.mark.parametrize(("name", "named"), [
    ("xa_sc_wg04_XA1.dcm", "DistanceSourceToDetector (0018,1110) is absent"),
    ("cr_hip_wg04_RG2.dcm", "DistanceSourceToDetector (0018,1110) is absent"),
    ("cr_chest_wg04_RG1.dcm", "PixelSpacing (0028,0030) is 0.000\\0.000 (not a valid spacing)"),
])
def test_an_xray_without_geometry_is_offered_below_the_plain_image(plugin, data, name, named):
    path = data(RADIOGRAPHS / name)
    found = examine_all([ScalarVolumeStandIn(), ImageSequenceStandIn(), plugin], [[path]])
    ours = found[plugin]
    assert len(ours) == 1 and ours[0].confidence < 0.5
    assert ours[0].warning.startswith("No C-arm geometry") and named in ours[0].warning
    assert "without a C-arm geometry" in ours[0].tooltip
    select_highest_confidence(found)
    assert "DICOMXVRPluginClass" not in selected_plugins(found) and selected_plugins(found)


def test_a_ct_slice_is_not_an_xray(plugin, data):
    assert plugin.examine([[data(CT_SLICE)]]) == []


def test_one_loadable_per_xray_instance(plugin, data):
    """A series list with an X-ray and a CT file: the X-ray only; two lists: the loadables of both."""
    xa, ct, cr = data(XA_PHANTOM), data(CT_SLICE), data(RADIOGRAPHS / "cr_hip_wg04_RG2.dcm")
    assert [l.files for l in plugin.examine([[xa, ct], [cr]])] == [[xa], [cr]]


def test_examine_reads_no_pixels_and_caches_by_file_list(plugin, data, monkeypatch):
    import xvrcore.xray.pixels
    import xvrcore.xray.reader
    from XVRCoreLib import xray_header

    def refuse(*args, **kwargs):
        raise AssertionError("examine decoded pixels")

    monkeypatch.setattr(xvrcore.xray.pixels, "decode_pixels", refuse)
    monkeypatch.setattr(xvrcore.xray.reader, "decode_pixels", refuse)
    monkeypatch.setattr(xvrcore.xray.reader, "read_xray", refuse)
    checked = []
    monkeypatch.setattr(xray_header, "xray_geometry_check", lambda *a, real=xray_header.xray_geometry_check: (
        checked.append(a[0]), real(*a))[1])
    files = [data(XA_PHANTOM)]
    first = plugin.examine([files])
    assert first[0].confidence > 0.5 and checked == files
    assert plugin.examine([list(files)]) == first and checked == files  # the cached loadables, not a new check


@pytest.mark.parametrize("relative", [XA_PHANTOM, RADIOGRAPHS / "xa_sc_wg04_XA1.dcm", RADIOGRAPHS / "cr_hip_wg04_RG2.dcm",
                                      RADIOGRAPHS / "cr_chest_wg04_RG1.dcm", CT_SLICE], ids=lambda p: Path(p).name)
def test_the_header_check_agrees_with_the_reader(data, relative):
    """Geometry found by the header check ⇔ read by :func:`read_xray`; the same problems named."""
    from xvrcore.xray import XrayDicomError, read_xray
    from XVRCoreLib.xray_header import xray_geometry_check

    check = xray_geometry_check(data(relative))
    try:
        xray = read_xray(data(relative), frame="max")
    except XrayDicomError as exc:
        assert not check.ok and all(problem in str(exc) for problem in check.problems)
        return
    assert check.ok
    assert check.sdd == xray.detector.sdd and check.sod == xray.sod
    assert check.spacing == (xray.detector.row_spacing, xray.detector.col_spacing)
    assert (check.rows, check.cols, check.n_frames) == (xray.detector.rows, xray.detector.cols, xray.number_of_frames)


# ---- load ------------------------------------------------------------------------------------------------------


def _registration_ct(scene, ct_node):
    """The CT selected in the registration panel, stored as Slicer's parameter node wrapper stores nodes."""
    import slicer

    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetSingletonTag("XVRRegistration")
    node.SetAttribute("ModuleName", "XVRRegistration")
    scene.AddNode(node).SetNodeReferenceID("inputVolume", ct_node.GetID())


def test_load_makes_the_node_the_panels_import_makes(plugin, data, dicom_slicer, scene, ct_node):
    from XVRCoreLib.scene import REFERENCE_ROLES
    from XVRCoreLib.xray_plane import xray_depth, xray_intrinsics, xray_mask
    from XVRRegistrationLib import nodes
    from XVRRegistrationLib.imports import XrayImporter

    _registration_ct(scene, ct_node)
    path = data(XA_PHANTOM)
    loadable = plugin.examine([[path]])[0]
    node = plugin.load(loadable)
    panel = XrayImporter().importXray(path, scene, ct_node)  # the panel's import of the same file, its CT selected
    assert nodes.isXray(node) and node.GetName() == loadable.name
    assert xray_intrinsics(node) == xray_intrinsics(panel) and xray_depth(node) == xray_depth(panel) == 860.0
    assert np.array_equal(nodes.pose(node), nodes.pose(panel))
    assert not np.allclose(nodes.volumeCenter(ct_node), 0.0)  # the pose is about the CT: a real test of the centre
    assert np.array_equal(dicom_slicer.util.arrayFromVolume(node), dicom_slicer.util.arrayFromVolume(panel))
    assert np.array_equal(xray_mask(node), xray_mask(panel))
    for key in ("XVR.Source", "XVR.Frame", "XVR.MaskFrame", "XVR.Modality", "XVR.Positioner", "XVR.Warnings"):
        assert node.GetAttribute(key) == panel.GetAttribute(key), key
    for role in ("pose", "frustum", "plane"):
        assert node.GetNodeReference(REFERENCE_ROLES[role]) is not None, role
    hierarchy = dicom_slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    series = dicom_slicer.dicomDatabase.fileValue(path, SERIES_UID_TAG)
    assert hierarchy.GetItemUID(hierarchy.GetItemByDataNode(node), "DICOM") == series


def test_a_failed_load_names_the_file_and_adds_no_xray(plugin, data, scene, caplog):
    loadable = plugin.examine([[data(RADIOGRAPHS / "cr_hip_wg04_RG2.dcm")]])[0]  # the user picked it anyway
    with caplog.at_level(logging.ERROR):
        assert plugin.load(loadable) is None
    assert "cr_hip_wg04_RG2.dcm" in caplog.text and "DistanceSourceToDetector (0018,1110)" in caplog.text
    from XVRRegistrationLib import nodes

    assert nodes.xrayNodes(scene) == []


def test_before_the_dependencies_are_installed(plugin, data, scene, monkeypatch):
    """Examined without reading the geometry (xvrcore needs them), offered below the plain image, not cached;
    loading asks for the installation first, as the panel does, and loads nothing if it is declined."""
    from XVRCoreLib import slicersupport, xray_header
    from XVRRegistrationLib import nodes

    asked = []

    def decline(requirements, **kwargs):
        asked.append(Path(requirements))
        raise RuntimeError("PyTorch is required but was not installed.")

    monkeypatch.setattr(slicersupport, "dependencies_available", lambda: False)
    monkeypatch.setattr(slicersupport, "ensure_dependencies", decline)
    monkeypatch.setattr(xray_header, "xray_geometry_check", lambda *a: pytest.fail("the geometry was checked"))
    files = [data(XA_PHANTOM)]
    (loadable,) = plugin.examine([files])
    assert loadable.confidence < 0.5 and "not installed" in loadable.warning
    assert plugin.getCachedLoadables(files) is None
    assert plugin.load(loadable) is None and nodes.xrayNodes(scene) == []
    assert asked == [REPO / "XVRRegistration" / "Resources" / "requirements.txt"] and asked[0].is_file()
