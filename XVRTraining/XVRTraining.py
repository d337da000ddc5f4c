import enum
import math
import os
import pathlib
import time
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

# torch, xvrcore and XVRCoreLib are imported lazily, inside the methods that need them: importing this file
# must stay cheap, must work before the dependencies are installed and before Slicer has put the XVRCore
# module's folder on sys.path (in a source tree each module folder is its own module path). qt is imported
# inside the widget's methods, so that the logic can be imported (and tested) where only MRML exists.


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


# The paper's Table S2 pelvis ranges: the defaults of the custom ranges.
CUSTOM_RANGE_NAMES = ("alpha", "beta", "gamma", "x", "y", "z")


@parameterNodeWrapper
class XVRTrainingParameterNode:
    """
    The parameters needed by the module.

    inputVolume - The preoperative CT or MRA the network is trained on.
    inputSegmentation - Optional: restricts the rendered anatomy to these segments.
    preset - Anatomy preset (C-arm geometry and sampled pose ranges), or custom ranges.
    orientation, alphaMin ... zMax - The custom ranges (degrees and mm; the paper's C-arm parameters).
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
    alphaMin: Annotated[float, WithinRange(-180, 180)] = -45.0
    alphaMax: Annotated[float, WithinRange(-180, 180)] = 45.0
    betaMin: Annotated[float, WithinRange(-89, 89)] = -45.0
    betaMax: Annotated[float, WithinRange(-89, 89)] = 45.0
    gammaMin: Annotated[float, WithinRange(-180, 180)] = -15.0
    gammaMax: Annotated[float, WithinRange(-180, 180)] = 15.0
    xMin: Annotated[float, WithinRange(-2000, 2000)] = -150.0
    xMax: Annotated[float, WithinRange(-2000, 2000)] = 150.0
    yMin: Annotated[float, WithinRange(-2000, 2000)] = -1000.0
    yMax: Annotated[float, WithinRange(-2000, 2000)] = -450.0
    zMin: Annotated[float, WithinRange(-2000, 2000)] = -150.0
    zMax: Annotated[float, WithinRange(-2000, 2000)] = 150.0
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

        self.logic = XVRTrainingLogic()

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
        running = self._job is not None and self._job.running
        self.ui.customRangesCollapsibleButton.enabled = self._parameterNode.preset == XVRTrainingPreset.custom
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
        self.ui.statusLabel.text = "\n".join(problems) if problems else _("Inputs are complete.")

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
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            # First use: install torch and the core's dependencies (asks the user first).
            self.logic.ensureDependencies()
            p = self._parameterNode
            self._job = self.logic.startTraining(
                p.inputVolume, p.inputSegmentation, p.outputDirectory, preset=p.preset.value,
                customRanges=self.logic.customRanges(p) if p.preset == XVRTrainingPreset.custom else None,
                orientation=p.orientation.value, pretrainedModel=p.pretrainedModel,
                pretrainedRepository=p.pretrainedRepository, minutes=p.minutes, device=p.device.value,
                profile=p.profile.value, batchSize=p.batchSize, resume=resume,
            )
            self.ui.logTextEdit.clear()
            self._appendLog([" ".join(self._job.command)])
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = 0
            self.logic.showPlot(self._job)
            self._timer.start()
            self._checkCanApply()

    def onPoll(self) -> None:
        """Read what the training process wrote since the last call (QTimer; never blocks)."""
        if self._job is None:
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
                self._parameterNode.trainedModel = pathlib.Path(update["model"])
            self._appendLog([update["status"]])
            self._checkCanApply()


#
# XVRTrainingLogic
#


class XVRTrainingJob:
    """A running ``xvrcore train`` process: its command, its events turned into tables, cancel/poll.

    Holds MRML table nodes (``progressTable``: iteration, loss, NCC; ``validationTable``: iteration,
    mTRE, dGeo) and a chart that plots them; never touches widgets.
    """

    def __init__(self, command, outputDirectory, progressTable=None, validationTable=None, chart=None, env=None):
        from xvrcore.app.jobs import JobRunner

        self.command = [str(c) for c in command]
        self.outputDirectory = pathlib.Path(outputDirectory)
        self.runner = JobRunner(self.command, self.outputDirectory, env=env)
        self.progressTable = progressTable
        self.validationTable = validationTable
        self.chart = chart
        self.cancelRequested = False
        self.fraction = 0.0
        self.model = None
        self.checkpoint = None
        self.returncode = None
        self.events = []

    def start(self) -> "XVRTrainingJob":
        self.runner.start()
        return self

    @property
    def running(self) -> bool:
        return self.returncode is None and self.runner.process is not None

    def cancel(self) -> None:
        """Ask the process to save a checkpoint and stop (it polls the cancel file); kill it if it hangs."""
        self.cancelRequested = True
        self.runner.cancel()

    def poll(self) -> dict:
        """Events and log lines since the last call, applied to the tables; see XVRTrainingWidget.onPoll."""
        from xvrcore.io.events import EXIT_CANCELLED

        update = self.runner.poll()
        status = None
        for event in update.events:
            self.events.append(event)
            kind = event.get("event")
            if kind == "progress":
                self.fraction = float(event.get("fraction") or 0.0)
                _appendRow(self.progressTable, [event.get("done", 0), event.get("loss"), event.get("ncc")])
                eta = event.get("eta_s")
                status = _("Iteration {done}: loss {loss:.3f}").format(done=event.get("done", 0), loss=_number(event.get("loss")))
                if math.isfinite(_number(event.get("ncc"))):  # no DRR at the prediction while on the pose loss alone
                    status += ", " + _("NCC {ncc:.3f}").format(ncc=_number(event.get("ncc")))
                if eta is not None:
                    status += " " + _("({eta:.0f} s left)").format(eta=eta)
            elif kind == "validation":
                _appendRow(self.validationTable, [event.get("iteration", 0), event.get("mtre_mm"), event.get("dgeo_mm")])
                status = _("Validation at iteration {i}: mTRE {m:.1f} mm").format(
                    i=event.get("iteration", 0), m=_number(event.get("mtre_mm")))
            elif kind == "checkpoint":
                self.checkpoint = event.get("path")
            elif kind in ("finished", "cancelled"):
                self.model = event.get("model")
                self.checkpoint = event.get("checkpoint") or self.checkpoint
        if self.cancelRequested and update.returncode is None:
            self.runner.terminate(grace_s=60.0)  # only if it ignored the cancel file for a minute
        if update.returncode is not None:
            self.returncode = update.returncode
            if update.returncode == 0:
                self.fraction = 1.0
                status = _("Training finished; model in {model}").format(model=self.model or self.outputDirectory)
            elif update.returncode == EXIT_CANCELLED:
                status = _("Training cancelled; checkpoint saved in {path}. Resume continues it.").format(
                    path=self.checkpoint or self.outputDirectory)
            else:
                status = _("Training failed (exit code {code}); see the log.").format(code=update.returncode)
        return {"events": update.events, "log": update.log, "fraction": self.fraction, "status": status,
                "finished": self.returncode is not None, "returncode": self.returncode, "model": self.model}

    def wait(self, timeout=None) -> dict:
        """Block until the process ends (tests, scripts); returns the final poll."""
        self.runner.process.wait(timeout=timeout)
        if self.runner._reader is not None:
            self.runner._reader.join(timeout=5)
        result = self.poll()
        while not result["finished"]:
            time.sleep(0.05)
            more = self.poll()
            more["events"] = result["events"] + more["events"]
            more["log"] = result["log"] + more["log"]
            result = more
        return result


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _appendRow(tableNode, values) -> None:
    if tableNode is None:
        return
    table = tableNode.GetTable()
    row = table.GetNumberOfRows()
    table.InsertNextBlankRow()
    for column, value in enumerate(values):
        table.SetValue(row, column, vtk.vtkVariant(_number(value)))
    table.Modified()
    tableNode.Modified()


class XVRTrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the training panel does, usable from the Python console and from tests without the GUI.

    Never touches widgets. Takes the nodes (and through them the scene) explicitly. Heavy packages
    (torch, xvrcore) are imported inside the methods that use them.
    """

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)

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
            for name in CUSTOM_RANGE_NAMES:
                if getattr(parameterNode, name + "Min") > getattr(parameterNode, name + "Max"):
                    problems.append(_("The custom {name} range is empty (minimum above maximum).").format(name=name))
        if str(parameterNode.pretrainedModel) not in ("", ".") and parameterNode.pretrainedRepository.strip():
            problems.append(_("Give a pretrained model file or a repository, not both."))
        return problems

    @staticmethod
    def customRanges(parameterNode) -> dict:
        return {name: [getattr(parameterNode, name + "Min"), getattr(parameterNode, name + "Max")]
                for name in CUSTOM_RANGE_NAMES}

    @staticmethod
    def canResume(outputDirectory) -> bool:
        """Whether the output directory holds a checkpoint to continue."""
        if str(outputDirectory) in ("", "."):
            return False
        try:
            from xvrcore.learning.checkpoint import latest_checkpoint
        except ImportError:  # dependencies not installed yet
            return False
        try:
            return latest_checkpoint(outputDirectory) is not None
        except (OSError, ValueError):
            return False

    def ensureDependencies(self) -> None:
        """Install the Python packages this module needs, asking the user first. Call on first use only."""
        from XVRCoreLib import slicersupport

        slicersupport.ensure_dependencies(self.resourcePath("requirements.txt"))

    # -- the background process ----------------------------------------------------------------------------

    @staticmethod
    def pythonExecutable() -> str:
        from XVRCoreLib import slicersupport

        return slicersupport.python_executable()

    @staticmethod
    def processEnvironment(device: str = "auto") -> dict:
        from XVRCoreLib import slicersupport

        return slicersupport.process_environment(device)

    @staticmethod
    def resolveProfile(profile: str = "automatic", device: str = "auto") -> str:
        """``standard`` or ``quick``: automatic means Quick unless the process will train on a GPU."""
        if profile != XVRTrainingProfile.automatic.value:
            return XVRTrainingProfile(profile).value
        if device == "cpu":
            return XVRTrainingProfile.quick.value
        if device == "cuda":
            return XVRTrainingProfile.standard.value
        try:
            import torch
        except ImportError:  # no torch in this Python: nothing says a GPU is there
            return XVRTrainingProfile.quick.value
        return XVRTrainingProfile.standard.value if torch.cuda.is_available() else XVRTrainingProfile.quick.value

    @staticmethod
    def trainingCommand(python, volumePath, outputDirectory, preset="pelvis", customRanges=None, orientation=None,
                        labelmapPath=None, labels=None, initFrom=None, minutes=5.0, iterations=None, device="auto",
                        batchSize=0, resume=False, threads=None, extra=(), profile="standard") -> list:
        """The ``xvrcore train`` command line (``python -m xvrcore train ... --progress-json``).

        ``profile``: ``standard`` or ``quick`` (``xvrcore.learning.training.PROFILES``); ``batchSize`` 0 takes the profile's.
        """
        command = [str(python), "-m", "xvrcore", "train", "--volume", str(volumePath), "--output", str(outputDirectory),
                   "--preset", "pelvis" if preset == "custom" else str(preset)]
        if customRanges:
            for name in CUSTOM_RANGE_NAMES:
                low, high = customRanges[name]
                command += [f"--{name}", repr(float(low)), repr(float(high))]
            command += ["--orientation", str(orientation or "PA")]
        if labelmapPath:
            command += ["--labelmap", str(labelmapPath)]
            if labels:
                command += ["--labels", *[str(int(v)) for v in labels]]
        if initFrom:
            command += ["--init-from", str(initFrom)]
        if iterations:
            command += ["--iterations", str(int(iterations))]
        else:
            command += ["--minutes", repr(float(minutes))]
        command += ["--profile", str(profile), "--device", str(device), "--progress-json"]
        if batchSize:
            command += ["--batch-size", str(int(batchSize))]
        if threads:
            command += ["--threads", str(int(threads))]
        if resume:
            command.append("--resume")
        return command + [str(e) for e in extra]

    @staticmethod
    def writeInputs(volumeNode, segmentationNode, outputDirectory) -> dict:
        """Write the CT (and the segments as a label map) into ``<output>/inputs`` for the process.

        Returns ``{"volume": path, "labelmap": path or None, "labels": [ids], "names": {id: name}}``.
        The volume is written in world coordinates (its parent transforms applied), with xvrcore's
        writer, so the process reads exactly what Slicer shows.
        """
        from XVRCoreLib import mrml

        inputs = pathlib.Path(outputDirectory) / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        volume = mrml.volume_from_node(volumeNode, kind="ct")
        volumePath = volume.save(inputs / "volume.nii.gz")
        result = {"volume": volumePath, "labelmap": None, "labels": None, "names": {}}
        if segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments():
            labels, names, colors = mrml.segmentation_labelmap(segmentationNode, volumeNode)
            result["labelmap"] = labels.save(inputs / "labels.nii.gz")
            result["labels"] = sorted(names)
            result["names"] = names
            mrml.write_label_names(inputs / "labels.ctbl", names, colors)
        return result

    @staticmethod
    def resolvePretrained(pretrainedModel=None, pretrainedRepository=None):
        """A usable model folder (or .pth) from a path or a Hugging Face repository (downloaded, cached)."""
        repository = (pretrainedRepository or "").strip()
        if repository:
            from xvrcore.learning.hub import pull

            return pull(repository)
        if pretrainedModel is not None and str(pretrainedModel) not in ("", "."):
            path = pathlib.Path(pretrainedModel)
            if not path.exists():
                raise ValueError(_("The pretrained model {path} does not exist.").format(path=path))
            return path
        return None

    def progressNodes(self, scene, name="XVR training"):
        """Table nodes for the loss and validation curves, and a chart plotting both (created once)."""
        def table(tableName, columns):
            node = scene.GetFirstNodeByName(tableName)
            if node is None:
                node = scene.AddNewNodeByClass("vtkMRMLTableNode", tableName)
            node.RemoveAllColumns()
            for column in columns:
                array = vtk.vtkDoubleArray()
                array.SetName(column)
                node.AddColumn(array)
            return node

        progress = table(f"{name} loss", ["iteration", "loss", "ncc"])
        validation = table(f"{name} validation", ["iteration", "mtre_mm", "dgeo_mm"])
        chart = scene.GetFirstNodeByName(f"{name} chart")
        if chart is None:
            chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
            for tableNode, column, color in ((progress, "loss", (0.2, 0.4, 0.9)), (validation, "mtre_mm", (0.9, 0.3, 0.1))):
                series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
                series.SetAndObserveTableNodeID(tableNode.GetID())
                series.SetXColumnName("iteration")
                series.SetYColumnName(column)
                series.SetPlotType(series.PlotTypeScatter)
                series.SetColor(*color)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
            chart.SetTitle(_("Training: loss and validation mTRE (mm)"))
            chart.SetXAxisTitle(_("iteration"))
        return progress, validation, chart

    def startTraining(self, volumeNode, segmentationNode, outputDirectory, preset="pelvis", customRanges=None,
                      orientation="PA", pretrainedModel=None, pretrainedRepository=None, minutes=5.0, device="auto",
                      batchSize=0, resume=False, iterations=None, threads=None, extra=(), python=None,
                      profile="automatic") -> XVRTrainingJob:
        """Write the inputs and start ``xvrcore train`` in the background; returns the running job.

        ``resume`` continues the run in ``outputDirectory`` from its last checkpoint (same settings).
        """
        if volumeNode is None:
            raise ValueError(_("Select the CT or MRA volume to train on."))
        if str(outputDirectory) in ("", "."):
            raise ValueError(_("Select an output directory for the checkpoints."))
        outputDirectory = pathlib.Path(outputDirectory)
        inputs = self.writeInputs(volumeNode, segmentationNode, outputDirectory)
        initFrom = self.resolvePretrained(pretrainedModel, pretrainedRepository)
        command = self.trainingCommand(
            python or self.pythonExecutable(), inputs["volume"], outputDirectory, preset=preset,
            customRanges=customRanges, orientation=orientation, labelmapPath=inputs["labelmap"],
            labels=inputs["labels"], initFrom=initFrom, minutes=minutes, iterations=iterations, device=device,
            batchSize=batchSize, resume=resume, threads=threads, extra=extra, profile=self.resolveProfile(profile, device))
        progress, validation, chart = self.progressNodes(volumeNode.GetScene())
        job = XVRTrainingJob(command, outputDirectory, progress, validation, chart, env=self.processEnvironment(device))
        return job.start()

    @staticmethod
    def showPlot(job) -> None:
        """Show the job's chart in the view layout (Slicer only)."""
        if job is not None and job.chart is not None and hasattr(slicer, "modules") and hasattr(slicer.modules, "plots"):
            slicer.modules.plots.logic().ShowChartInLayout(job.chart)


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
        parameterNode.xMin, parameterNode.xMax = 10.0, -10.0
        self.assertEqual(len(logic.inputProblems(parameterNode)), 1)

        self.delayDisplay("Test passed")

    def test_XVRTrainingCommand(self):
        """The command line of the background process and the progress tables (no training is run)."""
        logic = XVRTrainingLogic()
        command = logic.trainingCommand("PythonSlicer", "ct.nii.gz", "out", preset="custom",
                                        customRanges={n: [-1.0, 1.0] for n in CUSTOM_RANGE_NAMES}, orientation="AP",
                                        minutes=2.0, device="cpu", resume=True)
        self.assertEqual(command[1:4], ["-m", "xvrcore", "train"])
        self.assertIn("--progress-json", command)
        self.assertIn("--resume", command)
        self.assertEqual(command[command.index("--orientation") + 1], "AP")
        self.assertEqual(command[command.index("--profile") + 1], "standard")
        self.assertNotIn("--batch-size", command)  # the profile's
        self.assertEqual(logic.resolveProfile("automatic", "cpu"), "quick")
        progress, _validation, chart = logic.progressNodes(slicer.mrmlScene)
        self.assertEqual(progress.GetNumberOfColumns(), 3)
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 2)
