"""The XVR Registration module's parts, one job each (the module file keeps Slicer's four classes thin):

* :mod:`.imports` — X-ray DICOMs read with their geometry onto their detector plane (``XrayImporter``);
* :mod:`.poses` — the C-arm pose of an X-ray: set, followed, nudged (``PoseEditor``);
* :mod:`.qa_poses` — the QA moves in clinical terms (LAO/RAO, CRA/CAU, roll, pan, magnification), pure;
* :mod:`.pose_review` — those moves on an X-ray, its undo stack and its registered pose (``PoseReview``);
* :mod:`.overlays` — DRR, outlines and checkerboard at the current pose (``Overlays``);
* :mod:`.display` — what the slice and 3D views show (``Display``);
* :mod:`.layout` — the review layout shown when a result arrives (``ReviewLayout``);
* :mod:`.launch` — the inputs and command lines of the background registration (``RegistrationLauncher``);
* :mod:`.job` — the background ``xvrcore register`` processes (``RegistrationJob``);
* :mod:`.results` — results applied to the scene, the quality table, the export (``Results``);
* :mod:`.batch_rows` — the batch table's rows, kept in the scene: sort, next to check, failures, checked;
* :mod:`.time_estimate` — the time a registration will take, said before it starts;
* :mod:`.nodes` — what an X-ray node says about itself;
* :mod:`.panel` — the two Qt parts of the panel (``XraySection``, ``ReviewSection``);
* :mod:`.qa_controls`, :mod:`.batch_table` — the QA controls with their shortcuts (``QAControls``) and the
  batch table (``BatchTable``), Qt parts too.

Importing this package stays cheap and needs neither torch nor xvrcore nor XVRCoreLib (they are imported
inside the functions that use them), nor Qt: Slicer imports it with the module file.
"""

from .batch_table import BatchTable
from .display import Display
from .imports import XrayImporter
from .job import RegistrationJob
from .launch import RegistrationLauncher, registrationCommand
from .layout import REVIEW_LAYOUT_ID, ReviewLayout
from .overlays import Overlays
from .panel import ReviewSection, XraySection
from .pose_review import PoseReview
from .poses import PoseEditor
from .qa_controls import QAControls
from .results import Results

__all__ = [
    "REVIEW_LAYOUT_ID",
    "BatchTable",
    "Display",
    "Overlays",
    "PoseEditor",
    "PoseReview",
    "QAControls",
    "RegistrationJob",
    "RegistrationLauncher",
    "Results",
    "ReviewLayout",
    "ReviewSection",
    "XrayImporter",
    "XraySection",
    "registrationCommand",
]
