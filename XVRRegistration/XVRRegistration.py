import enum
import importlib.metadata
import logging
import os
import pathlib

import vtk

import slicer
from slicer import vtkMRMLLinearTransformNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# torch and xvrcore are imported lazily, inside the methods that need them: importing this file must stay
# cheap and must work before the dependencies are installed.

TORCH_VERSION_REQUIREMENT = ">=2.2"

XVR_CITATION = (
    "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume "
    "registration. arXiv:2503.16309."
)


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
Register an intraoperative X-ray or DSA image to a preoperative CT or MRA (2D/3D registration).
The initial C-arm pose comes from the image's DICOM header, from a patient-specific network trained in the
XVR Training module, from landmarks, or from the output transform's current value; it is then refined by
optimizing the similarity between the image and digitally reconstructed radiographs.
The result is stored in a linear transform.
This version provides the panel layout only; registration arrives in a later version.
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


@parameterNodeWrapper
class XVRRegistrationParameterNode:
    """
    The parameters needed by the module.

    inputVolume - The preoperative CT or MRA.
    xrayVolume - The intraoperative X-ray or DSA frame (single-slice volume).
    outputTransform - Receives the registered C-arm pose.
    initialization - Source of the starting pose.
    modelPath - Checkpoint of the patient-specific network (used when initialization is "model").
    """

    inputVolume: vtkMRMLScalarVolumeNode
    xrayVolume: vtkMRMLScalarVolumeNode
    outputTransform: vtkMRMLLinearTransformNode
    initialization: XVRRegistrationInitialization = XVRRegistrationInitialization.dicom
    modelPath: pathlib.Path


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

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XVRRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets. The .ui connects the root widget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XVRRegistrationLogic()

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.applyButton.enabled = False
        self.ui.applyButton.toolTip = _("Registration will be available in a later version of SlicerXVR.")

        # Progress is shown while a registration runs.
        self.ui.progressBar.setVisible(False)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
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

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        self.setParameterNode(self.logic.getParameterNode())

        # Select default input nodes if nothing is selected yet to save a few clicks for the user
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: XVRRegistrationParameterNode | None) -> None:
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
        # Registration is not implemented yet, so the Apply button stays disabled (see setup); the status
        # line already tells the user which inputs are missing.
        if not self._parameterNode:
            return
        usesModel = self._parameterNode.initialization == XVRRegistrationInitialization.model
        self.ui.modelPathLineEdit.enabled = usesModel
        problems = self.logic.inputProblems(self._parameterNode)
        self.ui.statusLabel.text = "\n".join(problems) if problems else _("Inputs are complete.")

    def onApplyButton(self) -> None:
        """Run processing when user clicks "Apply" button."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=True):
            # First use: install torch and the core's dependencies (asks the user first).
            self.logic.ensureDependencies()
            self.logic.process(self._parameterNode)


#
# XVRRegistrationLogic
#


class XVRRegistrationLogic(ScriptedLoadableModuleLogic):
    """Everything the registration panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets. Heavy packages (torch, xvrcore) are imported inside the methods that use them.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> XVRRegistrationParameterNode:
        return XVRRegistrationParameterNode(super().getParameterNode())

    def resourcePath(self, relativePath: str) -> str:
        """Absolute path of a file in this module's Resources folder."""
        moduleDir = os.path.dirname(slicer.util.modulePath(self.moduleName))
        return os.path.join(moduleDir, "Resources", relativePath)

    @staticmethod
    def coreVersion() -> str:
        """Version of the xvrcore library (importable because the XVRCore module's folder is on sys.path)."""
        import xvrcore

        return xvrcore.__version__

    @staticmethod
    def inputProblems(parameterNode: XVRRegistrationParameterNode) -> list[str]:
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
            if str(parameterNode.modelPath) in ("", "."):
                problems.append(_("Select the trained model file."))
        if not parameterNode.outputTransform:
            problems.append(_("Select or create the output transform."))
        return problems

    def ensureDependencies(self) -> None:
        """Install the Python packages that registration needs, asking the user first. Call on first use only.

        torch comes from the PyTorch extension (PyTorchUtils picks the CUDA or CPU build); the other
        runtime dependencies of xvrcore are listed in Resources/requirements.txt.
        Raises RuntimeError if a package is missing and the user declines to install it.
        """
        from packaging.requirements import Requirement

        try:
            import PyTorchUtils
        except ModuleNotFoundError as e:
            message = _("This module requires the PyTorch extension; install it in the Extensions Manager.")
            raise RuntimeError(message) from e
        torchRequirement = Requirement("torch" + TORCH_VERSION_REQUIREMENT)
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torch = torchLogic.installTorch(
                askConfirmation=True, torchVersionRequirement=TORCH_VERSION_REQUIREMENT
            )
            if torch is None:
                raise RuntimeError(_("PyTorch is required but was not installed."))
        torchVersion = importlib.metadata.version("torch")
        if not torchRequirement.specifier.contains(torchVersion, prereleases=True):
            raise RuntimeError(
                _(
                    "PyTorch {installed} is installed but {required} is needed: update it in PyTorch Utils."
                ).format(installed=torchVersion, required=str(torchRequirement))
            )

        requirementsPath = self.resourcePath("requirements.txt")
        if hasattr(slicer, "packaging"):  # Slicer >= 5.11: checks, asks, installs and offers a restart
            requirements = slicer.packaging.load_requirements(requirementsPath)
            slicer.packaging.pip_ensure(requirements, requester="SlicerXVR")
            return

        with open(requirementsPath, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        missing = []
        for requirement in [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]:
            try:
                installed = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                installed = None
            if installed is None or not requirement.specifier.contains(installed, prereleases=True):
                missing.append(str(requirement))
        if not missing:
            return
        if slicer.app.testingEnabled():
            logging.warning(f"Not installing {missing} in testing mode")
            return
        message = _("SlicerXVR will now download and install these Python packages:")
        if not slicer.util.confirmOkCancelDisplay(message + "\n" + "\n".join(missing)):
            raise RuntimeError(_("Required Python packages were not installed."))
        slicer.util.pip_install(missing)

    def process(self, parameterNode: XVRRegistrationParameterNode) -> None:
        """Register the X-ray image to the volume with the given parameters."""
        raise NotImplementedError(_("Registration will be available in a later version of SlicerXVR."))


#
# XVRRegistrationTest
#


class XVRRegistrationTest(ScriptedLoadableModuleTest):
    """In-Slicer tests of XVRRegistration, run by "Reload and Test" and by ctest (slicer_add_python_unittest).

    Kept small and data-free so that they can run on build machines without a GPU or downloads.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_XVRRegistration1()

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
        self.assertEqual(len(logic.inputProblems(parameterNode)), 3)

        parameterNode.inputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
        parameterNode.xrayVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "X-ray")
        parameterNode.outputTransform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        self.assertEqual(logic.inputProblems(parameterNode), [])

        # A model initialization needs a checkpoint file.
        parameterNode.initialization = XVRRegistrationInitialization.model
        self.assertEqual(len(logic.inputProblems(parameterNode)), 1)

        self.delayDisplay("Test passed")
