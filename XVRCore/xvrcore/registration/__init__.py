"""2D/3D registration: refining a C-arm pose by differentiable rendering, its start poses, and batches of X-rays.

``register`` (one X-ray, :mod:`.optimizer`) runs a grid search (:mod:`.search`) and coarse-to-fine
stages (:mod:`.resolution`, :mod:`.pose_update`) on a :class:`~.problem.Problem`; ``register_inputs``
(:mod:`.pipeline`) registers a batch of DICOMs from their start poses (:mod:`.start`: header, pose JSON,
landmarks by perspective-n-point (:mod:`.pnp`), or a trained network) and writes each result (:mod:`.outputs`).
"""

from .batch import InputOutcome, PipelineSettings, RunSummary
from .inputs import collect_inputs, input_stem
from .landmarks import Landmarks, read_landmarks, write_landmarks
from .optimizer import register
from .outputs import output_paths
from .pipeline import INIT_METHODS, register_inputs
from .pnp import LandmarkError, LandmarkPose, reprojection_errors, solve_pnp
from .pose_update import PoseUpdate, updated_pose
from .resolution import downsample_exposure_mask, downsample_xray
from .settings import DEFAULT_STAGES, RegistrationResult, RegistrationSettings, SearchSettings, Stage
from .start import STARTS, StartPose
from .target import RegistrationTarget, prepare_target

__all__ = [
    "DEFAULT_STAGES",
    "INIT_METHODS",
    "STARTS",
    "InputOutcome",
    "LandmarkError",
    "LandmarkPose",
    "Landmarks",
    "PipelineSettings",
    "PoseUpdate",
    "RegistrationResult",
    "RegistrationSettings",
    "RegistrationTarget",
    "RunSummary",
    "SearchSettings",
    "Stage",
    "StartPose",
    "collect_inputs",
    "downsample_exposure_mask",
    "downsample_xray",
    "input_stem",
    "output_paths",
    "prepare_target",
    "read_landmarks",
    "register",
    "register_inputs",
    "reprojection_errors",
    "solve_pnp",
    "updated_pose",
    "write_landmarks",
]
