"""2D/3D registration: refining a C-arm pose by differentiable rendering, its start poses, and batches of X-rays."""

from .landmarks import read_landmarks, solve_pnp, write_landmarks
from .optimizer import RegistrationResult, RegistrationSettings, SearchSettings, Stage, register
from .pipeline import PipelineSettings, register_inputs

__all__ = [
    "PipelineSettings",
    "RegistrationResult",
    "RegistrationSettings",
    "SearchSettings",
    "Stage",
    "read_landmarks",
    "register",
    "register_inputs",
    "solve_pnp",
    "write_landmarks",
]
