import enum
import json
import os
import pathlib
import shutil
import time
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

# torch, xvrcore and XVRCoreLib are imported lazily, inside the methods that need them: importing this file
# must stay cheap, must work before the dependencies are installed and before Slicer has put the XVRCore
# module's folder on sys.path (in a source tree each module folder is its own module path). qt is imported
# inside the widget's methods, so that the logic can be imported (and tested) where only MRML exists.


XVR_CITATION = (
    "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume "
    "registration. arXiv:2503.16309."
)

LOG_MAX_LINES = 2000
POLL_INTERVAL_MS = 300
FLICKER_INTERVAL_MS = 600
DISPLAY_SIZE = 256  # longer side (pixels) of the DRR, outline and checkerboard images shown over the X-ray
XRAY_MODALITIES = ("XA", "RF", "DX", "CR", "RG", "MG", "OT")


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
hand and refine from there. The pose is a linear transform whose TransformToParent maps the C-arm camera
frame (origin at the X-ray source, +z toward the detector, mm) to the CT's RAS frame.
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
    nudgeRotation, nudgeTranslation - Step of the manual pose adjustment (degrees, mm).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
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


#
# XVRRegistrationWidget
#


class XVRRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The registration panel: binds its .ui to the parameter node; the logic does the work."""

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._flickerTimer = None
        self._observedTransform = None
        self._shownXray = None

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        import qt

        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XVRRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets. The .ui connects the root widget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot.
        self.ui.xrayVolumeSelector.addAttribute("vtkMRMLScalarVolumeNode", "XVR.Role", "xray")  # X-rays only
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XVRRegistrationLogic()

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.ui.importFilesButton.connect("clicked(bool)", self.onImportFiles)
        self.ui.importDicomButton.connect("clicked(bool)", self.onImportDicom)
        self.ui.reloadFrameButton.connect("clicked(bool)", self.onReloadFrame)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.flickerButton.connect("toggled(bool)", self.onFlicker)
        self.ui.checkerboardButton.connect("toggled(bool)", self.onCheckerboard)
        self.ui.xrayVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onXrayChanged)
        self.ui.outputTransformSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onTransformChanged)
        self.ui.xrayLandmarksSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onXrayLandmarksChanged)
        self.ui.drrOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.showOutlinesCheckBox.connect("toggled(bool)", self.onShowOutlines)
        self.ui.resultsTable.connect("cellClicked(int,int)", self.onResultClicked)
        nudges = {
            "rotateXMinusButton": ((-1, 0, 0), None), "rotateXPlusButton": ((1, 0, 0), None),
            "rotateYMinusButton": ((0, -1, 0), None), "rotateYPlusButton": ((0, 1, 0), None),
            "rotateZMinusButton": ((0, 0, -1), None), "rotateZPlusButton": ((0, 0, 1), None),
            "translateXMinusButton": (None, (-1, 0, 0)), "translateXPlusButton": (None, (1, 0, 0)),
            "translateYMinusButton": (None, (0, -1, 0)), "translateYPlusButton": (None, (0, 1, 0)),
            "translateZMinusButton": (None, (0, 0, -1)), "translateZPlusButton": (None, (0, 0, 1)),
        }
        for name, (rotation, translation) in nudges.items():
            getattr(self.ui, name).connect("clicked()", lambda r=rotation, t=translation: self.onNudge(r, t))
        self.ui.logTextEdit.setMaximumBlockCount(LOG_MAX_LINES)
        self.ui.logTextEdit.setReadOnly(True)
        self.ui.resultsTable.setColumnCount(4)
        self.ui.resultsTable.setHorizontalHeaderLabels([_("X-ray"), _("Similarity"), _("P(<1 mm)"), _("Quality")])

        # Jobs are polled from timers, so Slicer stays responsive.
        self.ui.progressBar.setVisible(False)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self._flickerTimer = qt.QTimer()
        self._flickerTimer.setInterval(FLICKER_INTERVAL_MS)
        self._flickerTimer.connect("timeout()", self.onFlickerTick)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        for timer in (self._timer, self._flickerTimer):
            if timer is not None:
                timer.stop()
        if self._job is not None and self._job.running:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        # Do not react to parameter node changes (GUI will be updated when the user enters into the module)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        """A loaded scene (.mrb): give its X-ray planes in the 3D view their image back."""
        self.logic.restorePlaneTextures(slicer.mrmlScene)

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        # Select default input nodes if nothing is selected yet to save a few clicks for the user
        if not p.inputVolume:
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if not self.logic.isXray(node):
                    p.inputVolume = node
                    break
        # The model trained in XVR Training, unless the user chose one.
        if str(p.modelPath) in ("", ".") and not p.modelRepository:
            trained = self.logic.trainedModel(slicer.mrmlScene)
            if trained:
                p.modelPath = pathlib.Path(trained)

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe parameter node.

        Observation is needed because the GUI must be updated immediately when the parameter node changes.
        """
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Note: in the .ui file, a Qt dynamic property called "SlicerParameterName" is set on each
            # ui element that needs connection.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

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
        hasXray = p.xrayVolume is not None and self.logic.isXray(p.xrayVolume)
        for name in ("refineButton", "exportButton", "flickerButton", "checkerboardButton", "reloadFrameButton"):
            getattr(self.ui, name).enabled = hasXray and not running
        if running:
            self.ui.applyButton.text = _("Cancel") if not self._job.cancelRequested else _("Cancelling...")
            self.ui.applyButton.enabled = not self._job.cancelRequested
            return
        problems = self.logic.inputProblems(p)
        self.ui.applyButton.text = _("Register all") if p.registerAll else _("Register")
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Register in the background.")
        self.ui.statusLabel.text = "\n".join(problems) if problems else _("Inputs are complete.")

    def _log(self, *lines) -> None:
        for line in lines:
            self.ui.logTextEdit.appendPlainText(str(line))

    def _sliceNode(self):
        return slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()

    def _overrides(self) -> dict:
        p = self._parameterNode
        return self.logic.overrides(p.pixelSpacing, p.sourceDetectorDistance, p.sourceIsocenterDistance,
                                    (p.primaryAngle, p.secondaryAngle) if p.overrideAngles else None)

    def _show(self, xrayNode) -> None:
        """Show the X-ray, its DRR and outlines in the Red view, aligned to the detector plane; the CT in 3D."""
        if xrayNode is None or not self.logic.isXray(xrayNode):
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to show the X-ray."), waitCursor=True):
            if p.inputVolume is not None:
                self.logic.updateOverlays(xrayNode, p.inputVolume, p.inputSegmentation if p.showOutlines else None)
            self.logic.showXray(xrayNode, self._sliceNode(), p.drrOpacity, p.showOutlines)
            if p.inputVolume is not None:
                self.logic.show3D(p.inputVolume, p.inputSegmentation)
            slicer.app.layoutManager().sliceWidget("Red").sliceLogic().FitSliceToBackground()
            self._shownXray = xrayNode

    # -- import ------------------------------------------------------------------------------------------------

    def onImportFiles(self) -> None:
        import qt

        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Import X-ray / DSA DICOM files"), "", _("DICOM files (*.dcm *.DCM *.dicom *.ima *);;All files (*)"))
        if paths:
            self._import(list(paths))

    def onImportDicom(self) -> None:
        import qt

        with slicer.util.tryWithErrorDisplay(_("Failed to read the DICOM database."), waitCursor=True):
            series = self.logic.dicomDatabaseXraySeries()
        if not series:
            slicer.util.infoDisplay(_("The DICOM database holds no X-ray (XA, RF, DX, CR) series. Import the files in the DICOM module first."))
            return
        dialog = qt.QDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(_("X-ray series in the DICOM database"))
        layout = qt.QVBoxLayout(dialog)
        listWidget = qt.QListWidget()
        listWidget.setSelectionMode(qt.QAbstractItemView.ExtendedSelection)
        for row in series:
            listWidget.addItem(row["label"])
        layout.addWidget(listWidget)
        buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
        buttons.connect("accepted()", dialog.accept)
        buttons.connect("rejected()", dialog.reject)
        layout.addWidget(buttons)
        if not dialog.exec_():
            return
        files = [f for index in listWidget.selectedIndexes() for f in series[index.row()]["files"]]
        self._import(files)

    def _import(self, paths) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to import the X-rays."), waitCursor=True):
            self.logic.ensureDependencies()
            nodes, errors = self.logic.importXrays(paths, slicer.mrmlScene, p.inputVolume, frame=p.frame,
                                                   maskFrame=p.maskFrame, overrides=self._overrides())
            for error in errors:
                self._log(error)
            for node in nodes:
                for warning in self.logic.warnings(node):
                    self._log(f"{node.GetName()}: {warning}")
            if nodes:
                p.xrayVolume = nodes[-1]
                self._show(nodes[-1])
                self._log(_("Imported {n} X-ray(s).").format(n=len(nodes)))
            if errors and not nodes:
                raise ValueError("\n".join(errors))

    def onReloadFrame(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to read the frame."), waitCursor=True):
            self.logic.reloadXray(p.xrayVolume, frame=p.frame, maskFrame=p.maskFrame, overrides=self._overrides())
            self._show(p.xrayVolume)

    # -- selection ---------------------------------------------------------------------------------------------

    def onXrayChanged(self, node) -> None:
        if node is None or not self.logic.isXray(node):
            return
        poseNode = self.logic.poseNode(node)
        if poseNode is not None and self._parameterNode.outputTransform is not poseNode:
            self._parameterNode.outputTransform = poseNode
        self._observePose(poseNode)
        self._show(node)

    def onTransformChanged(self, node) -> None:
        xray = self._parameterNode.xrayVolume if self._parameterNode else None
        if node is None or xray is None or not self.logic.isXray(xray):
            return
        if self.logic.poseNode(xray) is not node:
            self.logic.usePoseNode(xray, node)
            self._observePose(node)
            self._show(xray)

    def onXrayLandmarksChanged(self, node) -> None:
        """Points placed on the X-ray move with it: the markups go under the X-ray's pose transform."""
        xray = self._parameterNode.xrayVolume if self._parameterNode else None
        if node is not None and xray is not None and self.logic.isXray(xray):
            self.logic.attachToXray(node, xray)

    def _observePose(self, poseNode) -> None:
        if self._observedTransform is not None:
            self.removeObserver(self._observedTransform, slicer.vtkMRMLTransformNode.TransformModifiedEvent,
                                self.onPoseModified)
        self._observedTransform = poseNode
        if poseNode is not None:
            self.addObserver(poseNode, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified)

    def onPoseModified(self, caller, event) -> None:
        """The pose was edited (Transforms module, nudge, result): keep the images on the detector plane."""
        xray = self._parameterNode.xrayVolume if self._parameterNode else None
        if xray is not None and self.logic.poseNode(xray) is caller:
            self.logic.followPose(xray)

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
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=True):
            self.logic.ensureDependencies()
            xrays = [p.xrayVolume] if onlyCurrent or not p.registerAll else self.logic.xrayNodes(slicer.mrmlScene)
            self._job = self.logic.startRegistration(
                xrays, p.inputVolume, p.inputSegmentation, initialization.value, p.outputDirectory,
                modelPath=p.modelPath, modelRepository=p.modelRepository, xrayLandmarks=p.xrayLandmarks,
                volumeLandmarks=p.volumeLandmarks, device=p.device.value)
            self.ui.logTextEdit.clear()
            for command in self._job.commands:
                self._log(" ".join(command))
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = 0
            self._timer.start()
            self._checkCanApply()

    def onPoll(self) -> None:
        if self._job is None:
            self._timer.stop()
            return
        p = self._parameterNode
        update = self._job.poll()
        self._log(*update["log"])
        self.ui.progressBar.value = int(1000 * update["fraction"])
        if update["status"]:
            self.ui.statusLabel.text = update["status"]
        for xrayNode, jsonPath in update["results"]:
            with slicer.util.tryWithErrorDisplay(_("Failed to load the result."), waitCursor=True):
                self.logic.applyResult(xrayNode, jsonPath, p.inputVolume, p.inputSegmentation if p.showOutlines else None)
                if xrayNode is p.xrayVolume:
                    self._show(xrayNode)
        if update["results"]:
            self._updateResultsTable()
        if update["finished"]:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
            self._log(update["status"])
            self._checkCanApply()

    def _updateResultsTable(self) -> None:
        import qt

        rows = self.logic.qualityRows(slicer.mrmlScene)
        table = self.ui.resultsTable
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row["name"], f"{row['similarity']:.3f}", f"{row['p_submillimetre']:.2f}",
                     _("pass") if row["passed"] else _("CHECK")]
            for c, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                if c == 3:
                    item.setForeground(qt.QBrush(qt.QColor("green" if row["passed"] else "red")))
                item.setData(qt.Qt.UserRole, row["id"])
                table.setItem(r, c, item)

    def onResultClicked(self, row, column) -> None:
        import qt

        item = self.ui.resultsTable.item(row, 0)
        node = slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) if item is not None else None
        if node is not None:
            self._parameterNode.xrayVolume = node

    # -- quality assurance ------------------------------------------------------------------------------------

    def onOpacityChanged(self, value) -> None:
        self.logic.setForegroundOpacity(slicer.mrmlScene, self._sliceNode(), value)

    def onShowOutlines(self, checked) -> None:
        self._show(self._parameterNode.xrayVolume)

    def onFlicker(self, checked) -> None:
        if checked:
            self._flickerState = False
            self._flickerTimer.start()
        else:
            self._flickerTimer.stop()
            self.logic.setForegroundOpacity(slicer.mrmlScene, self._sliceNode(), self._parameterNode.drrOpacity)

    def onFlickerTick(self) -> None:
        self._flickerState = not getattr(self, "_flickerState", False)
        self.logic.setForegroundOpacity(slicer.mrmlScene, self._sliceNode(), 1.0 if self._flickerState else 0.0)

    def onCheckerboard(self, checked) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to build the checkerboard."), waitCursor=True):
            if checked:
                self.logic.showCheckerboard(p.xrayVolume, self._sliceNode())
            else:
                self._show(p.xrayVolume)

    def onNudge(self, rotation, translation) -> None:
        p = self._parameterNode
        if p.xrayVolume is None or not self.logic.isXray(p.xrayVolume):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to move the pose."), waitCursor=True):
            rotationDeg = [v * p.nudgeRotation for v in rotation] if rotation else (0.0, 0.0, 0.0)
            translationMm = [v * p.nudgeTranslation for v in translation] if translation else (0.0, 0.0, 0.0)
            self.logic.nudge(p.xrayVolume, rotationDeg, translationMm, p.inputVolume)
            self._show(p.xrayVolume)

    def onExportButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to export the pose."), waitCursor=True):
            paths = self.logic.exportPose(p.xrayVolume, p.outputDirectory)
            self._log(_("Exported {files}").format(files=", ".join(str(path) for path in paths)))


