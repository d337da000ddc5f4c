"""Two parts of the registration panel, each wiring its widgets to the logic: the X-rays (import, selection,
the pose they follow, what the views show) and the review (overlays, flicker, checkerboard, export). The QA
controls are :mod:`.qa_controls`'s, the batch table :mod:`.batch_table`'s.

These are the only Qt code of the package (``qt`` is imported inside the methods, as in the widget):
they hold the panel's widgets (``ui``) and read the parameter node of the moment; the work is the logic's.
"""

import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

__all__ = ["FLICKER_INTERVAL_MS", "POSE_SETTLE_MS", "PanelSection", "ReviewSection", "XraySection",
           "redSliceNode"]

FLICKER_INTERVAL_MS = 600
POSE_SETTLE_MS = 250  # the DRR is rendered again once the pose has not changed for this long (a drag in 3D)
def redSliceNode():
    """The slice node of the Red view, where the X-ray is shown."""
    return slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()


def _chooseSeries(series) -> list:
    """Ask which X-ray series of the DICOM database to import; their files (empty if cancelled)."""
    import qt

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
        return []
    return [f for index in listWidget.selectedIndexes() for f in series[index.row()]["files"]]


class PanelSection:
    """A part of the panel: its widgets (``ui``), the logic, the parameter node of the moment, the log."""

    def __init__(self, ui, logic, parameterNode, log) -> None:
        self.ui, self.logic = ui, logic
        self._parameterNode = parameterNode  # () -> the panel's parameter node (it changes with the scene)
        self._log = log  # (*lines) -> None: the panel's log box


