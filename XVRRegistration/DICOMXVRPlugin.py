"""The XVR DICOM plugin: X-ray images (XA, RF, DX, CR) picked in Slicer's DICOM browser load with their
C-arm geometry into XVR X-ray nodes, the nodes the registration panel works on.

Slicer's own plugins load these files as plain images (Scalar Volume, confidence 0.5; Image Sequence,
0.7, for XA/RF cines) without the C-arm geometry, and the panel ignores such nodes. For each X-ray
instance this plugin offers one loadable (all its frames, combined as the panel's import does by
default: the maximum over frames):

* with the header's geometry (:func:`XVRCoreLib.xray_header.xray_geometry_check`, the reader's geometry
  steps on the header alone: no pixel is decoded while the browser examines) at
  :data:`GEOMETRY_CONFIDENCE`, above both of Slicer's plugins, so the browser selects it;
* without it at :data:`NO_GEOMETRY_CONFIDENCE`, below Scalar Volume's, so the plain image stays the
  default, with ``loadable.warning`` naming the missing or invalid tag and how to give the value.

``load`` calls the registration panel's own import (``XVRRegistrationLib.imports.XrayImporter.importXray``)
with the CT the panel has selected, if any: the node, its pose, beam and detector plane are the panel's.

Slicer registers every ``.py`` beside ``XVRRegistration.py`` as a module: :class:`DICOMXVRPlugin` is that
hidden module, which adds :class:`DICOMXVRPluginClass` to ``slicer.modules.dicomPlugins``. DICOMLib exists
only in the Slicer application, so its import is guarded (the file loads without it and registers
nothing); xvrcore and XVRCoreLib are imported inside the methods (installed on first use).
"""

import logging
from pathlib import Path

import slicer
from slicer.i18n import tr as _

try:
    from DICOMLib import DICOMLoadable, DICOMPlugin
except ImportError:  # not in the Slicer application (the project's headless tests import the file without it)
    DICOMLoadable, DICOMPlugin = None, object

__all__ = ["FRAME", "GEOMETRY_CONFIDENCE", "NO_GEOMETRY_CONFIDENCE", "DICOMXVRPlugin", "DICOMXVRPluginClass",
           "registrationVolume"]

#: Above Scalar Volume (0.5) and Image Sequence (0.7), below 1: room for a more specialised plugin.
GEOMETRY_CONFIDENCE = 0.8
#: Below Scalar Volume (0.5): without a geometry the plain image is the better default.
NO_GEOMETRY_CONFIDENCE = 0.4
#: The frame choice of the panel's import by default (its ``frame`` parameter): the maximum over frames.
FRAME = "max"

logger = logging.getLogger(__name__)


def registrationVolume(scene):
    """The CT (or MRA) selected in the registration panel (its parameter node's ``inputVolume``), or None.

    The panel's import places an X-ray's header pose about that volume's centre; so does the plugin.
    """
    parameterNode = scene.GetSingletonNode("XVRRegistration", "vtkMRMLScriptedModuleNode")
    return parameterNode.GetNodeReference("inputVolume") if parameterNode is not None else None


