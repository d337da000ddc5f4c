import enum
import importlib.metadata
import logging
import os
import pathlib
from typing import Annotated

import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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

# torch and xvrcore are imported lazily, inside the methods that need them: importing this file must stay
# cheap and must work before the dependencies are installed.

TORCH_VERSION_REQUIREMENT = ">=2.2"

XVR_CITATION = (
    "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume "
    "registration. arXiv:2503.16309."
)


#
# XVRTraining
#


class XVRTraining(ScriptedLoadableModule):
    """Module metadata.

    Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("XVR Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = ["XVRCore"]
        self.parent.contributors = ["SlicerXVR developers"]
        self.parent.helpText = _("""
Train a patient-specific pose-regression network on a preoperative CT or MRA. The network later
initializes the 2D/3D registration of intraoperative X-ray or DSA images (XVR Registration module).
Training runs in a background process and writes its checkpoints to the output directory.
This version provides the panel layout only; training arrives in a later version.
""")
        self.parent.acknowledgementText = _("SlicerXVR implements the method of:") + " " + XVR_CITATION


#
# XVRTrainingParameterNode
#


class XVRTrainingPreset(enum.Enum):
    """Anatomy presets: each selects the C-arm geometry and the pose ranges sampled during training."""

    pelvis = "pelvis"
    neurovasculature = "neurovasculature"
    skull = "skull"
    custom = "custom"

    def label(self) -> str:
        return {
            XVRTrainingPreset.pelvis: _("Pelvis"),
            XVRTrainingPreset.neurovasculature: _("Neurovasculature"),
            XVRTrainingPreset.skull: _("Skull"),
            XVRTrainingPreset.custom: _("Custom"),
        }[self]


class XVRTrainingDevice(enum.Enum):
    """Where the training process runs; ``auto`` uses CUDA when available."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"

    def label(self) -> str:
        return {
            XVRTrainingDevice.auto: _("Automatic"),
            XVRTrainingDevice.cuda: _("GPU (CUDA)"),
            XVRTrainingDevice.cpu: _("CPU"),
        }[self]


@parameterNodeWrapper
class XVRTrainingParameterNode:
    """
    The parameters needed by the module.

    inputVolume - The preoperative CT or MRA the network is trained on.
    inputSegmentation - Optional: restricts the rendered anatomy to these segments.
    preset - Anatomy preset (C-arm geometry and sampled pose ranges).
    outputDirectory - Where checkpoints and logs are written; must survive the Slicer session.
    minutes - Training time budget in minutes.
    device - Compute device of the training process.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    preset: XVRTrainingPreset = XVRTrainingPreset.pelvis
    outputDirectory: pathlib.Path
    minutes: Annotated[float, WithinRange(0.5, 1440)] = 5.0
    device: XVRTrainingDevice = XVRTrainingDevice.auto


#
# XVRTrainingWidget
#


class XVRTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The training panel: binds its .ui to the parameter node; the logic does the work."""

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
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XVRTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets. The .ui connects the root widget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = XVRTrainingLogic()

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.applyButton.enabled = False
        self.ui.applyButton.toolTip = _("Training will be available in a later version of SlicerXVR.")

        # Progress is shown while a training job runs.
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

    def setParameterNode(self, inputParameterNode: XVRTrainingParameterNode | None) -> None:
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
        # Training is not implemented yet, so the Apply button stays disabled (see setup); the status line
        # already tells the user which inputs are missing.
        problems = self.logic.inputProblems(self._parameterNode) if self._parameterNode else []
        self.ui.statusLabel.text = "\n".join(problems) if problems else _("Inputs are complete.")

    def onApplyButton(self) -> None:
        """Run processing when user clicks "Apply" button."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            # First use: install torch and the core's dependencies (asks the user first).
            self.logic.ensureDependencies()
            self.logic.process(self._parameterNode)


#
# XVRTrainingLogic
#


class XVRTrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the training panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets. Heavy packages (torch, xvrcore) are imported inside the methods that use them.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> XVRTrainingParameterNode:
        return XVRTrainingParameterNode(super().getParameterNode())

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
    def inputProblems(parameterNode: XVRTrainingParameterNode) -> list[str]:
        """Human-readable reasons why training cannot start with these parameters (empty if none)."""
        problems = []
        if not parameterNode.inputVolume:
            problems.append(_("Select the CT or MRA volume to train on."))
        if str(parameterNode.outputDirectory) in ("", "."):
            problems.append(_("Select an output directory for the checkpoints."))
        return problems

    def ensureDependencies(self) -> None:
        """Install the Python packages that training needs, asking the user first. Call on first use only.

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

    def process(self, parameterNode: XVRTrainingParameterNode) -> None:
        """Train a patient-specific network with the given parameters."""
        raise NotImplementedError(_("Training will be available in a later version of SlicerXVR."))


#
# XVRTrainingTest
#


class XVRTrainingTest(ScriptedLoadableModuleTest):
    """In-Slicer tests of XVRTraining, run by "Reload and Test" and by ctest (slicer_add_python_unittest).

    Kept small and data-free so that they can run on build machines without a GPU or downloads.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_XVRTraining1()

    def test_XVRTraining1(self):
        """The core library is importable and the parameter node has the documented defaults."""
        self.delayDisplay("Starting the test")
        logic = XVRTrainingLogic()

        self.assertTrue(logic.coreVersion())

        parameterNode = logic.getParameterNode()
        self.assertIsNone(parameterNode.inputVolume)
        self.assertIsNone(parameterNode.inputSegmentation)
        self.assertEqual(parameterNode.preset, XVRTrainingPreset.pelvis)
        self.assertEqual(parameterNode.device, XVRTrainingDevice.auto)
        self.assertAlmostEqual(parameterNode.minutes, 5.0)
        self.assertEqual(len(logic.inputProblems(parameterNode)), 2)

        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        parameterNode.inputVolume = volumeNode
        parameterNode.outputDirectory = pathlib.Path(slicer.app.temporaryPath)
        self.assertEqual(parameterNode.inputVolume.GetID(), volumeNode.GetID())
        self.assertEqual(logic.inputProblems(parameterNode), [])
        with self.assertRaises(ValueError):
            parameterNode.minutes = 0.1  # outside WithinRange(0.5, 1440)

        self.delayDisplay("Test passed")
