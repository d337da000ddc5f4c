"""Validation on fixed held-out poses: mTRE over points inside the CT, dGeo, and NCC of the DRRs at the predictions.

The held-out poses and their DRRs come from the generator keyed on ``(seed, VALIDATION_KEY)``, the
same in every run with that seed, so validations of a resumed run compare with those before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...geometry.rotations import invert_rigid
from ...metrics.pose_errors import dgeo, mtre
from ...metrics.similarity import ncc
from ..network import minmax, prepare_input, to_world
from ..sampling import keyed_generator, sample_poses
from .data import VALIDATION_KEY, draw_multiplier
from .model import predict
from .setup import RunSetup

__all__ = ["Validator"]


@dataclass
class _HeldOut:
    target: int  # index into the run's targets
    poses: torch.Tensor  # (N, 4, 4) float64 camera_to_world
    images: torch.Tensor  # (N, 1, H, W) DRRs at ``poses``
    multiplier: float


class Validator:
    """Renders the held-out set once, then measures a model on it."""

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        s = setup.settings
        gen = keyed_generator(s.seed, VALIDATION_KEY)
        per_target = max(1, math.ceil(s.validation_size / len(setup.targets)))
        self.held_out = []
        for index, target in enumerate(setup.targets):
            poses, _ = sample_poses(setup.ranges, per_target, gen, target.center)
            multiplier = draw_multiplier(gen, s.bone_multiplier)
            poses = poses.to(setup.device)
            with torch.no_grad():
                images = target.render(poses, setup.network.intrinsics, setup.level, multiplier)
            self.held_out.append(_HeldOut(index, poses, images, multiplier))

    @torch.no_grad()
    def run(self, model: torch.nn.Module, iteration: int) -> dict:
        """Mean and median mTRE and dGeo (mm) and mean NCC of ``model`` (in eval mode meanwhile)."""
        parts, size = [], self.setup.settings.batch_size
        model.eval()
        for item in self.held_out:
            parts += [self._errors(model, item, slice(start, start + size)) for start in range(0, item.poses.shape[0], size)]
        model.train()
        m, g, n = (torch.cat(x).double().cpu() for x in zip(*parts, strict=True))
        return {
            "iteration": iteration,
            "mtre_mm": float(m.mean()), "mtre_median_mm": float(m.median()),
            "dgeo_mm": float(g.mean()), "dgeo_median_mm": float(g.median()),
            "ncc": float(n.mean()), "n": int(m.numel()),
        }

    def _errors(self, model: torch.nn.Module, item: _HeldOut, rows: slice) -> tuple[torch.Tensor, ...]:
        """mTRE, dGeo and NCC ``(b,)`` of the held-out images ``rows``."""
        setup = self.setup
        target = setup.targets[item.target]
        poses, images = item.poses[rows], item.images[rows]
        centred = predict(model, prepare_input(minmax(images), setup.input_spec), setup.device)
        correction = setup.network.correction_on(setup.device)
        predicted = to_world(centred.float(), target.center.to(setup.device), correction).double()
        w2c_true, w2c_pred = invert_rigid(poses), invert_rigid(predicted)
        errors = mtre(w2c_true, w2c_pred, target.points.to(setup.device))
        geo = dgeo(w2c_true, w2c_pred, setup.network.camera["sdd"], target.center)[2]
        drr = target.render(predicted, setup.network.intrinsics, setup.level, item.multiplier)
        return errors, geo, ncc(images, drr)
