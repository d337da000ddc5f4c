"""Starting a registration: the inputs written for the background process (CT, label map, start poses or
landmarks, X-ray DICOMs written from nodes) into the job's own temporary folder (``XVRCoreLib.job_files``;
the output folder gets only the results), its command lines, and the model it starts from.
"""

import json
import pathlib
import shutil

from slicer.i18n import tr as _

from . import nodes
from .job import RegistrationJob

__all__ = ["RegistrationLauncher", "registrationCommand"]


def registrationCommand(python, xrayPaths, volumePath, outputDirectory, labelsPath=None, labelNamesPath=None,
                        initPose=None, landmarks=None, model=None, frame=None, maskFrame=None, overrides=None,
                        device="auto", cancelFile=None, overwrite=True, modality="auto", vesselsPath=None) -> list:
    """The ``xvrcore register`` command line (``python -m xvrcore register ... --progress-json``).

    Built by :func:`xvrcore.app.commands.register_command`; this maps the panel's inputs to its options:
    one start (``initPose``, else ``landmarks``, else ``model``), ``maskFrame`` < 0 for none, and the
    geometry ``overrides`` of :func:`XVRRegistrationLib.imports.geometryOverrides`.
    """
    from xvrcore.app.commands import register_command
    from XVRCoreLib.vessels import MODALITY_ARGUMENT

    overrides = overrides or {}
    spacing = overrides.get("pixel_spacing")
    start = {"init_pose": initPose} if initPose else {"landmarks": landmarks} if landmarks else {"model": model or None}
    return register_command(
        [str(p) for p in xrayPaths], python=str(python), volume=volumePath, output=outputDirectory,
        modality=MODALITY_ARGUMENT[str(modality)], vessels=vesselsPath or None,  # auto: the core decides
        labels=labelsPath or None, label_names=labelNamesPath if labelsPath and labelNamesPath else None, **start,
        frame=None if frame in (None, "") else frame,
        mask_frame=int(maskFrame) if maskFrame is not None and int(maskFrame) >= 0 else None,
        pixel_spacing=(spacing, spacing) if isinstance(spacing, (int, float)) else spacing,
        sdd=overrides.get("sdd"), sod=overrides.get("sod"), primary_angle=overrides.get("primary_angle"),
        secondary_angle=overrides.get("secondary_angle"), device=str(device), cancel_file=cancelFile or None,
        overwrite=bool(overwrite), progress_json=True, quiet=True)


