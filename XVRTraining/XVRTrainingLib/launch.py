"""Starting a training: the inputs written for the background process (the CT and the segments) into the
job's own temporary folder (``XVRCoreLib.job_files``; the output folder gets only the run: checkpoints
and the model), the pretrained model it finetunes, the network profile, and its command line.
"""

import pathlib

from slicer.i18n import tr as _

from .job import TrainingJob
from .plot import progressNodes

__all__ = ["CUSTOM_RANGE_NAMES", "PROFILES", "TrainingLauncher", "resolveProfile", "trainingCommand"]

#: The paper's C-arm parameters, in the order of the custom ranges (degrees, then mm).
CUSTOM_RANGE_NAMES = ("alpha", "beta", "gamma", "x", "y", "z")
#: The network profiles a process trains with (``xvrcore.learning.training.PROFILES``).
PROFILES = ("standard", "quick")


def resolveProfile(profile: str = "automatic", device: str = "auto") -> str:
    """``standard`` or ``quick``: automatic means Quick unless the process will train on a GPU."""
    if profile != "automatic":
        if profile not in PROFILES:
            raise ValueError(f"{profile!r} is not a training profile")
        return profile
    if device == "cpu":
        return "quick"
    if device == "cuda":
        return "standard"
    from XVRCoreLib.slicersupport import cuda_available

    return "standard" if cuda_available() else "quick"  # None: no torch in this Python, nothing says a GPU is there


def trainingCommand(python, volumePath, outputDirectory, preset="pelvis", customRanges=None, orientation=None,
                    labelmapPath=None, labels=None, initFrom=None, minutes=5.0, iterations=None, device="auto",
                    batchSize=0, resume=False, threads=None, extra=(), profile="standard", sdd=None, modality="auto",
                    vesselsPath=None, cancelFile=None) -> list:
    """The ``xvrcore train`` command line (``python -m xvrcore train ... --progress-json``).

    Built by :func:`xvrcore.app.commands.train_command`; this maps the panel's inputs to its options:
    ``customRanges`` ``{name: (min, max)}`` with the ``orientation`` (the ``custom`` preset trains the
    pelvis geometry on them), ``iterations`` instead of ``minutes`` when given, ``batchSize`` 0 for the
    profile's. ``profile``: ``standard`` or ``quick`` (``xvrcore.learning.training.PROFILES``). ``sdd``: the
    training camera's SID (None: the preset's). ``modality`` ``auto`` leaves ``--modality`` to the core;
    ``vesselsPath`` a vessel label map (``--vessels``); ``cancelFile`` the file that asks the process to stop
    (None: ``OUTPUT/CANCEL``). ``extra``
    (command-line tokens) goes at the end.
    """
    from xvrcore.app.commands import train_command
    from XVRCoreLib.vessels import MODALITY_ARGUMENT

    ranges = {name: tuple(customRanges[name]) for name in CUSTOM_RANGE_NAMES} if customRanges else {}
    command = train_command(
        python=str(python), volume=volumePath, output=outputDirectory, preset="pelvis" if preset == "custom" else preset,
        modality=MODALITY_ARGUMENT[str(modality)], vessels=vesselsPath or None, **ranges,
        orientation=(orientation or "PA") if customRanges else None, sdd=float(sdd) if sdd else None,
        labelmap=labelmapPath or None,
        labels=[int(v) for v in labels] if labelmapPath and labels else None, init_from=initFrom or None,
        iterations=int(iterations) if iterations else None, minutes=None if iterations else float(minutes),
        profile=str(profile), device=str(device), batch_size=int(batchSize) if batchSize else None,
        threads=int(threads) if threads else None, resume=bool(resume), cancel_file=cancelFile or None,
        progress_json=True)
    return command + [str(e) for e in extra]


