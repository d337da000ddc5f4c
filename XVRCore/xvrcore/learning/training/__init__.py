"""Training pose-regression networks on DRRs rendered on the fly (xvr paper, Methods M.3–M.4).

Each iteration samples C-arm poses (:mod:`xvrcore.learning.sampling`), renders DRRs of the CT at the
model's canonical camera with a random bone-attenuation multiplier, augments them
(:mod:`xvrcore.learning.augment`), predicts poses, renders DRRs at the predictions *differentiably* and
minimises the paper's Eq. 24: ``(1 − mNCC) + λ · dGeo`` with λ = 1e-2.

Modes: patient-specific (one CT, from scratch), patient-agnostic pretraining (several CTs, one per
iteration, poses about each CT's centre) and finetuning (``init_from`` a pretrained model, with a
frame correction from the pretraining frame to the new CT: centre alignment or rigid
registration to a template CT; :mod:`xvrcore.volume.frames`).

Reproducibility: every random number of iteration ``i`` on rank ``r`` comes from a generator keyed
on ``(seed, i, r)``, the learning rate is a function of the iteration (or of the elapsed time for
time budgets), and checkpoints hold the weights and the optimizer state. A run stopped at any
checkpoint and resumed therefore ends with exactly the weights of an uninterrupted run.

Engine: CUDA with bfloat16 autocast for the network when available, else CPU; Adam with linear
warm-up and cosine decay; gradient-norm clipping; budgets in iterations and/or minutes; periodic
validation on fixed held-out poses (mTRE over points inside the CT, dGeo, NCC); progress events for
:mod:`xvrcore.io.events`; cancellation that saves; multi-GPU data parallel under ``torchrun``.

Modules, one job each: :mod:`.settings` (what is asked), :mod:`.data` (CTs and batches),
:mod:`.model` (the network built or finetuned), :mod:`.schedule` (learning rate, budget),
:mod:`.distributed` (ranks and device), :mod:`.setup` (the fixed parts of a run), :mod:`.state`
(where it stands), :mod:`.resume` (checkpoints), :mod:`.validation`, :mod:`.progress` (events, bar)
and :mod:`.loop` (the step and the loop that composes them).
"""

from .data import TrainingTarget, coverage, prepare_training_target
from .loop import train
from .schedule import lr_factor
from .settings import PROFILES, TrainResult, TrainSettings, profile_settings

__all__ = [
    "PROFILES",
    "TrainResult",
    "TrainSettings",
    "TrainingTarget",
    "coverage",
    "lr_factor",
    "prepare_training_target",
    "profile_settings",
    "train",
]