class DICOMXVRPluginClass(DICOMPlugin):
    """Examines X-ray instances for their C-arm geometry and loads them as XVR X-ray nodes."""

    def __init__(self):
        super().__init__()
        self.loadType = _("XVR X-ray")
        self.tags["modality"] = "0008,0060"
        self.tags["sopClassUID"] = "0008,0016"
        self.tags["seriesNumber"] = "0020,0011"
        self.tags["seriesDescription"] = "0008,103E"
        self.tags["instanceNumber"] = "0020,0013"

    # -- examine -------------------------------------------------------------------------------------------

    def examineForImport(self, fileLists):
        """One loadable per X-ray instance of each file list (Slicer 5.10's base class examines nothing)."""
        from XVRCoreLib.slicersupport import dependencies_available

        cache = dependencies_available()  # what is examined without them changes once they are installed
        loadables = []
        for files in fileLists:
            found = self.getCachedLoadables(files) if cache else None
            if found is None:
                found = self.examineFiles(files)
                if cache:
                    self.cacheLoadables(files, found)
            loadables += found
        return loadables

    def examineFiles(self, files):
        """The X-ray instances among ``files`` (Modality and SOP Class UID from the DICOM database)."""
        from XVRCoreLib.xray_header import is_xray

        return [self._loadable(path) for path in files
                if is_xray(self._value(path, "modality"), self._value(path, "sopClassUID"))]

    def _value(self, path, tag: str) -> str:
        return (slicer.dicomDatabase.fileValue(path, self.tags[tag]) or "").strip()

    def _name(self, path) -> str:
        """``"3: XA Coronary [2]"`` (series number, modality, description, instance number), as Slicer names."""
        number, modality = self._value(path, "seriesNumber"), self._value(path, "modality")
        description, instance = self._value(path, "seriesDescription"), self._value(path, "instanceNumber")
        name = " ".join(part for part in (modality, description, f"[{instance}]" if instance else "") if part)
        return f"{number}: {name}" if number else name or Path(path).stem

    def _loadable(self, path):
        from XVRCoreLib.slicersupport import dependencies_available
        from XVRCoreLib.xray_header import xray_geometry_check

        loadable = DICOMLoadable()
        loadable.files = [path]
        loadable.name = self._name(path)
        loadable.selected = True
        loadable.confidence = NO_GEOMETRY_CONFIDENCE
        if not dependencies_available():
            loadable.tooltip = _("X-ray for XVR registration")
            loadable.warning = _("The XVR Python packages (PyTorch and others) are not installed yet, so the C-arm "
                                 "geometry cannot be checked; loading as an XVR X-ray installs them first.")
            return loadable
        check = xray_geometry_check(path, FRAME)
        if not check.ok:
            loadable.tooltip = _("X-ray without a C-arm geometry: {summary}").format(summary=check.summary())
            loadable.warning = _("No C-arm geometry: {problems}. Load it as a plain image, or import it in XVR "
                                 "Registration with the missing values.").format(problems="; ".join(check.problems))
            return loadable
        frames = _(" (the maximum over its frames)") if check.n_frames > 1 else ""
        loadable.tooltip = _("X-ray with its C-arm geometry for XVR registration{frames}: {summary}").format(
            frames=frames, summary=check.summary())
        loadable.confidence = GEOMETRY_CONFIDENCE
        return loadable

    # -- load ----------------------------------------------------------------------------------------------

    def load(self, loadable):
        """The XVR X-ray node of the loadable's file, made by the registration panel's import; None on failure."""
        if not self._ensureDependencies():
            return None
        from XVRRegistrationLib.imports import XrayImporter

        importer = XrayImporter()
        try:
            node = importer.importXray(loadable.files[0], slicer.mrmlScene, registrationVolume(slicer.mrmlScene),
                                       frame=FRAME, name=loadable.name)
        except (ValueError, OSError) as exc:  # the reader's XrayDicomError names the file and the remedy
            logger.error(str(exc))
            return None
        for warning in importer.warnings(node):
            logger.warning("%s: %s", node.GetName(), warning)
        self.addSeriesInSubjectHierarchy(loadable, node)
        return node

    @staticmethod
    def _ensureDependencies() -> bool:
        """Install the packages on first use, as the panel does (asking the user); False if they are missing."""
        from XVRCoreLib import slicersupport

        if slicersupport.dependencies_available():
            return True
        try:
            slicersupport.ensure_dependencies(str(Path(__file__).resolve().parent / "Resources" / "requirements.txt"))
        except RuntimeError as exc:
            logger.error(str(exc))
            return False
        return slicersupport.dependencies_available()


class DICOMXVRPlugin:
    """The hidden scripted module that makes the plugin known to the DICOM module."""

    def __init__(self, parent):
        # not translated: only developers see these strings (as in Slicer's own DICOM plugins)
        parent.title = "XVR DICOM Plugin"
        parent.categories = ["Developer Tools.DICOM Plugins"]
        parent.contributors = ["SlicerXVR developers"]
        parent.helpText = """
    Plugin to the DICOM module: loads X-ray images (XA, RF, DX, CR) with their C-arm geometry as X-rays of
    XVR Registration. No module interface here, only in the DICOM module.
    """
        parent.acknowledgementText = """
    Part of SlicerXVR, the Slicer extension of xvr (Gopalakrishnan et al.).
    """
        parent.dependencies = ["XVRCore"]  # XVRCoreLib and xvrcore
        parent.hidden = True
        if DICOMLoadable is None:
            return  # no DICOM module in this application: nothing to register with
        if not hasattr(slicer.modules, "dicomPlugins"):  # the DICOM module may be created after this module
            slicer.modules.dicomPlugins = {}
        slicer.modules.dicomPlugins["DICOMXVRPlugin"] = DICOMXVRPluginClass
