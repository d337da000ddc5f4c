"""The "XVR pelvis CT" entry of Slicer's Sample Data module: the CT shipped with this module, and the simulated
X-ray DICOM of it (``XVRCoreLib.sample_data``), so both XVR panels can be tried without data of one's own.

Only the registration with Sample Data and the button's action live here (Slicer-only, thin); the files are
made and loaded by ``XVRCoreLib.sample_data``.
"""

import os
import pathlib

__all__ = ["SAMPLE_CT_FILE", "loadSample", "registerSampleData", "sampleCtPath"]

SAMPLE_CT_FILE = "XVRPelvisCT.nii.gz"
_CATEGORY = "XVR"


def sampleCtPath() -> pathlib.Path:
    """The shipped CT (``XVRTraining/Resources/SampleData``)."""
    return pathlib.Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / SAMPLE_CT_FILE


def registerSampleData() -> None:
    """Add the sample to Sample Data (called on ``startupCompleted``): a local file, nothing to download."""
    import SampleData
    from XVRCoreLib.sample_data import SAMPLE_CT_NAME

    path = sampleCtPath()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=_CATEGORY, sampleName=SAMPLE_CT_NAME, uris=path.as_uri(), fileNames=SAMPLE_CT_FILE,
        nodeNames=SAMPLE_CT_NAME, thumbnailFileName=os.path.join(path.parent.parent, "Icons", "XVRTraining.png"),
        loadFileTypes="VolumeFile", customDownloader=loadSample)


def loadSample(source=None):
    """The button's action: the CT into the scene, the simulated X-ray written (once) into the temporary
    directory and named to the user (XVR Registration imports it; the panels share no code but XVRCoreLib's).
    The CT node keeps the X-ray's path in ``XVR.SampleXray``."""
    import slicer
    from slicer.i18n import tr as _
    from XVRCoreLib.job_files import temporary_base
    from XVRCoreLib.sample_data import load_sample_ct, write_sample_xray

    with slicer.util.tryWithErrorDisplay(_("Could not load the XVR sample data."), waitCursor=True):
        ct = load_sample_ct(slicer.mrmlScene, sampleCtPath())
        xray = write_sample_xray(sampleCtPath(), temporary_base() / "XVR" / "SampleData")
        ct.SetAttribute("XVR.SampleXray", str(xray))
        slicer.util.infoDisplay(_("Loaded the XVR pelvis CT. Its simulated X-ray is {path}: import it in XVR "
                                  "Registration (Import X-ray), or train a network on the CT in XVR Training.").format(
                                      path=xray))
        return [ct]
