"""XVR Registration: 2D/3D registration of X-ray or DSA images to a CT or MRA, as Slicer loads it.

This file holds what Slicer's scripted-module template puts in a module file: the module (metadata), its
parameter node, the widget (it binds ``Resources/UI/XVRRegistration.ui`` to the parameter node and starts
and polls the background job) and the logic, both thin, and the in-Slicer test. The work is done by the
collaborators in ``XVRRegistrationLib`` (see its docstring).

One concept: the Slicer module, laid out as the scripted-module template lays it out. Slicer finds the module's
classes by name in this file, the parameter node and its enums must exist when the file is imported (before
xvrcore can be), and the widget is the template's (lifecycle, parameter-node binding, the job's timer); that
is what makes the file longer than ~400 lines. Everything else is in ``XVRRegistrationLib``.
"""

import enum
import os
import pathlib
from typing import Annotated

import slicer
import vtk
from slicer import (
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from XVRRegistrationLib import (
    BatchTable,
    Display,
    Overlays,
    PoseEditor,
    PoseReview,
    QAControls,
    RegistrationLauncher,
    Results,
    ReviewLayout,
    ReviewSection,
    XrayImporter,
    XraySection,
)

# torch, xvrcore and XVRCoreLib are imported lazily, inside the methods that need them: importing this file
# (and XVRRegistrationLib, next to it) must stay cheap, must work before the dependencies are installed and
# before Slicer has put the XVRCore module's folder on sys.path (in a source tree each module folder is its
# own module path). qt is imported inside the widget's methods, so that the logic can be imported (and
# tested) where only MRML exists.


XVR_CITATION = (
    "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume "
    "registration. arXiv:2503.16309."
)

LOG_MAX_LINES = 2000
POLL_INTERVAL_MS = 300


#
# XVRRegistration
#


class XVRRegistration(ScriptedLoadableModule):
    """Module metadata.

    Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("XVR Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = ["XVRCore"]
        self.parent.contributors = ["SlicerXVR developers"]
        self.parent.helpText = _("""
Register intraoperative X-ray or DSA images to a preoperative CT or MRA (2D/3D registration).
Import the X-ray DICOMs (from files or from Slicer's DICOM database) with their C-arm geometry; each is shown
on its detector plane, with the C-arm beam in 3D. The initial C-arm pose comes from a patient-specific
network trained in the XVR Training module, from the image's DICOM header, from landmarks placed on the
X-ray and on the CT, or from the current pose; it is then refined in a background process by matching
digitally reconstructed radiographs (DRR) to the image. Check the result with the DRR overlay, the
reprojected segment outlines, flicker and checkerboard comparisons and the quality score; nudge the pose by
hand in clinical terms (LAO/RAO, CRA/CAU, in-plane rotation, pan, magnification; undo; back to the registered
pose) and refine from there. The batch table lists every result and failure; "Next to check" walks through
the X-rays not yet marked checked, lowest quality first. The pose is a linear transform whose
TransformToParent maps the C-arm camera frame (origin at the X-ray source, +z toward the detector, mm) to
the CT's RAS frame.
Keyboard shortcuts while the panel is shown: Alt+arrows pan the image; Alt+Shift+Right/Left LAO/RAO;
Alt+Shift+Up/Down CRA/CAU; Alt+] / Alt+[ in-plane rotation; Alt+= / Alt+- magnification; Alt+Z undo;
Alt+B back to the registered pose; Alt+K mark checked; Alt+N next to check.
""")
        self.parent.acknowledgementText = _("SlicerXVR implements the method of:") + " " + XVR_CITATION


#
# XVRRegistrationParameterNode
#


class XVRRegistrationInitialization(enum.Enum):
    """Where the starting pose of the registration comes from."""

    dicom = "dicom"  # C-arm angles and distances in the X-ray's DICOM header
    model = "model"  # pose predicted by a patient-specific network (modelPath)
    landmarks = "landmarks"  # corresponding 2D/3D landmarks
    current = "current"  # the output transform's current value (manual alignment or a previous result)

    def label(self) -> str:
        return {
            XVRRegistrationInitialization.dicom: _("DICOM C-arm geometry"),
            XVRRegistrationInitialization.model: _("Trained model"),
            XVRRegistrationInitialization.landmarks: _("Landmarks"),
            XVRRegistrationInitialization.current: _("Current transform"),
        }[self]


class XVRRegistrationModality(enum.Enum):
    """The volume's modality (``xvrcore --modality``); ``auto`` leaves it to the core (DICOM Modality, else CT)."""

    auto = "auto"
    ct = "ct"
    mra = "mra"

    def label(self) -> str:
        return {
            XVRRegistrationModality.auto: _("Automatic"),
            XVRRegistrationModality.ct: _("CT"),
            XVRRegistrationModality.mra: _("MRA (vessels)"),
        }[self]


class XVRRegistrationDevice(enum.Enum):
    """Where the registration process runs; ``auto`` uses CUDA when available."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"

    def label(self) -> str:
        return {
            XVRRegistrationDevice.auto: _("Automatic"),
            XVRRegistrationDevice.cuda: _("GPU (CUDA)"),
            XVRRegistrationDevice.cpu: _("CPU"),
        }[self]


class XVRRegistrationBatchSort(enum.Enum):
    """The batch table's order (``XVRRegistrationLib.batch_rows.SORT_KEYS``; measures worst first)."""

    byName = "name"
    byStatus = "status"
    bySimilarity = "similarity"
    byQuality = "quality"

    def label(self) -> str:
        return {
            XVRRegistrationBatchSort.byName: _("Name"),
            XVRRegistrationBatchSort.byStatus: _("Status (failed first)"),
            XVRRegistrationBatchSort.bySimilarity: _("Similarity (lowest first)"),
            XVRRegistrationBatchSort.byQuality: _("Quality (lowest first)"),
        }[self]


@parameterNodeWrapper
class XVRRegistrationParameterNode:
    """
    The parameters needed by the module.

    inputVolume - The preoperative CT or MRA.
    inputSegmentation - Optional segments: their outlines are reprojected onto the X-ray.
    xrayVolume - The current intraoperative X-ray or DSA (a single-slice volume on its detector plane).
    outputTransform - The current X-ray's C-arm pose (TransformToParent = camera to world).
    initialization - Source of the starting pose.
    modelPath - Trained model (folder or xvr .pth) for the "model" initialization.
    modelRepository - Or a Hugging Face repository of a model ("owner/name").
    xrayLandmarks, volumeLandmarks - Corresponding points on the X-ray and in the CT ("landmarks").
    frame - Frame of multi-frame images: max, min, mean or a frame number.
    maskFrame - DSA mask frame subtracted from the image (-1: none).
    pixelSpacing, sourceDetectorDistance, sourceIsocenterDistance - Geometry overrides (0: from the header).
    overrideAngles, primaryAngle, secondaryAngle - C-arm angle overrides.
    registerAll - Register every imported X-ray at once (else the current one).
    outputDirectory - Where the results (pose JSON, transform, pictures) are written.
    device - Compute device of the registration process.
    drrOpacity - Opacity of the DRR over the X-ray.
    showOutlines - Show the reprojected segment outlines.
    nudgeRotation - Step of LAO/RAO, CRA/CAU and the in-plane rotation (degrees).
    nudgeTranslation - Step of the pan (mm at the isocentre, in the image plane).
    nudgeDepth - Step of the magnification (mm along the beam).
    batchSort - Order of the batch table.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    modality: XVRRegistrationModality = XVRRegistrationModality.auto  # CT, MRA or automatic (the core decides)
    vessels: vtkMRMLSegmentationNode  # optional MRA vessel segmentation
    xrayVolume: vtkMRMLScalarVolumeNode
    outputTransform: vtkMRMLLinearTransformNode
    initialization: XVRRegistrationInitialization = XVRRegistrationInitialization.dicom
    modelPath: pathlib.Path
    modelRepository: str = ""
    xrayLandmarks: vtkMRMLMarkupsFiducialNode
    volumeLandmarks: vtkMRMLMarkupsFiducialNode
    frame: str = "max"
    maskFrame: Annotated[int, WithinRange(-1, 10000)] = -1
    pixelSpacing: Annotated[float, WithinRange(0, 10)] = 0.0
    sourceDetectorDistance: Annotated[float, WithinRange(0, 5000)] = 0.0
    sourceIsocenterDistance: Annotated[float, WithinRange(0, 5000)] = 0.0
    overrideAngles: bool = False
    primaryAngle: Annotated[float, WithinRange(-180, 180)] = 0.0
    secondaryAngle: Annotated[float, WithinRange(-90, 90)] = 0.0
    registerAll: bool = False
    outputDirectory: pathlib.Path
    device: XVRRegistrationDevice = XVRRegistrationDevice.auto
    drrOpacity: Annotated[float, WithinRange(0, 1)] = 0.5
    showOutlines: bool = True
    nudgeRotation: Annotated[float, WithinRange(0.01, 45)] = 1.0
    nudgeTranslation: Annotated[float, WithinRange(0.01, 100)] = 2.0
    nudgeDepth: Annotated[float, WithinRange(0.1, 500)] = 10.0
    batchSort: XVRRegistrationBatchSort = XVRRegistrationBatchSort.byStatus


#
# XVRRegistrationWidget
#


class XVRRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The registration panel: binds its .ui to the parameter node, starts and polls the registration job.

    The X-ray and review parts of the panel are ``XVRRegistrationLib.panel``'s sections; the logic does the work.
    """

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None  # the binding's tags (XVRCoreLib.panel_widgets.bind_parameter_node)
        self._job = None
        self._timer = None
        self._outcome = ""  # the last job's outcome, shown until the next job starts
        self._reviewShown = False  # the review layout was shown for the current job (once: the user may leave it)
        self._volumeFilter = None
        self.xraySection = None
        self.reviewSection = None
        self.qaControls = None
        self.batchTable = None
        self._estimateKey = None  # what the time estimate shown is for

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        import qt

        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XVRRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        from XVRCoreLib.job_files import bind_keep_checkbox

        bind_keep_checkbox(self.ui.keepTemporaryFilesCheckBox)  # one setting for both panels, not a parameter

        # Set scene in MRML widgets. The .ui connects the root widget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot. The selectors offer what each
        # parameter can take, by the XVR.Role the panels give their nodes: X-rays; an X-ray's pose or a new
        # one (a new node gets the role too); the CT/MRA selector hides X-rays, DRRs, outlines, checkerboards.
        from XVRCoreLib.panel_widgets import SourceVolumeFilter
        from XVRCoreLib.poses import POSE_ROLE

        self.ui.xrayVolumeSelector.addAttribute("vtkMRMLScalarVolumeNode", "XVR.Role", "xray")
        self.ui.outputTransformSelector.addAttribute("vtkMRMLLinearTransformNode", "XVR.Role", POSE_ROLE)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._volumeFilter = SourceVolumeFilter(self.ui.inputVolumeSelector, slicer.mrmlScene)

        self.logic = XVRRegistrationLogic()
        self.logic.layout.register(slicer.app.layoutManager().layoutLogic().GetLayoutNode())
        self.xraySection = XraySection(self.ui, self.logic, lambda: self._parameterNode, self._log,
                                       self._showStatus)
        self.reviewSection = ReviewSection(self.ui, self.logic, lambda: self._parameterNode, self._log,
                                           self.xraySection.show)
        self.xraySection.beforeShow = self.reviewSection.stopComparisons
        self.qaControls = QAControls(self.ui, self.logic, lambda: self._parameterNode, self._log,
                                     self.xraySection.show, self.parent)
        self.batchTable = BatchTable(self.ui, self.logic, lambda: self._parameterNode, self._log)

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        for section in (self.xraySection, self.reviewSection, self.qaControls, self.batchTable):
            section.connect()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.logTextEdit.setMaximumBlockCount(LOG_MAX_LINES)
        self.ui.logTextEdit.setReadOnly(True)

        # The job is polled from a timer, so Slicer stays responsive.
        self.ui.progressBar.setVisible(False)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._timer is not None:
            self._timer.stop()
        for section in (self.xraySection, self.reviewSection):
            if section is not None:
                section.cleanup()
        if self._job is not None and self._job.running:
            self._job.cancel()
        if self._volumeFilter is not None:
            self._volumeFilter.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.qaControls.setShortcutsEnabled(True)
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        # Do not react to parameter node changes (GUI will be updated when the user enters into the module)
        from XVRCoreLib.panel_widgets import unbind_parameter_node

        self.reviewSection.stopComparisons()  # no flicker left running in a view the panel no longer shows
        self.qaControls.setShortcutsEnabled(False)  # the keys are other modules' again
        if self._parameterNode:
            unbind_parameter_node(self._parameterNode, self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed: a running registration stops (its X-rays are going)."""
        self.reviewSection.stopComparisons()
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._log(_("The scene was closed: the registration was cancelled."))
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        """A loaded scene (.mrb): bring an older scene's nodes up to date (plain MRML, always), then give
        its X-ray planes in the 3D view their image back.

        The textures need the dependencies; before they are installed (a scene can be loaded before the
        panel was ever used) nothing of them is imported.
        """
        self.logic.xrays.upgradeScene(slicer.mrmlScene)
        if self._parameterNode:
            self.xraySection.resetSelection()
            self.batchTable.update(force=True)  # the rows are the loaded X-rays' attributes
        if not self.logic.dependenciesAvailable():
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to restore the X-ray planes."), show=False):
            self.logic.xrays.restorePlaneTextures(slicer.mrmlScene)

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        from XVRCoreLib.panel_widgets import default_source_volume, is_unset_path

        p = self.logic.getParameterNode()
        # Select default input nodes if nothing is selected yet to save a few clicks for the user: a CT or
        # MRA the user loaded (no X-ray, DRR or label map).
        if not p.inputVolume:
            p.inputVolume = default_source_volume(slicer.mrmlScene)
        # The model trained in XVR Training, unless the user chose one: then it is where the pose starts.
        if is_unset_path(p.modelPath) and not p.modelRepository:
            trained = self.logic.launcher.trainedModel(slicer.mrmlScene)
            if trained:
                p.modelPath = pathlib.Path(trained)
                p.initialization = XVRRegistrationInitialization.model
        self.setParameterNode(p)

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe parameter node.

        Observation is needed because the GUI must be updated immediately when the parameter node changes.
        """
        from XVRCoreLib.panel_widgets import bind_parameter_node, unbind_parameter_node

        if self._parameterNode:
            unbind_parameter_node(self._parameterNode, self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Note: in the .ui file, a Qt dynamic property called "SlicerParameterName" is set on each
            # ui element that needs connection (path fields: bound so that an unset path shows empty).
            self._parameterNodeGuiTag = bind_parameter_node(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.xraySection.resetSelection()
            self.batchTable.update(force=True)  # this scene's rows (none after a close)
            self._updateEstimate()
            self._checkCanApply()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """The one reaction to parameter changes (GUI edits included): the selection, then the buttons."""
        if not self._parameterNode:
            return
        self.xraySection.selectionChanged()
        self.batchTable.update()
        self._updateEstimate()
        self._checkCanApply()

    def _updateEstimate(self) -> None:
        """The expected time of a registration of the selected X-ray(s) on the chosen device, before Start."""
        from XVRRegistrationLib.time_estimate import estimateText

        p = self._parameterNode
        xrays = self.logic.xrays.xrayNodes(slicer.mrmlScene) if p.registerAll else [p.xrayVolume]
        xrays = [x for x in xrays if self.logic.xrays.isXray(x) and x.GetImageData() is not None]
        key = (tuple((x.GetID(), x.GetImageData().GetDimensions()) for x in xrays), p.device)
        if key == self._estimateKey:  # the observer runs on every edit; the estimate changes with these only
            return
        self._estimateKey = key
        known = xrays and self.logic.dependenciesAvailable()  # the estimate is the core's (torch)
        self.ui.timeEstimateLabel.text = estimateText(xrays, p.device.value) if known else ""

    def _checkCanApply(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        p = self._parameterNode
        init = p.initialization
        self.ui.modelPathLineEdit.enabled = init == XVRRegistrationInitialization.model
        self.ui.modelRepositoryLineEdit.enabled = init == XVRRegistrationInitialization.model
        self.ui.xrayLandmarksSelector.enabled = init == XVRRegistrationInitialization.landmarks
        self.ui.volumeLandmarksSelector.enabled = init == XVRRegistrationInitialization.landmarks
        self.ui.primaryAngleSpinBox.enabled = p.overrideAngles
        self.ui.secondaryAngleSpinBox.enabled = p.overrideAngles
        running = self._job is not None and self._job.running
        hasXray = p.xrayVolume is not None and self.logic.xrays.isXray(p.xrayVolume)
        for name in ("refineButton", "exportButton", "flickerButton", "checkerboardButton", "reloadFrameButton"):
            getattr(self.ui, name).enabled = hasXray and not running
        self.qaControls.updateButtons(running)
        if running:
            self.ui.applyButton.text = _("Cancel") if not self._job.cancelRequested else _("Cancelling...")
            self.ui.applyButton.enabled = not self._job.cancelRequested
            return
        problems = self.logic.inputProblems(p)
        self.ui.applyButton.text = _("Register all") if p.registerAll else _("Register")
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Register in the background.")
        # The last outcome stays on top until the next job starts; then what is missing, if anything.
        lines = ([self._outcome] if self._outcome else []) + (problems or ([] if self._outcome else [_("Inputs are complete.")]))
        self.ui.statusLabel.text = "\n".join(lines)

    def _log(self, *lines) -> None:
        for line in lines:
            self.ui.logTextEdit.appendPlainText(str(line))

    def _showStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    # -- registration -----------------------------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._log(_("Cancel requested: finished X-rays keep their results."))
            self._checkCanApply()
            return
        self._register(self._parameterNode.initialization)

    def onRefineButton(self) -> None:
        self._register(XVRRegistrationInitialization.current, onlyCurrent=True)

    def _register(self, initialization, onlyCurrent=False) -> None:
        from XVRCoreLib.panel_widgets import remember_paths

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=True):
            self.logic.ensureDependencies(log=self._log, status=self._showStatus)
            remember_paths(self.ui.outputDirectoryPathLineEdit, self.ui.modelPathLineEdit)
            xrays = [p.xrayVolume] if onlyCurrent or not p.registerAll else self.logic.xrays.xrayNodes(slicer.mrmlScene)
            self._job = self.logic.launcher.startRegistration(
                xrays, p.inputVolume, p.inputSegmentation, initialization.value, p.outputDirectory,
                modelPath=p.modelPath, modelRepository=p.modelRepository, xrayLandmarks=p.xrayLandmarks,
                volumeLandmarks=p.volumeLandmarks, device=p.device.value, modality=p.modality.value,
                vesselNode=p.vessels)
            self.ui.logTextEdit.clear()
            self._outcome = ""
            self._reviewShown = False
            for command in self._job.commands:
                self._log(" ".join(command))
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = 0
            self._timer.start()
            self._checkCanApply()

    def onPoll(self) -> None:
        if self._job is None or not self._job.running:  # a tick queued after the end reports nothing twice
            self._timer.stop()
            return
        p = self._parameterNode  # None while the scene closes or the module is not set up for a scene
        update = self._job.poll()
        self._log(*update["log"])
        self.ui.progressBar.value = int(1000 * update["fraction"])
        if update["status"]:
            self.ui.statusLabel.text = update["status"]
        applied = False
        for xrayNode, jsonPath in update["results"]:
            if p is None or slicer.mrmlScene.GetNodeByID(xrayNode.GetID()) is not xrayNode:
                self._log(_("{json}: its X-ray is no longer in the scene; the result is left in the folder.").format(
                    json=jsonPath))
                continue
            with slicer.util.tryWithErrorDisplay(_("Failed to load the result."), waitCursor=True):
                self.logic.results.applyResult(xrayNode, jsonPath, p.inputVolume,
                                               p.inputSegmentation if p.showOutlines else None)
                applied = True
                if not self._reviewShown:  # the first result of the job: the views to check it in
                    self._reviewShown = True
                    self.logic.layout.switchTo(slicer.app.layoutManager())
                    self.xraySection.show(p.xrayVolume)
                elif xrayNode is p.xrayVolume:
                    self.xraySection.show(xrayNode)
        if self.batchTable.recordFailures(update["failed"]) or applied:
            self.batchTable.update(force=True)
        if update["finished"]:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
            self._finish(update["status"] or "", bool(self._job.failures) or self._job.failed)
            self._checkCanApply()

    def _finish(self, outcome: str, failed: bool) -> None:
        """Keep the job's outcome visible in the panel and the log; a failure also gets a dialog."""
        import logging

        self._outcome = outcome
        self._log(outcome)
        if failed:
            details = [f for f in self._job.failures if f]
            logging.getLogger(__name__).error("XVR Registration: %s\n%s", outcome, "\n".join(details))
            slicer.util.errorDisplay(outcome, detailedText="\n".join(details))


#
# XVRRegistrationLogic
#


class XVRRegistrationLogic(ScriptedLoadableModuleLogic):
    """Everything the registration panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets; takes the scene and the nodes explicitly (new nodes go to the scene of the nodes
    given). The work is split among collaborators with one job each (``XVRRegistrationLib``):
    ``xrays`` imports X-rays, ``poses`` changes their poses, ``review`` nudges them in clinical terms with
    undo, ``overlays`` renders the DRR, outlines and checkerboard, ``display`` shows them in the views,
    ``launcher`` starts the background job and ``results`` applies and exports its results, ``layout`` is
    the review layout.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.xrays = XrayImporter()
        self.poses = PoseEditor()
        self.review = PoseReview(self.poses)
        self.overlays = Overlays(self.xrays)
        self.display = Display(self.overlays)
        self.launcher = RegistrationLauncher()
        self.results = Results(self.poses, self.overlays, self.review)
        self.layout = ReviewLayout()

    def getParameterNode(self):
        return XVRRegistrationParameterNode(super().getParameterNode())

    def resourcePath(self, relativePath: str) -> str:
        """Absolute path of a file in this module's Resources folder."""
        moduleDir = os.path.dirname(os.path.abspath(__file__))
        return os.path.join(moduleDir, "Resources", relativePath)

    @staticmethod
    def coreVersion() -> str:
        from XVRCoreLib import slicersupport

        return slicersupport.core_version()

    @staticmethod
    def inputProblems(parameterNode) -> list:
        """Human-readable reasons why the registration cannot start with these parameters (empty if none)."""
        problems = []
        volume, xray = parameterNode.inputVolume, parameterNode.xrayVolume
        if not volume:
            problems.append(_("Select the CT or MRA volume."))
        if not xray:
            problems.append(_("Select the X-ray image."))
        elif volume and xray.GetID() == volume.GetID():
            problems.append(_("The X-ray image and the CT/MRA volume must be different nodes."))
        init = parameterNode.initialization
        if (init == XVRRegistrationInitialization.model and str(parameterNode.modelPath) in ("", ".")
                and not parameterNode.modelRepository.strip()):
            problems.append(_("Select the trained model file."))
        if init == XVRRegistrationInitialization.landmarks and not (parameterNode.xrayLandmarks
                                                                   and parameterNode.volumeLandmarks):
            problems.append(_("Select the landmarks on the X-ray and in the CT."))
        if not parameterNode.outputTransform:
            problems.append(_("Select or create the output transform."))
        if str(parameterNode.outputDirectory) in ("", "."):
            problems.append(_("Select an output directory for the results."))
        return problems

    def ensureDependencies(self, log=None, status=None) -> None:
        """Install the Python packages this module needs, asking the user once. Call on first use only.

        ``log(line)`` gets the installers' output and ``status(text)`` each step (the panel shows both).
        """
        from XVRCoreLib import slicersupport

        slicersupport.ensure_dependencies(self.resourcePath("requirements.txt"), log=log, status=status)

    @staticmethod
    def dependenciesAvailable() -> bool:
        """Whether torch and the core's packages can be imported (checked without importing them)."""
        from XVRCoreLib import slicersupport

        return slicersupport.dependencies_available()


#
# XVRRegistrationTest
#


class XVRRegistrationTest(ScriptedLoadableModuleTest):
    """In-Slicer tests of XVRRegistration, run by "Reload and Test" and by ctest (slicer_add_python_unittest).

    Kept small and data-free so that they can run on build machines without a GPU or downloads: the X-ray
    is synthesized from a synthetic CT with xvrcore.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here.

        Skipped, not failed, before the dependencies are installed (as SlicerTotalSegmentator does): the
        extension build machines and a first "Reload and Test" have no torch.
        """
        from XVRCoreLib import slicersupport

        if slicersupport.skipped_without_dependencies(self):
            return
        self.setUp()
        self.test_XVRRegistration1()
        self.setUp()
        self.test_XVRRegistrationImportAndOverlay()

    def test_XVRRegistration1(self):
        """The core library is importable and the parameter node has the documented defaults."""
        self.delayDisplay("Starting the test")
        logic = XVRRegistrationLogic()

        self.assertTrue(logic.coreVersion())

        parameterNode = logic.getParameterNode()
        self.assertIsNone(parameterNode.inputVolume)
        self.assertIsNone(parameterNode.xrayVolume)
        self.assertIsNone(parameterNode.outputTransform)
        self.assertEqual(parameterNode.initialization, XVRRegistrationInitialization.dicom)
        self.assertEqual(len(logic.inputProblems(parameterNode)), 4)

        parameterNode.inputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
        parameterNode.xrayVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "X-ray")
        parameterNode.outputTransform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        parameterNode.outputDirectory = pathlib.Path(slicer.app.temporaryPath)
        self.assertEqual(logic.inputProblems(parameterNode), [])

        # A model initialization needs a checkpoint file.
        parameterNode.initialization = XVRRegistrationInitialization.model
        self.assertEqual(len(logic.inputProblems(parameterNode)), 1)

        self.delayDisplay("Test passed")

    def test_XVRRegistrationImportAndOverlay(self):
        """A synthetic XA DICOM of a synthetic CT: imported on its detector plane, DRR and outline overlays."""
        import numpy as np
        import torch
        from xvrcore.drr import DRRVolume
        from xvrcore.geometry.camera import Detector
        from xvrcore.geometry.positioner import pose_from_positioner
        from xvrcore.volume import to_attenuation, volume_from_array
        from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom
        from XVRCoreLib.volumes import segmentation_from_labelmap, volume_node_from_volume

        self.delayDisplay("Synthesizing a CT and an X-ray")
        data = np.full((40, 48, 48), -1000.0, dtype=np.float32)
        data[10:30, 12:36, 12:36] = 0.0
        data[15:25, 20:28, 20:28] = 1200.0
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        ct = volume_from_array(data, affine, kind="ct")
        ctNode = volume_node_from_volume(slicer.mrmlScene, ct, name="CT")
        labels = volume_from_array((data > 500).astype(np.int16), affine, kind="labels")
        segmentationNode = segmentation_from_labelmap(slicer.mrmlScene, labels, {1: "bone"}, {1: (255, 200, 0)})
        detector = Detector(1000.0, 64, 64, 1.5, 1.5)
        pose = pose_from_positioner(20.0, 10.0, 700.0, torch.as_tensor(ct.center))
        image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector, rng=np.random.default_rng(0))
        path = pathlib.Path(slicer.app.temporaryPath) / "XVRRegistrationTest.dcm"
        write_xray_dicom(path, image, detector, pose, ct.center)

        logic = XVRRegistrationLogic()
        xrayNode = logic.xrays.importXray(path, slicer.mrmlScene, ctNode)
        self.assertTrue(logic.xrays.isXray(xrayNode))
        np.testing.assert_allclose(logic.poses.pose(xrayNode)[:3, 3], pose.numpy()[:3, 3], atol=1.0)
        drrNode, outlineNode = logic.overlays.updateOverlays(xrayNode, ctNode, segmentationNode)
        self.assertGreater(slicer.util.arrayFromVolume(drrNode).max(), 0)
        self.assertGreater((slicer.util.arrayFromVolume(outlineNode) > 0).sum(), 0)
        logic.display.showXray(xrayNode, slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode())
        logic.poses.nudge(xrayNode, (0.0, 0.0, 5.0), (2.0, 0.0, 0.0), ctNode)
        transformPath, jsonPath = logic.results.exportPose(xrayNode, slicer.app.temporaryPath)
        self.assertTrue(transformPath.exists() and jsonPath.exists())
        self.delayDisplay("Test passed")
