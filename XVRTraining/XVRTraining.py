"""XVR Training: a patient-specific pose network trained on a CT or MRA, as Slicer loads it.

This file holds what Slicer's scripted-module template puts in a module file: the module (metadata), its
parameter node, the widget (it binds ``Resources/UI/XVRTraining.ui`` to the parameter node and starts and
polls the training job), the thin logic and the in-Slicer test. The training's inputs, command line, job
and curves are in ``XVRTrainingLib`` (see its docstring).

One concept: the Slicer module, laid out as the scripted-module template lays it out. Slicer finds the module's
classes by name in this file, the parameter node and its enums must exist when the file is imported (before
xvrcore can be), and the widget is the template's (lifecycle, parameter-node binding, the job's timer); that
is what makes the file longer than ~400 lines. Everything else is in ``XVRTrainingLib``.
"""

import enum
import os
import pathlib
from typing import Annotated

import slicer
import vtk
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
from XVRTrainingLib import CUSTOM_RANGE_NAMES, TrainingLauncher

#: The panel's pose ranges in clinical terms (XVRCoreLib.clinical_ranges.CLINICAL_NAMES), each with Min and Max.
CLINICAL_RANGE_NAMES = ("primary", "secondary", "roll", "sod", "lateral", "longitudinal")

# torch, xvrcore and XVRCoreLib are imported lazily, inside the methods that need them: importing this file
# (and XVRTrainingLib, next to it) must stay cheap, must work before the dependencies are installed and
# before Slicer has put the XVRCore module's folder on sys.path (in a source tree each module folder is its
# own module path). qt is imported inside the widget's methods, so that the logic can be imported (and
# tested) where only MRML exists.


XVR_CITATION = (
    "Gopalakrishnan et al., Rapid patient-specific neural networks for intraoperative X-ray to volume "
    "registration. arXiv:2503.16309."
)