class XraySection(PanelSection, VTKObservationMixin):
    """Import and selection of X-rays; keeps the images on the detector plane when the pose is edited.

    Selections are read from the parameter node, never from the selectors' signals: the selectors are bound
    to the parameter node, which updates them without blocking their signals, and slots run in connection
    order, so a slot of a bound selector can see the other parameters half-updated (the X-ray changed, its
    pose not yet). The widget's one parameter-node observer calls :meth:`selectionChanged`.
    """

    def __init__(self, ui, logic, parameterNode, log, status=None) -> None:
        PanelSection.__init__(self, ui, logic, parameterNode, log)
        VTKObservationMixin.__init__(self)
        self._status = status  # (text) -> None: the panel's status line (the first import installs packages)
        self._observedTransform = None
        self._seen = {"xray": None, "transform": None, "landmarks": None}  # the selection already acted on
        self._reacting = False
        self._poseTimer = None  # single shot: the pose edited elsewhere has settled (onPoseSettled)
        self.beforeShow = lambda: None  # the review's comparisons stop when the view is shown afresh

    def connect(self) -> None:
        import qt

        self.ui.importFilesButton.connect("clicked(bool)", self.onImportFiles)
        self.ui.importDicomButton.connect("clicked(bool)", self.onImportDicom)
        self.ui.reloadFrameButton.connect("clicked(bool)", self.onReloadFrame)
        self._poseTimer = qt.QTimer()
        self._poseTimer.setSingleShot(True)
        self._poseTimer.setInterval(POSE_SETTLE_MS)
        self._poseTimer.connect("timeout()", self.onPoseSettled)

    def cleanup(self) -> None:
        if self._poseTimer is not None:
            self._poseTimer.stop()
        self.removeObservers()

    def overrides(self) -> dict:
        """The geometry overrides the panel asks for (zero: the header's value)."""
        p = self._parameterNode()
        return self.logic.xrays.geometryOverrides(p.pixelSpacing, p.sourceDetectorDistance, p.sourceIsocenterDistance,
                                                  (p.primaryAngle, p.secondaryAngle) if p.overrideAngles else None)

    def show(self, xrayNode) -> None:
        """Show the X-ray, its DRR and outlines in the Red view (in the review layout: the DRR in colour fusion in
        the Red view, the outlines in a view of their own), aligned to the detector plane; the CT in 3D."""
        if not self._isReady(xrayNode):
            return
        p = self._parameterNode()
        self.beforeShow()
        with slicer.util.tryWithErrorDisplay(_("Failed to show the X-ray."), waitCursor=True):
            if p.inputVolume is not None:
                self.logic.overlays.updateOverlays(xrayNode, p.inputVolume, p.inputSegmentation if p.showOutlines else None)
            layoutManager = slicer.app.layoutManager()
            if self.logic.layout.isShown(layoutManager):  # fusion and outlines in views of their own
                self.logic.layout.show(xrayNode, *self.logic.layout.sliceNodes(layoutManager), p.drrOpacity,
                                       p.showOutlines)
            else:
                self.logic.layout.plainDisplay(xrayNode)
                self.logic.display.showXray(xrayNode, redSliceNode(), p.drrOpacity, p.showOutlines)
            if p.inputVolume is not None:
                self.logic.display.show3D(p.inputVolume, p.inputSegmentation)
            slicer.app.layoutManager().sliceWidget("Red").sliceLogic().FitSliceToBackground()
        if self._poseTimer is not None:
            self._poseTimer.stop()  # the overlays are at the current pose: nothing left to render

    # -- import ------------------------------------------------------------------------------------------------

    def onImportFiles(self) -> None:
        import qt

        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Import X-ray / DSA DICOM files"), "", _("DICOM files (*.dcm *.DCM *.dicom *.ima *);;All files (*)"))
        if paths:
            self._import(list(paths))

    def onImportDicom(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to read the DICOM database."), waitCursor=True):
            series = self.logic.xrays.dicomDatabaseXraySeries()
        if not series:
            slicer.util.infoDisplay(_("The DICOM database holds no X-ray (XA, RF, DX, CR) series. Import the files in the DICOM module first."))
            return
        files = _chooseSeries(series)
        if files:
            self._import(files)

    def _import(self, paths) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to import the X-rays."), waitCursor=True):
            self.logic.ensureDependencies(log=self._log, status=self._status)
            nodes, errors = self.logic.xrays.importXrays(paths, slicer.mrmlScene, p.inputVolume, frame=p.frame,
                                                         maskFrame=p.maskFrame, overrides=self.overrides())
            for error in errors:
                self._log(error)
            for node in nodes:
                for warning in self.logic.xrays.warnings(node):
                    self._log(f"{node.GetName()}: {warning}")
            if nodes:
                p.xrayVolume = nodes[-1]
                self.selectionChanged()  # the selector may have picked the first X-ray while it was imported
                self._log(_("Imported {n} X-ray(s).").format(n=len(nodes)))
            if errors and not nodes:
                raise ValueError("\n".join(errors))

    def onReloadFrame(self) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to read the frame."), waitCursor=True):
            self.logic.xrays.reloadXray(p.xrayVolume, frame=p.frame, maskFrame=p.maskFrame, overrides=self.overrides())
            self.show(p.xrayVolume)

    # -- selection ---------------------------------------------------------------------------------------------

    def _isReady(self, node) -> bool:
        """An X-ray with its pose (an X-ray being imported has no pose reference yet)."""
        return node is not None and self.logic.xrays.isXray(node) and self.logic.poses.poseNode(node) is not None

    def _currentXray(self):
        p = self._parameterNode()
        xray = p.xrayVolume if p else None
        return xray if self._isReady(xray) else None

    def resetSelection(self) -> None:
        """Take the parameter node's selection as acted on (a new parameter node, the module entered)."""
        p = self._parameterNode()
        xray = self._currentXray()
        self._seen = {"xray": xray, "transform": p.outputTransform if p else None,
                      "landmarks": p.xrayLandmarks if p else None}
        self._observePose(self.logic.poses.poseNode(xray) if xray is not None else None)
        if xray is not None and p.outputTransform is not self.logic.poses.poseNode(xray):
            self.selectionChanged()

    def selectionChanged(self) -> None:
        """React to the X-ray, pose and landmarks the parameter node now holds (once per change)."""
        p = self._parameterNode()
        if p is None or self._reacting:
            return
        self._reacting = True
        try:
            xray = self._currentXray()
            if xray is not self._seen["xray"] and (xray is not None or p.xrayVolume is None):
                self._seen["xray"] = xray
                self._followXray(p, xray)
            elif xray is not None and p.outputTransform is not self._seen["transform"]:
                self._useTransform(p, xray, p.outputTransform)
            self._seen["transform"] = p.outputTransform
            if p.xrayLandmarks is not self._seen["landmarks"]:
                self._seen["landmarks"] = p.xrayLandmarks
                if p.xrayLandmarks is not None and xray is not None:
                    # Points placed on the X-ray move with it: the markups go under the X-ray's pose transform.
                    self.logic.poses.attachToXray(p.xrayLandmarks, xray)
        finally:
            self._reacting = False

    def _followXray(self, p, xray) -> None:
        """Another X-ray: its own pose becomes the output transform, and it is shown."""
        poseNode = self.logic.poses.poseNode(xray) if xray is not None else None
        if poseNode is not None and p.outputTransform is not poseNode:
            p.outputTransform = poseNode
        self._observePose(poseNode)
        if xray is not None:
            self.show(xray)

    def _useTransform(self, p, xray, transform) -> None:
        """Another transform picked for the X-ray's pose: only an XVR pose of no other X-ray, else back."""
        poseNode = self.logic.poses.poseNode(xray)
        if transform is None or transform is poseNode:
            if transform is None:
                p.outputTransform = poseNode
            return
        problem = self.logic.poses.poseNodeProblem(xray, transform, slicer.mrmlScene)
        if problem:
            self._log(problem)
            p.outputTransform = poseNode
            return
        self.logic.poses.usePoseNode(xray, transform)
        self._observePose(transform)
        self.show(xray)

    def _observePose(self, poseNode) -> None:
        if self._observedTransform is not None:
            self.removeObserver(self._observedTransform, slicer.vtkMRMLTransformNode.TransformModifiedEvent,
                                self.onPoseModified)
        self._observedTransform = poseNode
        if poseNode is not None:
            self.addObserver(poseNode, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified)

    def onPoseModified(self, caller, event) -> None:
        """The pose was edited (Transforms module, 3D handles, nudge, result): the images stay on the
        detector plane at once; the DRR and outlines are rendered again, and the view realigned, once the
        pose settles (a drag sends many changes; a nudge or a result shows the X-ray itself, which stops
        the timer).
        """
        p = self._parameterNode()
        xray = p.xrayVolume if p else None
        if xray is not None and self.logic.poses.poseNode(xray) is caller:
            self.logic.poses.followPose(xray)
            if self._poseTimer is not None:
                self._poseTimer.start()

    def onPoseSettled(self) -> None:
        """The pose edited outside the panel has settled: overlays at the new pose, the view on its plane."""
        xray = self._currentXray()
        if xray is not None:
            self.show(xray)


class ReviewSection(PanelSection):
    """Checking a result: DRR opacity, outlines, flicker, checkerboard, export."""

    def __init__(self, ui, logic, parameterNode, log, show) -> None:
        PanelSection.__init__(self, ui, logic, parameterNode, log)
        self._show = show  # shows an X-ray with its overlays (XraySection.show)
        self._flickerTimer = None
        self._flickerState = False

    def connect(self) -> None:
        import qt

        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.flickerButton.connect("toggled(bool)", self.onFlicker)
        self.ui.checkerboardButton.connect("toggled(bool)", self.onCheckerboard)
        self.ui.drrOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.showOutlinesCheckBox.connect("toggled(bool)", self.onShowOutlines)
        self._flickerTimer = qt.QTimer()
        self._flickerTimer.setInterval(FLICKER_INTERVAL_MS)
        self._flickerTimer.connect("timeout()", self.onFlickerTick)

    def cleanup(self) -> None:
        if self._flickerTimer is not None:
            self._flickerTimer.stop()

    def stopComparisons(self) -> None:
        """Flicker off and checkerboard unchecked (the module is left, or the view shows something else).

        The buttons are unchecked with their signals blocked: their slots would show the X-ray again.
        """
        if self._flickerTimer is not None:
            self._flickerTimer.stop()
        for button in (self.ui.flickerButton, self.ui.checkerboardButton):
            if button.checked:
                blocked = button.blockSignals(True)
                button.checked = False
                button.blockSignals(blocked)
        p = self._parameterNode()
        if p is not None and p.xrayVolume is not None:
            self._setOpacity(p.drrOpacity)

    def _setOpacity(self, opacity) -> None:
        self.logic.display.setForegroundOpacity(slicer.mrmlScene, redSliceNode(), opacity)

    def onOpacityChanged(self, value) -> None:
        self._setOpacity(value)

    def onShowOutlines(self, checked) -> None:
        self._show(self._parameterNode().xrayVolume)

    def onFlicker(self, checked) -> None:
        if checked:
            self._flickerState = False
            self._flickerTimer.start()
        else:
            self._flickerTimer.stop()
            self._setOpacity(self._parameterNode().drrOpacity)

    def onFlickerTick(self) -> None:
        self._flickerState = not self._flickerState
        self._setOpacity(1.0 if self._flickerState else 0.0)

    def onCheckerboard(self, checked) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to build the checkerboard."), waitCursor=True):
            if checked:
                self.logic.display.showCheckerboard(p.xrayVolume, redSliceNode())
            else:
                self._show(p.xrayVolume)

    def onExportButton(self) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to export the pose."), waitCursor=True):
            paths = self.logic.results.exportPose(p.xrayVolume, p.outputDirectory)
            self._log(_("Exported {files}").format(files=", ".join(str(path) for path in paths)))
