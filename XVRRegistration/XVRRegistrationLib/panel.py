"""Two parts of the registration panel, each wiring its widgets to the logic: the X-rays (import, selection,
the pose they follow, what the views show) and the review (overlays, flicker, checkerboard, nudges, export,
the results table).

These are the only Qt code of the package (``qt`` is imported inside the methods, as in the widget):
they hold the panel's widgets (``ui``) and read the parameter node of the moment; the work is the logic's.
"""

import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

__all__ = ["FLICKER_INTERVAL_MS", "NUDGES", "PanelSection", "ReviewSection", "XraySection", "redSliceNode"]

FLICKER_INTERVAL_MS = 600
NUDGES = {  # button -> (rotation axis, translation axis), in the camera axes
    "rotateXMinusButton": ((-1, 0, 0), None), "rotateXPlusButton": ((1, 0, 0), None),
    "rotateYMinusButton": ((0, -1, 0), None), "rotateYPlusButton": ((0, 1, 0), None),
    "rotateZMinusButton": ((0, 0, -1), None), "rotateZPlusButton": ((0, 0, 1), None),
    "translateXMinusButton": (None, (-1, 0, 0)), "translateXPlusButton": (None, (1, 0, 0)),
    "translateYMinusButton": (None, (0, -1, 0)), "translateYPlusButton": (None, (0, 1, 0)),
    "translateZMinusButton": (None, (0, 0, -1)), "translateZPlusButton": (None, (0, 0, 1)),
}


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
    """Import and selection of X-rays; keeps the images on the detector plane when the pose is edited."""

    def __init__(self, ui, logic, parameterNode, log) -> None:
        PanelSection.__init__(self, ui, logic, parameterNode, log)
        VTKObservationMixin.__init__(self)
        self._observedTransform = None

    def connect(self) -> None:
        self.ui.importFilesButton.connect("clicked(bool)", self.onImportFiles)
        self.ui.importDicomButton.connect("clicked(bool)", self.onImportDicom)
        self.ui.reloadFrameButton.connect("clicked(bool)", self.onReloadFrame)
        self.ui.xrayVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onXrayChanged)
        self.ui.outputTransformSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onTransformChanged)
        self.ui.xrayLandmarksSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onXrayLandmarksChanged)

    def cleanup(self) -> None:
        self.removeObservers()

    def overrides(self) -> dict:
        """The geometry overrides the panel asks for (zero: the header's value)."""
        p = self._parameterNode()
        return self.logic.xrays.geometryOverrides(p.pixelSpacing, p.sourceDetectorDistance, p.sourceIsocenterDistance,
                                                  (p.primaryAngle, p.secondaryAngle) if p.overrideAngles else None)

    def show(self, xrayNode) -> None:
        """Show the X-ray, its DRR and outlines in the Red view, aligned to the detector plane; the CT in 3D."""
        if xrayNode is None or not self.logic.xrays.isXray(xrayNode):
            return
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to show the X-ray."), waitCursor=True):
            if p.inputVolume is not None:
                self.logic.overlays.updateOverlays(xrayNode, p.inputVolume, p.inputSegmentation if p.showOutlines else None)
            self.logic.display.showXray(xrayNode, redSliceNode(), p.drrOpacity, p.showOutlines)
            if p.inputVolume is not None:
                self.logic.display.show3D(p.inputVolume, p.inputSegmentation)
            slicer.app.layoutManager().sliceWidget("Red").sliceLogic().FitSliceToBackground()

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
            self.logic.ensureDependencies()
            nodes, errors = self.logic.xrays.importXrays(paths, slicer.mrmlScene, p.inputVolume, frame=p.frame,
                                                         maskFrame=p.maskFrame, overrides=self.overrides())
            for error in errors:
                self._log(error)
            for node in nodes:
                for warning in self.logic.xrays.warnings(node):
                    self._log(f"{node.GetName()}: {warning}")
            if nodes:
                p.xrayVolume = nodes[-1]
                self.show(nodes[-1])
                self._log(_("Imported {n} X-ray(s).").format(n=len(nodes)))
            if errors and not nodes:
                raise ValueError("\n".join(errors))

    def onReloadFrame(self) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to read the frame."), waitCursor=True):
            self.logic.xrays.reloadXray(p.xrayVolume, frame=p.frame, maskFrame=p.maskFrame, overrides=self.overrides())
            self.show(p.xrayVolume)

    # -- selection ---------------------------------------------------------------------------------------------

    def onXrayChanged(self, node) -> None:
        if node is None or not self.logic.xrays.isXray(node):
            return
        poseNode = self.logic.poses.poseNode(node)
        if poseNode is not None and self._parameterNode().outputTransform is not poseNode:
            self._parameterNode().outputTransform = poseNode
        self._observePose(poseNode)
        self.show(node)

    def _currentXray(self):
        p = self._parameterNode()
        xray = p.xrayVolume if p else None
        return xray if xray is not None and self.logic.xrays.isXray(xray) else None

    def onTransformChanged(self, node) -> None:
        xray = self._currentXray()
        if node is None or xray is None:
            return
        if self.logic.poses.poseNode(xray) is not node:
            self.logic.poses.usePoseNode(xray, node)
            self._observePose(node)
            self.show(xray)

    def onXrayLandmarksChanged(self, node) -> None:
        """Points placed on the X-ray move with it: the markups go under the X-ray's pose transform."""
        xray = self._currentXray()
        if node is not None and xray is not None:
            self.logic.poses.attachToXray(node, xray)

    def _observePose(self, poseNode) -> None:
        if self._observedTransform is not None:
            self.removeObserver(self._observedTransform, slicer.vtkMRMLTransformNode.TransformModifiedEvent,
                                self.onPoseModified)
        self._observedTransform = poseNode
        if poseNode is not None:
            self.addObserver(poseNode, slicer.vtkMRMLTransformNode.TransformModifiedEvent, self.onPoseModified)

    def onPoseModified(self, caller, event) -> None:
        """The pose was edited (Transforms module, nudge, result): keep the images on the detector plane."""
        p = self._parameterNode()
        xray = p.xrayVolume if p else None
        if xray is not None and self.logic.poses.poseNode(xray) is caller:
            self.logic.poses.followPose(xray)


