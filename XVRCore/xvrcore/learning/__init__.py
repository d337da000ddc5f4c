"""Patient-specific pose networks: the network, pose sampling, augmentation, training, model files and inference.

The main API: :func:`train` a model (:class:`TrainSettings`), :func:`pull` a pretrained one,
:func:`load_model` a model folder and :func:`predict_pose` an X-ray's start pose in a CT's
:class:`PatientFrame`.
"""

from .hub import pull
from .inference import PatientFrame, predict_pose
from .model_files import load_model
from .training import TrainSettings, train

__all__ = ["PatientFrame", "TrainSettings", "load_model", "predict_pose", "pull", "train"]