class TrainingLauncher:
    """Writes what ``xvrcore train`` reads and starts it in the background (a :class:`TrainingJob`).

    Never touches widgets.
    """

    resolveProfile = staticmethod(resolveProfile)
    trainingCommand = staticmethod(trainingCommand)
    progressNodes = staticmethod(progressNodes)

    def __init__(self, temporaryBase=None) -> None:
        #: Where the job folders go (None: Slicer's temporary directory); see XVRCoreLib.job_files.
        self.temporaryBase = temporaryBase

    @staticmethod
    def writeInputs(volumeNode, segmentationNode, folder) -> dict:
        """Write the CT (and the segments as a label map) into ``folder`` (the job's own) for the process.

        Returns ``{"volume": path, "labelmap": path or None, "labels": [ids], "names": {id: name}}``.
        The volume is written in world coordinates (its parent transforms applied), with xvrcore's
        writer, so the process reads exactly what Slicer shows.
        """
        from XVRCoreLib.volumes import segmentation_labelmap, volume_from_node, write_label_names

        inputs = pathlib.Path(folder)
        inputs.mkdir(parents=True, exist_ok=True)
        volume = volume_from_node(volumeNode, kind="ct")
        volumePath = volume.save(inputs / "volume.nii.gz")
        result = {"volume": volumePath, "labelmap": None, "labels": None, "names": {}}
        if segmentationNode is not None and segmentationNode.GetSegmentation().GetNumberOfSegments():
            labels, names, colors = segmentation_labelmap(segmentationNode, volumeNode)
            result["labelmap"] = labels.save(inputs / "labels.nii.gz")
            result["labels"] = sorted(names)
            result["names"] = names
            write_label_names(inputs / "labels.ctbl", names, colors)
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

    def startTraining(self, volumeNode, segmentationNode, outputDirectory, preset="pelvis", customRanges=None,
                      orientation="PA", pretrainedModel=None, pretrainedRepository=None, minutes=5.0, device="auto",
                      batchSize=0, resume=False, iterations=None, threads=None, extra=(), python=None,
                      profile="automatic", sdd=None, modality="auto", vesselNode=None) -> TrainingJob:
        """Write the inputs and start ``xvrcore train`` in the background; returns the running job.

        ``resume`` continues the run in ``outputDirectory`` from its last checkpoint (same settings).
        """
        from XVRCoreLib import slicersupport
        from XVRCoreLib.job_files import JobFolder

        if volumeNode is None:
            raise ValueError(_("Select the CT or MRA volume to train on."))
        if str(outputDirectory) in ("", "."):
            raise ValueError(_("Select an output directory for the checkpoints."))
        outputDirectory = pathlib.Path(outputDirectory)
        initFrom = self.resolvePretrained(pretrainedModel, pretrainedRepository)
        jobFolder = JobFolder("training", self.temporaryBase)  # the inputs; the output gets only the run
        try:
            command = self._writeCommand(
                jobFolder.path, volumeNode, segmentationNode, vesselNode, python, outputDirectory, preset=preset,
                customRanges=customRanges, orientation=orientation, initFrom=initFrom, minutes=minutes, iterations=iterations, device=device, batchSize=batchSize,
                resume=resume, threads=threads, extra=extra, profile=resolveProfile(profile, device), sdd=sdd,
                modality=modality)
            progress, validation, chart = progressNodes(volumeNode.GetScene())
            job = TrainingJob(command, outputDirectory, progress, validation, chart,
                              env=slicersupport.process_environment(device), jobFolder=jobFolder)
            return job.start()
        except BaseException:  # nothing ran: its inputs are of no use to anyone
            jobFolder.discard()
            raise

    @staticmethod
    def _writeCommand(folder, volumeNode, segmentationNode, vesselNode, python, output, **options) -> list:
        """Write the inputs into the job ``folder``; the command line that reads them (the cancel file there too)."""
        from xvrcore.io.events import CANCEL_FILE
        from XVRCoreLib import slicersupport
        from XVRCoreLib.vessels import write_vessels

        inputs = TrainingLauncher.writeInputs(volumeNode, segmentationNode, folder)
        vesselsPath = write_vessels(vesselNode, volumeNode, folder / "vessels.nii.gz")
        return trainingCommand(python or slicersupport.python_executable(), inputs["volume"], output,
                               labelmapPath=inputs["labelmap"], labels=inputs["labels"], vesselsPath=vesselsPath,
                               cancelFile=folder / CANCEL_FILE, **options)