class ReviewSection(PanelSection):
    """Checking and adjusting a result: DRR opacity, outlines, flicker, checkerboard, nudges, export, results."""

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
        self.ui.resultsTable.connect("cellClicked(int,int)", self.onResultClicked)
        for name, (rotation, translation) in NUDGES.items():
            getattr(self.ui, name).connect("clicked()", lambda r=rotation, t=translation: self.onNudge(r, t))
        self.ui.resultsTable.setColumnCount(4)
        self.ui.resultsTable.setHorizontalHeaderLabels([_("X-ray"), _("Similarity"), _("P(<1 mm)"), _("Quality")])
        self._flickerTimer = qt.QTimer()
        self._flickerTimer.setInterval(FLICKER_INTERVAL_MS)
        self._flickerTimer.connect("timeout()", self.onFlickerTick)

    def cleanup(self) -> None:
        if self._flickerTimer is not None:
            self._flickerTimer.stop()

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

    def onNudge(self, rotation, translation) -> None:
        p = self._parameterNode()
        if p.xrayVolume is None or not self.logic.xrays.isXray(p.xrayVolume):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to move the pose."), waitCursor=True):
            rotationDeg = [v * p.nudgeRotation for v in rotation] if rotation else (0.0, 0.0, 0.0)
            translationMm = [v * p.nudgeTranslation for v in translation] if translation else (0.0, 0.0, 0.0)
            self.logic.poses.nudge(p.xrayVolume, rotationDeg, translationMm, p.inputVolume)
            self._show(p.xrayVolume)

    def onExportButton(self) -> None:
        p = self._parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to export the pose."), waitCursor=True):
            paths = self.logic.results.exportPose(p.xrayVolume, p.outputDirectory)
            self._log(_("Exported {files}").format(files=", ".join(str(path) for path in paths)))

    def updateResultsTable(self) -> None:
        """One row per registered X-ray: name, similarity, P(<1 mm), pass (green) or CHECK (red)."""
        import qt

        rows = self.logic.results.qualityRows(slicer.mrmlScene)
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
            self._parameterNode().xrayVolume = node
