"""The XVR Training module's parts (the module file keeps Slicer's four classes thin):

* :mod:`.launch` — the inputs, the profile and the command line of the background training (``TrainingLauncher``);
* :mod:`.job` — the running ``xvrcore train`` process and its events (``TrainingJob``);
* :mod:`.plot` — the loss and validation tables and their chart;
* :mod:`.device_advice` and :mod:`.panel_extras` — the GPU/CPU advice, the 3D pose preview, "keep temporary
  files";
* :mod:`.sample_data` — the "XVR pelvis CT" entry of Sample Data.

Importing this package stays cheap and needs neither torch nor xvrcore nor XVRCoreLib (they are imported
inside the functions that use them), nor Qt: Slicer imports it with the module file.
"""

from .job import TrainingJob
from .launch import CUSTOM_RANGE_NAMES, PROFILES, TrainingLauncher, resolveProfile, trainingCommand
from .plot import progressNodes

__all__ = ["CUSTOM_RANGE_NAMES", "PROFILES", "TrainingJob", "TrainingLauncher", "progressNodes", "resolveProfile",
           "trainingCommand"]