#
# XVRRegistrationLogic
#


class XVRRegistrationJob:
    """``xvrcore register`` processes run one after the other (one per group of X-rays with the same frame
    choice and geometry overrides), with their events; cancel stops the running one and the rest.

    ``poll()`` returns, among others, ``results``: ``(xrayNode, resultJson)`` pairs finished since the last
    call. Never touches widgets.
    """

    def __init__(self, commands, jobDirectory, nodesByFile, env=None):
        self.commands = [[str(c) for c in command] for command in commands]
        self.jobDirectory = pathlib.Path(jobDirectory)
        self.nodesByFile = dict(nodesByFile)
        self.env = env
        self.runner = None
        self.index = -1
        self.cancelRequested = False
        self.returncodes = []
        self.failures = []
        self.done = []
        self.fraction = 0.0
        self.finished = False

    def start(self) -> "XVRRegistrationJob":
        self._next()
        return self

    def _next(self) -> None:
        from xvrcore.app.jobs import JobRunner

        self.index += 1
        if self.index >= len(self.commands) or self.cancelRequested:
            self.runner = None
            self.finished = True
            return
        self.runner = JobRunner(self.commands[self.index], self.jobDirectory, env=self.env)
        self.runner.start()

    @property
    def running(self) -> bool:
        return not self.finished

    def cancel(self) -> None:
        self.cancelRequested = True
        if self.runner is not None:
            self.runner.cancel()

    def poll(self) -> dict:
        from xvrcore.io.events import EXIT_CANCELLED

        results, log, events, status = [], [], [], None
        if self.runner is None:
            return {"results": results, "log": log, "events": events, "status": status,
                    "fraction": self.fraction, "finished": self.finished}
        update = self.runner.poll()
        log += update.log
        groups = max(1, len(self.commands))
        for event in update.events:
            events.append(event)
            kind = event.get("event")
            if kind == "progress":
                self.fraction = (self.index + float(event.get("fraction", 0.0))) / groups
                status = _("{input}: stage {stage}, iteration {iteration}, similarity {similarity:.3f}").format(
                    input=event.get("input"), stage=event.get("stage", 0) + 1, iteration=event.get("iteration", 0),
                    similarity=float(event.get("similarity") or 0.0))
                if event.get("attempt", 1) > 1:  # the first result looked wrong: a wider search
                    status = _("{status} (retry {retry})").format(status=status, retry=event["attempt"] - 1)
            elif kind in ("input_done", "input_skipped"):
                node = self.nodesByFile.get(event.get("input"))
                if node is not None and event.get("json"):
                    results.append((node, event["json"]))
                    self.done.append(node)
                status = _("{input}: registered").format(input=event.get("input"))
            elif kind == "input_failed":
                self.failures.append(event.get("error"))
                log.append(event.get("error", ""))
                status = event.get("error")
        if self.cancelRequested and update.returncode is None:
            self.runner.terminate(grace_s=20.0)
        if update.returncode is not None:
            self.returncodes.append(update.returncode)
            self.fraction = (self.index + 1) / groups
            self._next()
            if self.finished:
                if self.cancelRequested or EXIT_CANCELLED in self.returncodes:
                    status = _("Cancelled: {n} X-ray(s) registered; register again to do the rest.").format(n=len(self.done))
                elif any(code != 0 for code in self.returncodes):
                    status = _("Finished with errors: {n} registered, {f} failed (see the log).").format(
                        n=len(self.done), f=len(self.failures))
                else:
                    status = _("Registered {n} X-ray(s).").format(n=len(self.done))
        return {"results": results, "log": log, "events": events, "status": status, "fraction": self.fraction,
                "finished": self.finished}

    def wait(self, timeout=None) -> dict:
        """Block until every process ended (tests and scripts); returns the polls merged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        merged = {"results": [], "log": [], "events": [], "status": None}
        while True:
            update = self.poll()
            for key in ("results", "log", "events"):
                merged[key] += update[key]
            merged["status"] = update["status"] or merged["status"]
            if update["finished"]:
                merged.update(fraction=update["fraction"], finished=True)
                return merged
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the registration did not finish in time")
            time.sleep(0.05)


class XVRRegistrationLogic(ScriptedLoadableModuleLogic):
    """Everything the registration panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets; takes the scene and the nodes explicitly (new nodes go to the scene of the nodes
    given). Heavy packages (torch, xvrcore) are imported inside the methods that use them.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)
        self._drrCache = {}
        self._structureCache = {}
        self._xrayCache = {}
        self._writtenInputs = {}

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
        if parameterNode.initialization == XVRRegistrationInitialization.model:
            if str(parameterNode.modelPath) in ("", ".") and not parameterNode.modelRepository.strip():
                problems.append(_("Select the trained model file."))
        if parameterNode.initialization == XVRRegistrationInitialization.landmarks:
            if not parameterNode.xrayLandmarks or not parameterNode.volumeLandmarks:
                problems.append(_("Select the landmarks on the X-ray and in the CT."))
        if not parameterNode.outputTransform:
            problems.append(_("Select or create the output transform."))
        if str(parameterNode.outputDirectory) in ("", "."):
            problems.append(_("Select an output directory for the results."))
        return problems

    def ensureDependencies(self) -> None:
        """Install the Python packages this module needs, asking the user first. Call on first use only."""
        from XVRCoreLib import slicersupport

        slicersupport.ensure_dependencies(self.resourcePath("requirements.txt"))

    # -- X-ray nodes --------------------------------------------------------------------------------------------

    @staticmethod
    def isXray(node) -> bool:
        return node is not None and node.GetAttribute("XVR.Role") == "xray"

    @staticmethod
    def xrayNodes(scene) -> list:
        nodes = []
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            if node.GetAttribute("XVR.Role") == "xray":
                nodes.append(node)
        return nodes

    @staticmethod
    def warnings(xrayNode) -> list:
        return json.loads(xrayNode.GetAttribute("XVR.Warnings") or "[]")

    @staticmethod
    def overrides(pixelSpacing=0.0, sourceDetectorDistance=0.0, sourceIsocenterDistance=0.0, angles=None) -> dict:
        """Geometry overrides (a JSON-able dict; zero/None = use the header's value)."""
        out = {}
        if pixelSpacing:
            out["pixel_spacing"] = float(pixelSpacing)
        if sourceDetectorDistance:
            out["sdd"] = float(sourceDetectorDistance)
        if sourceIsocenterDistance:
            out["sod"] = float(sourceIsocenterDistance)
        if angles is not None:
            out["primary_angle"], out["secondary_angle"] = float(angles[0]), float(angles[1])
        return out

    @staticmethod
    def _frameValue(frame):
        text = str(frame if frame is not None else "").strip().lower()
        if text in ("", "none"):
            return None
        if text in ("max", "min", "mean"):
            return text
        return int(text)

    def readXray(self, path, frame=None, maskFrame=None, overrides=None):
        """The X-ray with its C-arm geometry (:func:`xvrcore.xray.reader.read_xray`)."""
        from xvrcore.xray.reader import GeometryOverrides, read_xray

        mask = None if maskFrame is None or int(maskFrame) < 0 else int(maskFrame)
        return read_xray(path, frame=self._frameValue(frame), mask_frame=mask, overrides=GeometryOverrides(**(overrides or {})))

    @staticmethod
    def _volumeCenter(volumeNode):
        import numpy as np
        from XVRCoreLib import mrml

        if volumeNode is None or volumeNode.GetImageData() is None:
            return np.zeros(3)
        m = mrml.array_from_vtk_matrix(_ijkToWorld(volumeNode))
        dims = np.array(volumeNode.GetImageData().GetDimensions(), dtype=float)
        return (m @ np.append((dims - 1) / 2, 1.0))[:3]

    def headerPose(self, xray, volumeNode=None):
        """The nominal C-arm pose of the DICOM header about the volume centre (a frontal view if it has no angles)."""
        import numpy as np
        import torch
        from xvrcore.geometry.positioner import pose_from_positioner, pose_from_xray

        center = torch.as_tensor(self._volumeCenter(volumeNode), dtype=torch.float64)
        if xray.primary_angle is not None and xray.sod is not None:
            return pose_from_xray(xray, center).numpy()
        sod = xray.sod or 0.7 * xray.detector.sdd
        return pose_from_positioner(xray.primary_angle or 0.0, xray.secondary_angle or 0.0, sod, center).numpy().astype(np.float64)

    def importXray(self, path, scene, volumeNode=None, frame="max", maskFrame=-1, overrides=None, name=None):
        """Read an X-ray DICOM with its geometry and show it on its detector plane at the header's pose.

        Creates the X-ray node, its pose transform node (TransformToParent = camera → world), the C-arm
        frustum and the textured detector plane (both in camera coordinates under the pose node).
        """
        from XVRCoreLib import mrml

        path = pathlib.Path(path)
        xray = self.readXray(path, frame, maskFrame, overrides)
        pose = self.headerPose(xray, volumeNode)
        name = name or path.stem
        intrinsics, depth = xray.intrinsics, xray.detector.sdd
        node = mrml.xray_volume_node(scene, xray.pixels, pose, intrinsics, depth, name=name, mask=xray.mask, attributes={
            "Role": "xray", "Source": str(path.resolve()), "Frame": str(frame if frame is not None else ""),
            "MaskFrame": int(maskFrame if maskFrame is not None else -1), "Overrides": overrides or {},
            "Modality": xray.modality, "Warnings": list(xray.warnings), "FrameInfo": xray.frame_info})
        self._colormap(node, xray.modality)
        poseNode = mrml.pose_transform_node(scene, pose, name=f"{name} pose")
        frustum = mrml.frustum_model_node(scene, intrinsics, depth, poseNode, name=f"{name} beam")
        plane = mrml.xray_plane_model_node(scene, xray.pixels, intrinsics, depth, poseNode, name=f"{name} plane",
                                           invert=self._invert(xray.modality))
        node.SetNodeReferenceID(mrml.REFERENCE_ROLES["pose"], poseNode.GetID())
        node.SetNodeReferenceID(mrml.REFERENCE_ROLES["frustum"], frustum.GetID())
        node.SetNodeReferenceID(mrml.REFERENCE_ROLES["plane"], plane.GetID())
        self._xrayCache[node.GetID()] = xray
        return node

    def importXrays(self, paths, scene, volumeNode=None, **kwargs):
        """Import several files; one bad file is reported and the others go on. Returns (nodes, errors)."""
        nodes, errors = [], []
        for path in paths:
            try:
                nodes.append(self.importXray(path, scene, volumeNode, **kwargs))
            except (ValueError, OSError) as exc:
                errors.append(str(exc))
        return nodes, errors

    def reloadXray(self, xrayNode, frame="max", maskFrame=-1, overrides=None):
        """Read the X-ray again with another frame choice or other geometry overrides (same pose)."""
        from XVRCoreLib import mrml

        xray = self.readXray(xrayNode.GetAttribute("XVR.Source"), frame, maskFrame, overrides)
        pose = self.pose(xrayNode)
        mrml.xray_volume_node(xrayNode.GetScene(), xray.pixels, pose, xray.intrinsics, xray.detector.sdd, node=xrayNode,
                              mask=xray.mask, attributes={"Frame": str(frame), "MaskFrame": int(maskFrame),
                                                          "Overrides": overrides or {}, "Warnings": list(xray.warnings),
                                                          "FrameInfo": xray.frame_info})
        self._xrayCache[xrayNode.GetID()] = xray
        scene = xrayNode.GetScene()
        frustum = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["frustum"])
        if frustum is not None:
            mrml.frustum_model_node(scene, xray.intrinsics, xray.detector.sdd, node=frustum)
        plane = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["plane"])
        if plane is not None:
            mrml.xray_plane_model_node(scene, xray.pixels, xray.intrinsics, xray.detector.sdd, node=plane,
                                       invert=self._invert(xray.modality))
        return xrayNode

    def restorePlaneTextures(self, scene) -> int:
        """Re-attach the image to each X-ray's 3D detector plane after a scene load; returns how many.

        A model's texture is a display pipeline connection, which scenes do not save; the X-ray
        volume itself is saved, so its pixels (no DICOM file needed) give the texture back.
        """
        from XVRCoreLib import mrml

        restored = 0
        for node in self.xrayNodes(scene):
            plane = node.GetNodeReference(mrml.REFERENCE_ROLES["plane"])
            display = plane.GetDisplayNode() if plane is not None else None
            if display is None or display.GetTextureImageDataConnection() is not None or node.GetImageData() is None:
                continue
            image = slicer.util.arrayFromVolume(node)[0]
            mrml.xray_plane_model_node(scene, image, mrml.xray_intrinsics(node), mrml.xray_depth(node), node=plane,
                                       invert=self._invert(node.GetAttribute("XVR.Modality")))
            restored += 1
        return restored

    def xray(self, xrayNode):
        """The XrayImage behind an X-ray node (re-read from its DICOM file after a scene reload)."""
        cached = self._xrayCache.get(xrayNode.GetID())
        if cached is not None and cached.source == xrayNode.GetAttribute("XVR.Source"):
            return cached
        xray = self.readXray(xrayNode.GetAttribute("XVR.Source"), xrayNode.GetAttribute("XVR.Frame"),
                             int(xrayNode.GetAttribute("XVR.MaskFrame") or -1),
                             json.loads(xrayNode.GetAttribute("XVR.Overrides") or "{}"))
        self._xrayCache[xrayNode.GetID()] = xray
        return xray

    @staticmethod
    def _invert(modality) -> bool:
        return str(modality).upper() in ("XA", "RF")  # angiography/fluoroscopy: dense is displayed dark

    def _colormap(self, node, modality) -> None:
        display = node.GetDisplayNode()
        if display is not None:
            display.SetAndObserveColorNodeID(
                "vtkMRMLColorTableNodeInvertedGrey" if self._invert(modality) else "vtkMRMLColorTableNodeGrey")

    # -- poses --------------------------------------------------------------------------------------------------

    @staticmethod
    def poseNode(xrayNode):
        from XVRCoreLib.mrml import REFERENCE_ROLES

        return xrayNode.GetNodeReference(REFERENCE_ROLES["pose"]) if xrayNode is not None else None

    def pose(self, xrayNode):
        """``camera_to_world`` of the X-ray (its pose transform node, to the world)."""
        from XVRCoreLib import mrml

        poseNode = self.poseNode(xrayNode)
        if poseNode is None:
            raise ValueError(_("{name} has no pose transform.").format(name=xrayNode.GetName()))
        return mrml.pose_from_transform_node(poseNode)

    def _imageNodes(self, xrayNode) -> list:
        from XVRCoreLib.mrml import REFERENCE_ROLES

        nodes = [xrayNode]
        for role in ("drr", "outlines", "checkerboard"):
            node = xrayNode.GetNodeReference(REFERENCE_ROLES[role])
            if node is not None:
                nodes.append(node)
        return nodes

    def followPose(self, xrayNode) -> None:
        """Put the X-ray (and its DRR, outlines, checkerboard) on the detector plane of its current pose."""
        from XVRCoreLib import mrml

        pose = self.pose(xrayNode)
        for node in self._imageNodes(xrayNode):
            mrml.set_detector_pose(node, pose)

    def setPose(self, xrayNode, cameraToWorld) -> None:
        """Set the X-ray's pose (its transform node) and move its images with it."""
        from XVRCoreLib import mrml

        mrml.set_pose(self.poseNode(xrayNode), cameraToWorld)
        self.followPose(xrayNode)

    def usePoseNode(self, xrayNode, transformNode) -> None:
        """Make ``transformNode`` the X-ray's pose (it takes the current pose; the beam models move under it)."""
        from XVRCoreLib import mrml

        pose = self.pose(xrayNode) if self.poseNode(xrayNode) is not None else None
        xrayNode.SetNodeReferenceID(mrml.REFERENCE_ROLES["pose"], transformNode.GetID())
        if pose is not None:
            mrml.pose_transform_node(xrayNode.GetScene(), pose, node=transformNode)
        for role in ("frustum", "plane"):
            model = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES[role])
            if model is not None:
                model.SetAndObserveTransformNodeID(transformNode.GetID())
        self.followPose(xrayNode)

    def attachToXray(self, markupsNode, xrayNode) -> None:
        """Put markups placed on the X-ray under its pose transform, so they stay on the image when it moves.

        Only the points' world positions matter (they are projected with the current pose), so points
        already placed keep their world positions.
        """
        import numpy as np
        from XVRCoreLib import mrml

        poseNode = self.poseNode(xrayNode)
        if poseNode is None or markupsNode.GetParentTransformNode() is poseNode:
            return
        points, _ = mrml.markups_points_world(markupsNode)
        markupsNode.SetAndObserveTransformNodeID(poseNode.GetID())
        if len(points):
            pose = self.pose(xrayNode)
            local = (points - pose[:3, 3]) @ pose[:3, :3]
            for i, p in enumerate(np.asarray(local)):
                markupsNode.SetNthControlPointPosition(i, *p.tolist())

    def nudge(self, xrayNode, rotationDeg=(0.0, 0.0, 0.0), translationMm=(0.0, 0.0, 0.0), volumeNode=None):
        """Turn the pose by ``rotationDeg`` about the volume centre and move it by ``translationMm``.

        Both are in the camera axes (x, y in the image plane, z along the beam), as the registration moves it.
        """
        import numpy as np
        import torch
        from xvrcore.registration.optimizer import updated_pose

        pose = torch.as_tensor(self.pose(xrayNode))
        center = torch.as_tensor(self._volumeCenter(volumeNode), dtype=torch.float64)
        rotation = torch.as_tensor(np.radians(np.asarray(rotationDeg, dtype=np.float64)))
        moved = updated_pose(pose, center, rotation, torch.as_tensor(np.asarray(translationMm, dtype=np.float64)))
        self.setPose(xrayNode, moved.numpy())
        xrayNode.SetAttribute("XVR.ManuallyAdjusted", "true")
        return moved.numpy()

    @staticmethod
    def resolveModel(modelPath=None, modelRepository=None):
        repository = (modelRepository or "").strip()
        if repository:
            from xvrcore.learning.hub import pull

            return pull(repository)
        if modelPath is None or str(modelPath) in ("", "."):
            raise ValueError(_("Select the trained model file."))
        path = pathlib.Path(modelPath)
        if str(path).endswith(".pth"):
            from xvrcore.learning.checkpoint import import_xvr
            from xvrcore.learning.hub import models_dir

            return import_xvr(path, models_dir() / path.stem)
        return path

    @staticmethod
    def trainedModel(scene):
        """The model the XVR Training module last produced (its parameter node), if any."""
        try:
            from XVRCoreLib import mrml
        except ImportError:  # the dependencies are installed on first use
            return None
        value = mrml.module_parameter(scene, "XVRTraining", "trainedModel")
        return value if value and value not in (".", "") and pathlib.Path(value).exists() else None

    # -- overlays -------------------------------------------------------------------------------------------------

    def drrVolume(self, volumeNode):
        """The renderer's attenuation volume of a CT node (cached until the node changes)."""
        from xvrcore.drr.render import DRRVolume
        from xvrcore.volume.attenuation import to_attenuation
        from XVRCoreLib import mrml

        key = (volumeNode.GetID(), volumeNode.GetMTime(), volumeNode.GetImageData().GetMTime(), _ijkToWorldKey(volumeNode))
        cached = self._drrCache.get(volumeNode.GetID())
        if cached is None or cached[0] != key:
            drr = DRRVolume.from_volume(to_attenuation(mrml.volume_from_node(volumeNode)))
            self._drrCache[volumeNode.GetID()] = cached = (key, drr)
        return cached[1]

    def structureVolumes(self, segmentationNode, volumeNode):
        """One small volume per segment (1 inside) for reprojecting outlines, with names and colours."""
        from xvrcore.drr.render import DRRVolume
        from xvrcore.volume.labels import structure_volumes
        from XVRCoreLib import mrml

        key = (segmentationNode.GetID(), segmentationNode.GetMTime(), volumeNode.GetID(), _ijkToWorldKey(volumeNode))
        cached = self._structureCache.get(segmentationNode.GetID())
        if cached is None or cached[0] != key:
            labels, names, colors = mrml.segmentation_labelmap(segmentationNode, volumeNode)
            present = [label for label in names if (labels.data == label).any()]
            volumes = {label: DRRVolume.from_volume(v) for label, v in structure_volumes(labels, present).items()}
            self._structureCache[segmentationNode.GetID()] = cached = (key, (volumes, names, colors))
        return cached[1]

    def _displayGrid(self, xrayNode, maxSize=DISPLAY_SIZE):
        """The X-ray area-downsampled to the display grid, its mask and intrinsics."""
        import torch
        from xvrcore.registration.optimizer import downsample, downsample_mask

        xray = self.xray(xrayNode)
        image, k = downsample(torch.as_tensor(xray.pixels), xray.intrinsics, maxSize)
        mask = downsample_mask(torch.as_tensor(xray.mask), tuple(image.shape[-2:]))
        return image.numpy(), mask.numpy() > 0, k, xray

    def updateOverlays(self, xrayNode, volumeNode, segmentationNode=None, maxSize=DISPLAY_SIZE):
        """Render the DRR and reproject the segment outlines at the X-ray's current pose.

        Both are single-slice volumes on the X-ray's detector plane (a coarser grid, ``maxSize`` pixels on
        the longer side). Returns ``(drrNode, outlineNode or None)``.
        """
        import numpy as np
        import torch
        from xvrcore.drr.render import render
        from xvrcore.io.overlay import structure_masks
        from XVRCoreLib import mrml

        scene = xrayNode.GetScene()
        pose = self.pose(xrayNode)
        _, mask, k, xray = self._displayGrid(xrayNode, maxSize)
        volume = self.drrVolume(volumeNode)
        with torch.no_grad():
            drr = render(volume, torch.as_tensor(pose, dtype=volume.dtype), k)[0, 0].cpu().numpy()
        depth = mrml.xray_depth(xrayNode)
        name = xrayNode.GetName()
        drrNode = mrml.xray_volume_node(scene, drr, pose, k, depth, name=f"{name} DRR",
                                        node=xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["drr"]),
                                        attributes={"Role": "drr"}, mask=mask)
        self._colormap(drrNode, xray.modality)
        xrayNode.SetNodeReferenceID(mrml.REFERENCE_ROLES["drr"], drrNode.GetID())
        outlineNode = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["outlines"])
        if segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments():
            volumes, names, colors = self.structureVolumes(segmentationNode, volumeNode)
            masks = structure_masks(volumes, pose, k)
            outlines = mrml.outline_labels(masks, shape=drr.shape) if masks else np.zeros(drr.shape, np.int16)
            outlineNode = mrml.xray_volume_node(scene, outlines, pose, k, depth, name=f"{name} outlines", node=outlineNode,
                                                class_name="vtkMRMLLabelMapVolumeNode", attributes={"Role": "outlines"})
            colorNode = mrml.color_table_node(scene, names, colors, name=f"{segmentationNode.GetName()} XVR colours",
                                              node=scene.GetFirstNodeByName(f"{segmentationNode.GetName()} XVR colours"))
            outlineNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())
            xrayNode.SetNodeReferenceID(mrml.REFERENCE_ROLES["outlines"], outlineNode.GetID())
        return drrNode, outlineNode

    def checkerboardNode(self, xrayNode, tiles=8):
        """A checkerboard of the X-ray and its DRR (even tiles X-ray, odd tiles DRR) on the detector plane."""
        import numpy as np
        from xvrcore.io.overlay import checkerboard_picture
        from XVRCoreLib import mrml

        drrNode = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["drr"])
        if drrNode is None:
            raise ValueError(_("Render the DRR first (select the CT and show the X-ray)."))
        grid = mrml.xray_intrinsics(drrNode)
        image, mask, k, xray = self._displayGrid(xrayNode, max(grid.width, grid.height))
        drr = mrml._array_kji(drrNode.GetImageData())[0]
        if self._invert(xray.modality):  # compare as displayed
            image, drr = -image, -drr
        picture = np.asarray(checkerboard_picture(image, drr, mask=mask, tiles=tiles), dtype=np.float32)
        node = mrml.xray_volume_node(xrayNode.GetScene(), picture, self.pose(xrayNode), k, mrml.xray_depth(xrayNode),
                                     name=f"{xrayNode.GetName()} checkerboard",
                                     node=xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["checkerboard"]),
                                     attributes={"Role": "checkerboard"}, window=(0.0, 255.0))
        xrayNode.SetNodeReferenceID(mrml.REFERENCE_ROLES["checkerboard"], node.GetID())
        return node

    def showXray(self, xrayNode, sliceNode, opacity=0.5, showOutlines=True) -> None:
        """The X-ray in ``sliceNode``'s view, aligned to its plane, with the DRR and outlines over it."""
        from XVRCoreLib import mrml

        scene = xrayNode.GetScene()
        drr = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["drr"])
        outlines = xrayNode.GetNodeReference(mrml.REFERENCE_ROLES["outlines"]) if showOutlines else None
        mrml.show_in_slice_view(scene, sliceNode, xrayNode, drr, outlines, opacity)

    @staticmethod
    def volumeRenderingPreset(volumeNode) -> str:
        """Slicer's volume rendering preset for the CT (bone) or the MRA (bright vessels)."""
        low = volumeNode.GetImageData().GetScalarRange()[0] if volumeNode.GetImageData() is not None else 0.0
        return "CT-Bone" if low <= -500 else "MR-Angio"  # CTs hold air at about -1000 HU

    def show3D(self, volumeNode, segmentationNode=None, volumeRenderingLogic=None):
        """The CT/MRA (volume rendering) and the segments (surfaces) in the 3D views, beside the C-arm beam.

        Leaves an existing volume rendering and existing surfaces as the user set them. Returns the
        volume rendering display node.
        """
        vr = volumeRenderingLogic or slicer.modules.volumerendering.logic()
        display = vr.GetFirstVolumeRenderingDisplayNode(volumeNode)
        if display is None:
            display = vr.CreateDefaultVolumeRenderingNodes(volumeNode)
            preset = vr.GetPresetByName(self.volumeRenderingPreset(volumeNode))
            if preset is not None:
                display.GetVolumePropertyNode().Copy(preset)
            display.SetVisibility(True)
        segmentation = segmentationNode.GetSegmentation() if segmentationNode is not None else None
        if segmentation is not None and segmentation.GetNumberOfSegments() and not segmentation.ContainsRepresentation(
                slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()):
            segmentationNode.CreateClosedSurfaceRepresentation()  # once: later, the user's 3D visibility stands
            if segmentationNode.GetDisplayNode() is not None:
                segmentationNode.GetDisplayNode().SetVisibility3D(True)
        return display

    def showCheckerboard(self, xrayNode, sliceNode) -> None:
        from XVRCoreLib import mrml

        node = self.checkerboardNode(xrayNode)
        mrml.show_in_slice_view(xrayNode.GetScene(), sliceNode, xrayNode, node, None, 1.0)

    @staticmethod
    def setForegroundOpacity(scene, sliceNode, opacity) -> None:
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if composite.GetLayoutName() == sliceNode.GetLayoutName():
                composite.SetForegroundOpacity(float(opacity))

    # -- the background registration --------------------------------------------------------------------------

    @staticmethod
    def pythonExecutable() -> str:
        from XVRCoreLib import slicersupport

        return slicersupport.python_executable()

    @staticmethod
    def processEnvironment(device: str = "auto") -> dict:
        from XVRCoreLib import slicersupport

        return slicersupport.process_environment(device)

    @staticmethod
    def registrationCommand(python, xrayPaths, volumePath, outputDirectory, labelsPath=None, labelNamesPath=None,
                            initPose=None, landmarks=None, model=None, frame=None, maskFrame=None, overrides=None,
                            device="auto", cancelFile=None, overwrite=True) -> list:
        """The ``xvrcore register`` command line (``python -m xvrcore register ... --progress-json``)."""
        command = [str(python), "-m", "xvrcore", "register", *[str(p) for p in xrayPaths],
                   "--volume", str(volumePath), "--output", str(outputDirectory)]
        if labelsPath:
            command += ["--labels", str(labelsPath)]
            if labelNamesPath:
                command += ["--label-names", str(labelNamesPath)]
        if initPose:
            command += ["--init-pose", str(initPose)]
        elif landmarks:
            command += ["--landmarks", str(landmarks)]
        elif model:
            command += ["--model", str(model)]
        if frame not in (None, ""):
            command += ["--frame", str(frame)]
        if maskFrame is not None and int(maskFrame) >= 0:
            command += ["--mask-frame", str(int(maskFrame))]
        overrides = overrides or {}
        if "pixel_spacing" in overrides:
            spacing = overrides["pixel_spacing"]
            row, col = (spacing, spacing) if isinstance(spacing, (int, float)) else spacing
            command += ["--pixel-spacing", repr(float(row)), repr(float(col))]
        for key, flag in (("sdd", "--sdd"), ("sod", "--sod"), ("primary_angle", "--primary-angle"),
                          ("secondary_angle", "--secondary-angle")):
            if key in overrides:
                command += [flag, repr(float(overrides[key]))]
        command += ["--device", str(device), "--progress-json", "--quiet"]
        if cancelFile:
            command += ["--cancel-file", str(cancelFile)]
        if overwrite:
            command.append("--overwrite")
        return command

    def startRegistration(self, xrayNodes, volumeNode, segmentationNode, initialization, outputDirectory, modelPath=None,
                          modelRepository=None, xrayLandmarks=None, volumeLandmarks=None, device="auto",
                          python=None) -> XVRRegistrationJob:
        """Write the inputs and start the registration of ``xrayNodes`` in the background; returns the job.

        ``initialization``: ``"dicom"`` (the header), ``"model"`` (the trained model's prediction: a model
        folder, an xvr ``.pth`` converted once, or a Hugging Face repository pulled once), ``"landmarks"`` (``xrayLandmarks`` placed on the X-ray, ``volumeLandmarks`` in the CT; only the
        first X-ray) or ``"current"`` (each X-ray's current pose). Results go to ``outputDirectory``.
        """
        from xvrcore.io.events import CANCEL_FILE
        from xvrcore.io.pose_json import camera_pose, write_pose_json
        from xvrcore.registration.landmarks import write_landmarks
        from xvrcore.registration.pipeline import input_stem
        from XVRCoreLib import mrml

        xrayNodes = [n for n in xrayNodes if self.isXray(n)]
        if not xrayNodes:
            raise ValueError(_("Import an X-ray first."))
        if volumeNode is None:
            raise ValueError(_("Select the CT or MRA volume."))
        if str(outputDirectory) in ("", "."):
            raise ValueError(_("Select an output directory for the results."))
        if initialization == "landmarks":
            xrayNodes = xrayNodes[:1]
        output = pathlib.Path(outputDirectory)
        jobDirectory = output / ".xvr-job"
        jobDirectory.mkdir(parents=True, exist_ok=True)
        volumePath = jobDirectory / "volume.nrrd"
        volumeKey = (volumeNode.GetID(), volumeNode.GetImageData().GetMTime(), _ijkToWorldKey(volumeNode))
        if self._writtenInputs.get(volumePath) != volumeKey or not volumePath.exists():  # written once per CT
            mrml.volume_from_node(volumeNode).save(volumePath, compress=False)
            self._writtenInputs[volumePath] = volumeKey
        labelsPath = namesPath = None
        if segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments():
            labels, names, colors = mrml.segmentation_labelmap(segmentationNode, volumeNode)
            labelsPath = labels.save(jobDirectory / "labels.nrrd", compress=False)
            namesPath = mrml.write_label_names(jobDirectory / "labels.ctbl", names, colors)
        initDirectory = jobDirectory / "init"
        landmarksDirectory = jobDirectory / "landmarks"
        for folder in (initDirectory, landmarksDirectory):
            shutil.rmtree(folder, ignore_errors=True)
        model = self.resolveModel(modelPath, modelRepository) if initialization == "model" else None
        groups, nodesByFile = {}, {}
        for node in xrayNodes:
            source = pathlib.Path(node.GetAttribute("XVR.Source"))
            stem = input_stem(source)
            nodesByFile[source.name] = node
            if initialization == "current":
                pose = self.pose(node)
                initDirectory.mkdir(parents=True, exist_ok=True)
                write_pose_json(initDirectory / f"{stem}.json", camera_pose(mrml.xray_intrinsics(node), pose,
                                                                            start={"method": initialization}))
            elif initialization == "landmarks":
                if xrayLandmarks is None or volumeLandmarks is None:
                    raise ValueError(_("Select the landmarks on the X-ray and in the CT."))
                points2d, points3d, labelNames = mrml.landmarks_from_markups(
                    xrayLandmarks, volumeLandmarks, self.pose(node), mrml.xray_intrinsics(node))
                landmarksDirectory.mkdir(parents=True, exist_ok=True)
                write_landmarks(landmarksDirectory / f"{stem}.json", points2d, points3d, labelNames)
            key = (node.GetAttribute("XVR.Frame") or "", node.GetAttribute("XVR.MaskFrame") or "-1",
                   node.GetAttribute("XVR.Overrides") or "{}")
            groups.setdefault(key, []).append(str(source))
        python = python or self.pythonExecutable()
        commands = []
        for (frame, maskFrame, overrides), files in groups.items():
            commands.append(self.registrationCommand(
                python, files, volumePath, output, labelsPath, namesPath,
                initPose=initDirectory if initialization == "current" else None,
                landmarks=landmarksDirectory if initialization == "landmarks" else None, model=model,
                frame=frame or None, maskFrame=int(maskFrame), overrides=json.loads(overrides), device=device,
                cancelFile=jobDirectory / CANCEL_FILE))
        job = XVRRegistrationJob(commands, jobDirectory, nodesByFile, env=self.processEnvironment(device))
        return job.start()

    def applyResult(self, xrayNode, resultJson, volumeNode=None, segmentationNode=None):
        """Load a result JSON of ``xvrcore register``: the pose, the quality, and the overlays."""
        from xvrcore.io.pose_json import read_pose_json

        result = read_pose_json(resultJson)
        self.setPose(xrayNode, result.camera_to_world)
        quality = result.extra.get("quality", {})
        similarity = result.extra.get("similarity", {})
        xrayNode.SetAttribute("XVR.Result", str(pathlib.Path(resultJson).resolve()))
        xrayNode.SetAttribute("XVR.Quality", json.dumps({
            "similarity": float(similarity.get("final", quality.get("similarity", float("nan")))),
            "p_submillimetre": float(quality.get("p_submillimetre", float("nan"))),
            "passed": bool(quality.get("passed", False)),
        }))
        xrayNode.RemoveAttribute("XVR.ManuallyAdjusted")
        if volumeNode is not None:
            self.updateOverlays(xrayNode, volumeNode, segmentationNode)
        return result

    def qualityRows(self, scene) -> list:
        """The quality of every registered X-ray: name, similarity, P(<1 mm), pass flag."""
        rows = []
        for node in self.xrayNodes(scene):
            quality = node.GetAttribute("XVR.Quality")
            if quality:
                rows.append({"id": node.GetID(), "name": node.GetName(), **json.loads(quality)})
        return rows

    def exportPose(self, xrayNode, directory):
        """Save the pose transform as Slicer saves transforms (``<name>.h5``) and the result JSON beside it.

        The transform node's TransformToParent maps the camera frame to the CT's RAS frame; the JSON is
        the shared result format (``xvrcore.io.pose_json``) of the current pose, with the registration's record.
        """
        from xvrcore.io.pose_json import PoseFileError, camera_pose, read_pose_json, write_pose_json
        from XVRCoreLib import mrml

        if str(directory) in ("", "."):
            raise ValueError(_("Select an output directory for the results."))
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in xrayNode.GetName())
        transformPath = mrml.save_transform_node(self.poseNode(xrayNode), directory / f"{name}_pose.h5")
        extra = {}
        result = xrayNode.GetAttribute("XVR.Result")
        if result:
            try:
                extra = read_pose_json(result).extra
            except PoseFileError:
                extra = {}
        extra["slicer_export"] = {"transform_file": transformPath.name,
                                  "transform_direction": "TransformToParent = camera to world (RAS, mm)",
                                  "manually_adjusted": xrayNode.GetAttribute("XVR.ManuallyAdjusted") == "true"}
        jsonPath = write_pose_json(directory / f"{name}_pose.json",
                                   camera_pose(mrml.xray_intrinsics(xrayNode), self.pose(xrayNode), **extra))
        return transformPath, jsonPath

    # -- Slicer's DICOM database ------------------------------------------------------------------------------

    @staticmethod
    def dicomDatabaseXraySeries(database=None) -> list:
        """X-ray series (XA, RF, DX, CR, …) in Slicer's DICOM database: label, series UID and files."""
        database = database or slicer.dicomDatabase
        rows = []
        for patient in database.patients():
            for study in database.studiesForPatient(patient):
                for series in database.seriesForStudy(study):
                    files = list(database.filesForSeries(series))
                    if not files:
                        continue
                    modality = (database.fileValue(files[0], "0008,0060") or "").strip().upper()
                    if modality not in XRAY_MODALITIES:
                        continue
                    description = database.fileValue(files[0], "0008,103E") or ""
                    rows.append({"label": f"{modality} {description} ({len(files)} file(s))".strip(),
                                 "series": series, "files": files, "modality": modality})
        return rows