LOG_MAX_LINES = 2000  # the log box keeps this many lines
POLL_INTERVAL_MS = 500


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
Training runs in a background process (Slicer stays responsive), shows its progress, loss and validation
error, and writes checkpoints to the output directory. Cancel saves a checkpoint; Resume continues it.
The finished model is remembered for the XVR Registration module.
""")
        self.parent.acknowledgementText = _("SlicerXVR implements the method of:") + " " + XVR_CITATION
        from XVRTrainingLib.sample_data import registerSampleData  # a CT and its simulated X-ray, local files

        slicer.app.connect("startupCompleted()", registerSampleData)


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
            XVRTrainingPreset.custom: _("Custom ranges"),
        }[self]


class XVRTrainingOrientation(enum.Enum):
    """Where the source is for the custom ranges (the paper's AP/PA reorientation)."""

    PA = "PA"
    AP = "AP"

    def label(self) -> str:
        return {
            XVRTrainingOrientation.PA: _("PA (source posterior)"),
            XVRTrainingOrientation.AP: _("AP (source anterior)"),
        }[self]


class XVRTrainingModality(enum.Enum):
    """The volume's modality (``xvrcore --modality``); ``auto`` leaves it to the core (DICOM Modality, else CT)."""

    auto = "auto"
    ct = "ct"
    mra = "mra"

    def label(self) -> str:
        return {
            XVRTrainingModality.auto: _("Automatic"),
            XVRTrainingModality.ct: _("CT"),
            XVRTrainingModality.mra: _("MRA (vessels)"),
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


class XVRTrainingProfile(enum.Enum):
    """Network size and loss schedule; ``automatic`` picks Quick where no GPU will train."""

    automatic = "automatic"
    standard = "standard"
    quick = "quick"

    def label(self) -> str:
        return {
            XVRTrainingProfile.automatic: _("Automatic (Quick without a GPU)"),
            XVRTrainingProfile.standard: _("Standard: 128 px, ResNet-18, the paper's loss"),
            XVRTrainingProfile.quick: _("Quick (CPU): 64 px, half-width network, pose loss"),
        }[self]


# The ranges' defaults (primaryMin ... longitudinalMax, sid) are the paper's Table S2 pelvis preset in clinical terms
# (XVRCoreLib.clinical_ranges maps them to the paper's α, β, γ, x, y, z).
@parameterNodeWrapper
class XVRTrainingParameterNode:
    """
    The parameters needed by the module.

    inputVolume - The preoperative CT or MRA the network is trained on.
    inputSegmentation - Optional: restricts the rendered anatomy to these segments.
    preset - Anatomy preset (C-arm geometry and sampled pose ranges), or custom ranges.
    modality - CT, MRA or automatic (the core decides); vessels - optional vessel segmentation (MRA contrast).
    orientation - The network's frame (the paper's AP/PA reorientation).
    primaryMin ... longitudinalMax, sid - The pose ranges in clinical terms: LAO+/RAO-, CRA+/CAU-, in-plane
        rotation (degrees), SOD, table lateral and longitudinal offsets, SID (mm). Edited for custom ranges;
        a preset's own ranges are shown when a preset is picked.
    pretrainedModel - Optional pretrained model to finetune: a model folder or an xvr .pth file.
    pretrainedRepository - Optional Hugging Face repository of a pretrained model ("owner/name").
    outputDirectory - Where checkpoints and the model are written; must survive the Slicer session.
    minutes - Training time budget in minutes.
    device - Compute device of the training process.
    profile - Network size and loss schedule (Standard, Quick for a CPU, or automatic).
    batchSize - DRRs per training iteration (0: the profile's).
    trainedModel - The latest trained model (set when training ends; read by XVR Registration).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    preset: XVRTrainingPreset = XVRTrainingPreset.pelvis
    orientation: XVRTrainingOrientation = XVRTrainingOrientation.PA
    modality: XVRTrainingModality = XVRTrainingModality.auto
    vessels: vtkMRMLSegmentationNode
    primaryMin: Annotated[float, WithinRange(-360, 360)] = -45.0
    primaryMax: Annotated[float, WithinRange(-360, 360)] = 45.0
    secondaryMin: Annotated[float, WithinRange(-89, 89)] = -45.0
    secondaryMax: Annotated[float, WithinRange(-89, 89)] = 45.0
    rollMin: Annotated[float, WithinRange(-180, 180)] = -15.0
    rollMax: Annotated[float, WithinRange(-180, 180)] = 15.0
    sodMin: Annotated[float, WithinRange(0, 2000)] = 450.0
    sodMax: Annotated[float, WithinRange(0, 2000)] = 1000.0
    lateralMin: Annotated[float, WithinRange(-2000, 2000)] = -150.0
    lateralMax: Annotated[float, WithinRange(-2000, 2000)] = 150.0
    longitudinalMin: Annotated[float, WithinRange(-2000, 2000)] = -150.0
    longitudinalMax: Annotated[float, WithinRange(-2000, 2000)] = 150.0
    sid: Annotated[float, WithinRange(100, 3000)] = 1020.0
    pretrainedModel: pathlib.Path
    pretrainedRepository: str = ""
    outputDirectory: pathlib.Path
    minutes: Annotated[float, WithinRange(0.5, 1440)] = 5.0
    device: XVRTrainingDevice = XVRTrainingDevice.auto
    profile: XVRTrainingProfile = XVRTrainingProfile.automatic
    batchSize: Annotated[int, WithinRange(0, 1024)] = 0
    trainedModel: pathlib.Path


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
        self._job = None
        self._timer = None
        self._outcome = ""  # the last job's outcome, shown until the next job starts
        self._volumeFilter = None
        self._extras = None  # device advice, pose preview, keep temporary files (XVRTrainingLib.panel_extras)

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        import qt

        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XVRTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets. The .ui connects the root widget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)
        from XVRCoreLib.panel_widgets import SourceVolumeFilter

        self._volumeFilter = SourceVolumeFilter(self.ui.inputVolumeSelector, slicer.mrmlScene)  # no X-ray, DRR…

        self.logic = XVRTrainingLogic()
        from XVRTrainingLib.panel_extras import TrainingPanelExtras

        self._extras = TrainingPanelExtras(self.ui, self.logic, lambda: self._parameterNode, slicer.mrmlScene)

        # Connections
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResumeButton)
        self.ui.logTextEdit.setMaximumBlockCount(LOG_MAX_LINES)
        self.ui.logTextEdit.setReadOnly(True)

        # Progress is shown while a training job runs; the job is polled from a timer (Slicer stays responsive).
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
        if self._job is not None and self._job.running:
            self._job.cancel()  # the process saves a checkpoint and stops
        if self._volumeFilter is not None:
            self._volumeFilter.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        # Do not react to parameter node changes (GUI will be updated when the user enters into the module)
        from XVRCoreLib.panel_widgets import unbind_parameter_node

        if self._parameterNode:
            unbind_parameter_node(self._parameterNode, self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)
        self._extras.sceneClosing()

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        from XVRCoreLib.panel_widgets import default_source_volume

        p = self.logic.getParameterNode()
        # Select default input nodes if nothing is selected yet to save a few clicks for the user: a CT or
        # MRA the user loaded (no X-ray, DRR or label map).
        if not p.inputVolume:
            p.inputVolume = default_source_volume(slicer.mrmlScene)
        self.setParameterNode(p)

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe parameter node.

        Observation is needed because the GUI must be updated immediately when the parameter node changes.
        """
        from XVRCoreLib.panel_widgets import bind_parameter_node, unbind_parameter_node

        if self._parameterNode:
            unbind_parameter_node(self._parameterNode, self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Note: in the .ui file, a Qt dynamic property called "SlicerParameterName" is set on each
            # ui element that needs connection (path fields: bound so that an unset path shows empty).
            self._parameterNodeGuiTag = bind_parameter_node(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        running = self._job is not None and self._job.running
        self.ui.customRangesCollapsibleButton.enabled = self._parameterNode.preset == XVRTrainingPreset.custom
        self.logic.showPresetRanges(self._parameterNode)
        self._extras.update(self._parameterNode)
        problems = self.logic.inputProblems(self._parameterNode)
        if running:
            self.ui.applyButton.text = _("Cancel") if not self._job.cancelRequested else _("Cancelling...")
            self.ui.applyButton.enabled = not self._job.cancelRequested
            self.ui.resumeButton.enabled = False
            return
        self.ui.applyButton.text = _("Start training")
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Train a network on the selected volume.")
        canResume = not problems and self.logic.canResume(self._parameterNode.outputDirectory)
        self.ui.resumeButton.enabled = canResume
        # The last outcome stays on top until the next job starts; then what is missing, if anything.
        lines = ([self._outcome] if self._outcome else []) + (problems or ([] if self._outcome else [_("Inputs are complete.")]))
        self.ui.statusLabel.text = "\n".join(lines)

    def _appendLog(self, lines) -> None:
        for line in lines:
            self.ui.logTextEdit.appendPlainText(line)

    def onApplyButton(self) -> None:
        """Start training, or cancel the running job."""
        if self._job is not None and self._job.running:
            self._job.cancel()
            self._appendLog([_("Cancel requested: the training saves a checkpoint and stops.")])
            self._checkCanApply()
            return
        self._start(resume=False)

    def onResumeButton(self) -> None:
        self._start(resume=True)

    def _start(self, resume: bool) -> None:
        from XVRCoreLib.panel_widgets import remember_paths

        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            # First use: install torch and the core's dependencies (asks the user first).
            self.logic.ensureDependencies(log=lambda line: self._appendLog([line]),
                                          status=lambda text: setattr(self.ui.statusLabel, "text", text))
            remember_paths(self.ui.outputDirectoryPathLineEdit, self.ui.pretrainedModelPathLineEdit)
            p = self._parameterNode
            self._job = self.logic.launcher.startTraining(
                p.inputVolume, p.inputSegmentation, p.outputDirectory, preset=p.preset.value,
                customRanges=self.logic.customRanges(p) if p.preset == XVRTrainingPreset.custom else None,
                orientation=p.orientation.value, sdd=p.sid if p.preset == XVRTrainingPreset.custom else None,
                modality=p.modality.value, vesselNode=p.vessels, pretrainedModel=p.pretrainedModel,
                pretrainedRepository=p.pretrainedRepository, minutes=p.minutes, device=p.device.value,
                profile=p.profile.value, batchSize=p.batchSize, resume=resume,
            )
            self.ui.logTextEdit.clear()
            self._outcome = ""
            self._appendLog([" ".join(self._job.command)])
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = 0
            self._job.showChart()
            self._timer.start()
            self._checkCanApply()

    def onPoll(self) -> None:
        """Read what the training process wrote since the last call (QTimer; never blocks)."""
        if self._job is None or not self._job.running:  # a tick queued after the end reports nothing twice
            self._timer.stop()
            return
        update = self._job.poll()
        self._appendLog(update["log"])
        if update["fraction"] is not None:
            self.ui.progressBar.value = int(1000 * update["fraction"])
        if update["status"]:
            self.ui.statusLabel.text = update["status"]
        if update["finished"]:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
            if update["model"]:
                # Recorded in the scene of the moment, even if the scene was closed while training ran.
                p = self._parameterNode or self.logic.getParameterNode()
                p.trainedModel = pathlib.Path(update["model"])
            self._finish(update["status"] or "", update["returncode"])
            self._checkCanApply()

    def _finish(self, outcome: str, returncode) -> None:
        """Keep the outcome visible in the panel and the log; a failure also gets a dialog and the console."""
        import logging

        from xvrcore.io.events import EXIT_CANCELLED

        self._outcome = outcome
        self._appendLog([outcome])
        if returncode not in (0, EXIT_CANCELLED):
            logging.getLogger(__name__).error("XVR Training: %s\n%s", outcome, " ".join(self._job.command))
            slicer.util.errorDisplay(outcome, detailedText=self.ui.logTextEdit.toPlainText()[-4000:])


#
# XVRTrainingLogic
#


class XVRTrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the training panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets. Takes the nodes (and through them the scene) explicitly. Heavy packages
    (torch, xvrcore) are imported inside the methods that use them. ``launcher``
    (``XVRTrainingLib.launch.TrainingLauncher``) writes the inputs and starts the background training.
    """

    def __init__(self, temporaryBase=None) -> None:
        """``temporaryBase``: where the jobs' input folders go (None: Slicer's temporary directory)."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.launcher = TrainingLauncher(temporaryBase)

    def getParameterNode(self):
        return XVRTrainingParameterNode(super().getParameterNode())

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
        """Human-readable reasons why training cannot start with these parameters (empty if none)."""
        problems = []
        if not parameterNode.inputVolume:
            problems.append(_("Select the CT or MRA volume to train on."))
        if str(parameterNode.outputDirectory) in ("", "."):
            problems.append(_("Select an output directory for the checkpoints."))
        if parameterNode.preset == XVRTrainingPreset.custom:
            for name in CLINICAL_RANGE_NAMES:
                if getattr(parameterNode, name + "Min") > getattr(parameterNode, name + "Max"):
                    problems.append(_("The custom {name} range is empty (minimum above maximum).").format(name=name))
        if str(parameterNode.pretrainedModel) not in ("", ".") and parameterNode.pretrainedRepository.strip():
            problems.append(_("Give a pretrained model file or a repository, not both."))
        return problems

    @staticmethod
    def clinicalRanges(parameterNode):
        """The panel's ranges as ``XVRCoreLib.clinical_ranges.ClinicalRanges``."""
        from XVRCoreLib.clinical_ranges import ClinicalRanges

        return ClinicalRanges(**{name: (getattr(parameterNode, name + "Min"), getattr(parameterNode, name + "Max"))
                                 for name in CLINICAL_RANGE_NAMES}, sid=parameterNode.sid)

    @classmethod
    def customRanges(cls, parameterNode) -> dict:
        """The paper's ``{alpha: [min, max], …, z: [min, max]}`` of the panel's clinical ranges (its orientation)."""
        from XVRCoreLib.clinical_ranges import to_paper

        paper = to_paper(cls.clinicalRanges(parameterNode), parameterNode.orientation.value)
        return {name: list(paper[name]) for name in CUSTOM_RANGE_NAMES}

    @staticmethod
    def showPresetRanges(parameterNode) -> bool:
        """Show a picked preset's own ranges (clinical terms), its orientation and SID; False for custom ranges.

        Written only where a value differs, so the parameter node's observers are not triggered for nothing.
        """
        if parameterNode.preset == XVRTrainingPreset.custom:
            return False
        try:
            from xvrcore.learning.sampling import get_preset
            from XVRCoreLib.clinical_ranges import from_paper
        except ImportError:  # dependencies not installed yet: the defaults are the pelvis preset's
            return False
        preset = get_preset(parameterNode.preset.value)
        clinical = from_paper(preset.ranges.to_dict(), preset.ranges.orientation, sid=preset.sdd)
        values = {"sid": clinical.sid, "orientation": XVRTrainingOrientation(preset.ranges.orientation)}
        for name in CLINICAL_RANGE_NAMES:
            values[name + "Min"], values[name + "Max"] = getattr(clinical, name)
        for name, value in values.items():
            if getattr(parameterNode, name) != value:
                setattr(parameterNode, name, value)
        return True

    @staticmethod
    def canResume(outputDirectory) -> bool:
        """Whether the output directory holds a checkpoint to continue."""
        if str(outputDirectory) in ("", "."):
            return False
        try:
            from xvrcore.learning.run_state import latest_checkpoint
        except ImportError:  # dependencies not installed yet
            return False
        try:
            return latest_checkpoint(outputDirectory) is not None
        except (OSError, ValueError):
            return False

    def ensureDependencies(self, log=None, status=None) -> None:
        """Install the Python packages this module needs, asking the user once. Call on first use only.

        ``log(line)`` gets the installers' output and ``status(text)`` each step (the panel shows both).
        """
        from XVRCoreLib import slicersupport

        slicersupport.ensure_dependencies(self.resourcePath("requirements.txt"), log=log, status=status)


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
        """Run as few or as many tests as needed here.

        Skipped, not failed, before the dependencies are installed (as SlicerTotalSegmentator does): the
        extension build machines and a first "Reload and Test" have no torch.
        """
        from XVRCoreLib import slicersupport

        if slicersupport.skipped_without_dependencies(self):
            return
        self.setUp()
        self.test_XVRTraining1()
        self.setUp()
        self.test_XVRTrainingCommand()

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
        self.assertEqual(parameterNode.profile, XVRTrainingProfile.automatic)
        self.assertEqual(parameterNode.batchSize, 0)
        self.assertAlmostEqual(parameterNode.minutes, 5.0)
        self.assertEqual(len(logic.inputProblems(parameterNode)), 2)

        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        parameterNode.inputVolume = volumeNode
        parameterNode.outputDirectory = pathlib.Path(slicer.app.temporaryPath)
        self.assertEqual(parameterNode.inputVolume.GetID(), volumeNode.GetID())
        self.assertEqual(logic.inputProblems(parameterNode), [])
        with self.assertRaises(ValueError):
            parameterNode.minutes = 0.1  # outside WithinRange(0.5, 1440)
        parameterNode.preset = XVRTrainingPreset.custom
        parameterNode.lateralMin, parameterNode.lateralMax = 10.0, -10.0
        self.assertEqual(len(logic.inputProblems(parameterNode)), 1)

        self.delayDisplay("Test passed")

    def test_XVRTrainingCommand(self):
        """The command line of the background process and the progress tables (no training is run)."""
        logic = XVRTrainingLogic()
        command = logic.launcher.trainingCommand("PythonSlicer", "ct.nii.gz", "out", preset="custom",
                                                 customRanges={n: [-1.0, 1.0] for n in CUSTOM_RANGE_NAMES},
                                                 orientation="AP", minutes=2.0, device="cpu", resume=True)
        self.assertEqual(command[1:4], ["-m", "xvrcore", "train"])
        self.assertIn("--progress-json", command)
        self.assertIn("--resume", command)
        self.assertEqual(command[command.index("--orientation") + 1], "AP")
        self.assertEqual(command[command.index("--profile") + 1], "standard")
        self.assertNotIn("--batch-size", command)  # the profile's
        self.assertEqual(logic.launcher.resolveProfile("automatic", "cpu"), "quick")
        progress, _validation, chart = logic.launcher.progressNodes(slicer.mrmlScene)
        self.assertEqual(progress.GetNumberOfColumns(), 3)
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 2)
