"""The XVR Registration module's parts, one job each (the module file keeps Slicer's four classes thin):

* :mod:`.imports` — X-ray DICOMs read with their geometry onto their detector plane (``XrayImporter``);
* :mod:`.poses` — the C-arm pose of an X-ray: set, followed, nudged (``PoseEditor``);
* :mod:`.overlays` — DRR, outlines and checkerboard at the current pose (``Overlays``);
* :mod:`.display` — what the slice and 3D views show (``Display``);
* :mod:`.layout` — the review layout shown when a result arrives (``ReviewLayout``);
* :mod:`.launch` — the inputs and command lines of the background registration (``RegistrationLauncher``);
* :mod:`.job` — the background ``xvrcore register`` processes (``RegistrationJob``);
* :mod:`.results` — results applied to the scene, the quality table, the export (``Results``);
* :mod:`.nodes` — what an X-ray node says about itself;
* :mod:`.panel` — the two Qt parts of the panel (``XraySection``, ``ReviewSection``).

Importing this package stays cheap and needs neither torch nor xvrcore nor XVRCoreLib (they are imported
inside the functions that use them), nor Qt: Slicer imports it with the module file.
"""

from .display import Display
from .imports import XrayImporter
from .job import RegistrationJob
from .launch import RegistrationLauncher, registrationCommand
from .layout import REVIEW_LAYOUT_ID, ReviewLayout
from .overlays import Overlays
from .panel import ReviewSection, XraySection
from .poses import PoseEditor
from .results import Results

__all__ = [
    "REVIEW_LAYOUT_ID",
    "Display",
    "Overlays",
    "PoseEditor",
    "RegistrationJob",
    "RegistrationLauncher",
    "Results",
    "ReviewLayout",
    "ReviewSection",
    "XrayImporter",
    "XraySection",
    "registrationCommand",
]