def _ijkToWorld(volumeNode):
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        toWorld = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(toWorld)
        vtk.vtkMatrix4x4.Multiply4x4(toWorld, m, m)
    return m


def _ijkToWorldKey(volumeNode):
    m = _ijkToWorld(volumeNode)
    return tuple(round(m.GetElement(r, c), 6) for r in range(3) for c in range(4))


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
        """Run as few or as many tests as needed here."""
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
        from xvrcore.drr.render import DRRVolume
        from xvrcore.geometry.camera import Detector
        from xvrcore.geometry.positioner import pose_from_positioner
        from xvrcore.volume.attenuation import to_attenuation
        from xvrcore.volume.grid import volume_from_array
        from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom
        from XVRCoreLib import mrml

        self.delayDisplay("Synthesizing a CT and an X-ray")
        data = np.full((40, 48, 48), -1000.0, dtype=np.float32)
        data[10:30, 12:36, 12:36] = 0.0
        data[15:25, 20:28, 20:28] = 1200.0
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        ct = volume_from_array(data, affine, kind="ct")
        ctNode = mrml.volume_node_from_volume(slicer.mrmlScene, ct, name="CT")
        labels = volume_from_array((data > 500).astype(np.int16), affine, kind="labels")
        segmentationNode = mrml.segmentation_from_labelmap(slicer.mrmlScene, labels, {1: "bone"}, {1: (255, 200, 0)})
        detector = Detector(1000.0, 64, 64, 1.5, 1.5)
        pose = pose_from_positioner(20.0, 10.0, 700.0, torch.as_tensor(ct.center))
        image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), pose, detector, rng=np.random.default_rng(0))
        path = pathlib.Path(slicer.app.temporaryPath) / "XVRRegistrationTest.dcm"
        write_xray_dicom(path, image, detector, pose, ct.center)

        logic = XVRRegistrationLogic()
        xrayNode = logic.importXray(path, slicer.mrmlScene, ctNode)
        self.assertTrue(logic.isXray(xrayNode))
        np.testing.assert_allclose(logic.pose(xrayNode)[:3, 3], pose.numpy()[:3, 3], atol=1.0)
        drrNode, outlineNode = logic.updateOverlays(xrayNode, ctNode, segmentationNode)
        self.assertGreater(slicer.util.arrayFromVolume(drrNode).max(), 0)
        self.assertGreater((slicer.util.arrayFromVolume(outlineNode) > 0).sum(), 0)
        logic.showXray(xrayNode, slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode())
        logic.nudge(xrayNode, (0.0, 0.0, 5.0), (2.0, 0.0, 0.0), ctNode)
        transformPath, jsonPath = logic.exportPose(xrayNode, slicer.app.temporaryPath)
        self.assertTrue(transformPath.exists() and jsonPath.exists())
        self.delayDisplay("Test passed")