class RegistrationLauncher:
    """Writes what ``xvrcore register`` reads and starts it in the background (a :class:`RegistrationJob`).

    Each job writes its inputs into a folder of its own under ``temporaryBase`` (None: Slicer's temporary
    directory), removed when the job ends (``XVRCoreLib.job_files``). Never touches widgets.
    """

    def __init__(self, temporaryBase=None) -> None:
        self.temporaryBase = temporaryBase

    @staticmethod
    def resolveModel(modelPath=None, modelRepository=None):
        """A model folder: pulled from a Hugging Face repository, converted once from an xvr ``.pth``, or as given."""
        repository = (modelRepository or "").strip()
        if repository:
            from xvrcore.learning.hub import pull

            return pull(repository)
        if modelPath is None or str(modelPath) in ("", "."):
            raise ValueError(_("Select the trained model file."))
        path = pathlib.Path(modelPath)
        if str(path).endswith(".pth"):
            from xvrcore.learning.hub import models_dir
            from xvrcore.learning.xvr_import import import_xvr

            return import_xvr(path, models_dir() / path.stem)
        return path

    @staticmethod
    def trainedModel(scene):
        """The model the XVR Training module last produced (its parameter node), if any."""
        try:
            from XVRCoreLib.scene import module_parameter
        except ImportError:  # the dependencies are installed on first use
            return None
        value = module_parameter(scene, "XVRTraining", "trainedModel")
        return value if value and value not in (".", "") and pathlib.Path(value).exists() else None

    def startRegistration(self, xrayNodes, volumeNode, segmentationNode, initialization, outputDirectory, modelPath=None,
                          modelRepository=None, xrayLandmarks=None, volumeLandmarks=None, device="auto",
                          python=None, modality="auto", vesselNode=None) -> RegistrationJob:
        """Write the inputs and start the registration of ``xrayNodes`` in the background; returns the job.

        ``initialization``: ``"dicom"`` (the header), ``"model"`` (the trained model's prediction: a model
        folder, an xvr ``.pth`` converted once, or a Hugging Face repository pulled once), ``"landmarks"``
        (``xrayLandmarks`` placed on the X-ray, ``volumeLandmarks`` in the CT; only the first X-ray) or
        ``"current"`` (each X-ray's current pose). Results go to ``outputDirectory``.
        """
        from XVRCoreLib.job_files import JobFolder

        xrayNodes = self._checkedXrays(xrayNodes, volumeNode, outputDirectory, initialization)
        model = self.resolveModel(modelPath, modelRepository) if initialization == "model" else None
        jobFolder = JobFolder("registration", self.temporaryBase)  # the inputs; the output gets the results
        try:
            job = self._writeJob(jobFolder, xrayNodes, volumeNode, segmentationNode, initialization,
                                 pathlib.Path(outputDirectory), model, xrayLandmarks, volumeLandmarks, device, python,
                                 modality, vesselNode)
            return job.start()
        except BaseException:  # nothing ran: its inputs are of no use to anyone
            jobFolder.discard()
            raise

    def _writeJob(self, jobFolder, xrayNodes, volumeNode, segmentationNode, initialization, output, model,
                  xrayLandmarks, volumeLandmarks, device, python, modality, vesselNode) -> RegistrationJob:
        """Write every input into the job folder; the (not yet started) job whose commands read them."""
        from xvrcore.io.events import CANCEL_FILE
        from XVRCoreLib import slicersupport
        from XVRCoreLib.vessels import write_vessels

        jobDirectory = jobFolder.path
        volumePath = self._writeVolume(volumeNode, jobDirectory / "volume.nrrd")
        labelsPath, namesPath = self._writeLabels(segmentationNode, volumeNode, jobDirectory)
        vesselsPath = write_vessels(vesselNode, volumeNode, jobDirectory / "vessels.nrrd")
        starts = {"current": jobDirectory / "init", "landmarks": jobDirectory / "landmarks"}
        groups, inputs = self._groups(xrayNodes, jobDirectory)
        for byName in inputs:
            for name, (node, _uid) in byName.items():
                self._writeStart(node, name, initialization, starts, xrayLandmarks, volumeLandmarks)
        python = python or slicersupport.python_executable()
        commands = [registrationCommand(
            python, files, volumePath, output, labelsPath, namesPath,
            initPose=starts["current"] if initialization == "current" else None,
            landmarks=starts["landmarks"] if initialization == "landmarks" else None, model=model,
            frame=frame or None, maskFrame=int(maskFrame), overrides=json.loads(overrides), device=device,
            cancelFile=jobDirectory / CANCEL_FILE, modality=modality, vesselsPath=vesselsPath) for (frame, maskFrame, overrides), files in groups.items()]
        return RegistrationJob(commands, jobDirectory, inputs, env=slicersupport.process_environment(device),
                               jobFolder=jobFolder)

    @staticmethod
    def _checkedXrays(xrayNodes, volumeNode, outputDirectory, initialization) -> list:
        """The X-rays to register (landmarks: the first only); raises if an input is missing."""
        xrayNodes = [n for n in xrayNodes if nodes.isXray(n)]
        if not xrayNodes:
            raise ValueError(_("Import an X-ray first."))
        if volumeNode is None:
            raise ValueError(_("Select the CT or MRA volume."))
        if str(outputDirectory) in ("", "."):
            raise ValueError(_("Select an output directory for the results."))
        return xrayNodes[:1] if initialization == "landmarks" else xrayNodes

    @staticmethod
    def _writeVolume(volumeNode, path: pathlib.Path) -> pathlib.Path:
        """The CT in world coordinates at ``path`` (uncompressed: written and read fast)."""
        from XVRCoreLib.volumes import volume_from_node

        volume_from_node(volumeNode).save(path, compress=False)
        return path

    @staticmethod
    def _writeLabels(segmentationNode, volumeNode, jobDirectory: pathlib.Path):
        """The segments as a label map on the CT's grid and their names: ``(labelsPath, namesPath)`` or Nones."""
        from XVRCoreLib.volumes import segmentation_labelmap, write_label_names

        if segmentationNode is None or not segmentationNode.GetSegmentation().GetNumberOfSegments():
            return None, None
        labels, names, colors = segmentation_labelmap(segmentationNode, volumeNode)
        labelsPath = labels.save(jobDirectory / "labels.nrrd", compress=False)
        return labelsPath, write_label_names(jobDirectory / "labels.ctbl", names, colors)

    @staticmethod
    def _writeStart(node, stem, initialization, starts, xrayLandmarks, volumeLandmarks) -> None:
        """The X-ray's start: its current pose (``current``) or its landmarks (``landmarks``) as ``<stem>.json``,
        ``stem`` being its output name in its command (what the registration looks the start up by).
        """
        from xvrcore.io.pose_json import camera_pose, write_pose_json
        from xvrcore.registration import write_landmarks
        from XVRCoreLib.markups import landmarks_from_markups
        from XVRCoreLib.xray_plane import xray_intrinsics

        if initialization == "current":
            starts["current"].mkdir(parents=True, exist_ok=True)
            write_pose_json(starts["current"] / f"{stem}.json", camera_pose(xray_intrinsics(node), nodes.pose(node),
                                                                           start={"method": initialization}))
        elif initialization == "landmarks":
            if xrayLandmarks is None or volumeLandmarks is None:
                raise ValueError(_("Select the landmarks on the X-ray and in the CT."))
            points2d, points3d, labelNames = landmarks_from_markups(
                xrayLandmarks, volumeLandmarks, nodes.pose(node), xray_intrinsics(node))
            starts["landmarks"].mkdir(parents=True, exist_ok=True)
            write_landmarks(starts["landmarks"] / f"{stem}.json", points2d, points3d, labelNames)

    @staticmethod
    def _inputFile(node, jobDirectory: pathlib.Path):
        """The file the registration reads for ``node`` and how it is read (frame, mask frame, overrides).

        The X-ray's DICOM while it is where it was imported from; else (a scene moved to another computer,
        the DICOM folder moved) a DICOM written from the node itself, whose pixels and geometry already
        hold the frame, the mask frame and the overrides.
        """
        from XVRCoreLib.xray_dicom import write_xray_node_dicom

        source = node.GetAttribute("XVR.Source") or ""
        if source and pathlib.Path(source).is_file():
            return source, (node.GetAttribute("XVR.Frame") or "", node.GetAttribute("XVR.MaskFrame") or "-1",
                            node.GetAttribute("XVR.Overrides") or "{}")
        stem = pathlib.Path(source).stem or node.GetName()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "xray"
        folder = jobDirectory / "xrays" / "".join(c for c in node.GetID() if c.isalnum())  # one per node
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return str(write_xray_node_dicom(node, folder / f"{safe}.dcm")), ("", "-1", "{}")

    @classmethod
    def _groups(cls, xrayNodes, jobDirectory: pathlib.Path):
        """X-ray files grouped by frame choice, mask frame and overrides (one process each), and for each
        group ``{output name: (node, SOP Instance UID)}``, the names being the ones the registration gives
        the group's files (``xvrcore.registration.inputs.name_inputs``: unique, so two ``IM000001`` of
        different series folders get different results). The files are :meth:`_inputFile`'s.
        """
        from xvrcore.registration.inputs import name_inputs

        members = {}
        for node in xrayNodes:
            path, key = cls._inputFile(node, jobDirectory)
            members.setdefault(key, []).append((node, path))
        groups, inputs = {}, []
        for key, group in members.items():
            files = [path for _node, path in group]
            named = name_inputs(files)
            groups[key] = files
            inputs.append({item.name: (node, item.sop_instance_uid)
                           for item, (node, _path) in zip(named, group, strict=True)})
        return groups, inputs
