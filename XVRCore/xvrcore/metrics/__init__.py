"""Measures of a registration: image similarities, pose errors and the quality of a result."""

from .pose_errors import dgeo, mpe, mrpe, mrpe_detector_mm, mtre, success_rate, survival_auc, survival_curve
from .quality import DEFAULT_MODEL, QualityModel, assess
from .similarity import (
    RegistrationObjective,
    gradient_ncc,
    image_gradients,
    multiscale_ncc,
    ncc,
    patch_ncc,
    registration_similarity,
)

__all__ = [
    "DEFAULT_MODEL",
    "QualityModel",
    "RegistrationObjective",
    "assess",
    "dgeo",
    "gradient_ncc",
    "image_gradients",
    "mpe",
    "mrpe",
    "mrpe_detector_mm",
    "mtre",
    "multiscale_ncc",
    "ncc",
    "patch_ncc",
    "registration_similarity",
    "success_rate",
    "survival_auc",
    "survival_curve",
]
