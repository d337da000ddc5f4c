"""The training loop: one step of the paper's loss, and the loop that composes the run's collaborators.

A step draws its batch (:mod:`.data`), predicts poses, and minimises Eq. 24,
``(1 − mNCC) + λ · dGeo`` with λ = ``weight_geo`` — or the pose term alone in the first
``pose_loss_fraction`` of the budget — with Adam, gradient-norm clipping and the schedule of
:mod:`.schedule`. Between steps the loop validates (:mod:`.validation`), reports (:mod:`.progress`)
and saves (:mod:`.resume`); ranks agree on stopping and on the clock (:mod:`.distributed`). The
main rank holds the output folder's lock (:func:`xvrcore.io.lock.lock_folder`) for the whole run:
a second run into the same folder is refused while this one lives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ...geometry.rotations import invert_rigid
from ...io.lock import lock_folder
from ...metrics.pose_errors import dgeo
from ...metrics.similarity import multiscale_ncc
from ..network import to_world
from .data import Batch
from .model import predict
from .progress import Reporter
from .resume import Checkpointer
from .schedule import lr_factor
from .settings import TrainResult, TrainSettings
from .setup import prepare_run
from .state import RunState
from .validation import Validator

__all__ = ["Trainer", "train"]


class Trainer:
    """One run: the setup, the optimizer and the run's state, stepped by a short loop."""

    def __init__(self, settings: TrainSettings, progress: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.setup = setup = prepare_run(settings)
        self.should_stop = should_stop
        self.reporter = Reporter(progress, setup.ranks.main, settings.progress_bar, settings.iterations)
        # One run writes into an output folder: a second is refused while this one lives (the main rank writes).
        self.lock = lock_folder(setup.output, notify=self.reporter.say) if setup.ranks.main else None
        try:
            self.optimizer = torch.optim.Adam(setup.network.model.parameters(), lr=settings.lr)
            self.state = RunState()
            self.checkpointer = Checkpointer(setup, self.reporter)
            self.checkpointer.resume_or_refuse(self.optimizer, self.state)
            self.network = setup.ranks.wrap(setup.network.model)  # what the step trains (DDP on several ranks)
            self.batches = setup.batches()
            self.validator = Validator(setup) if setup.ranks.main else None
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self) -> dict:
        """Train on the batch of the current iteration; its loss, NCC, dGeo and learning rate."""
        setup, state = self.setup, self.state
        batch = self.batches.draw(state.iteration, setup.ranks.rank)
        centred = predict(self.network, batch.inputs, setup.device)
        predicted = to_world(centred.float(), batch.target.center.to(setup.device), setup.network.correction_on(setup.device))
        pose_only = setup.budget.fraction(state.iteration, state.clock) < setup.settings.pose_loss_fraction
        loss_each, similarity, geo = self.loss(batch, predicted, pose_only)
        loss = (loss_each * batch.weight).sum() / batch.weight.sum().clamp_min(1.0)
        finite = self._update(loss)
        state.iteration += 1
        kept = batch.weight.bool()
        return {
            "loss": float(loss.detach()),
            "ncc": float(similarity.detach()[kept].mean()) if kept.any() else math.nan,  # NaN in the pose-only phase
            "dgeo_mm": float(geo.detach()[kept].mean()) if kept.any() else math.nan,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped": not finite,
        }

    def loss(self, batch: Batch, predicted: torch.Tensor, pose_only: bool = False) -> tuple[torch.Tensor, ...]:
        """Per-image Eq. 24 and its parts ``(B,)`` (``pose_only``: the pose term alone, similarity NaN)."""
        setup = self.setup
        _, _, geo = dgeo(invert_rigid(batch.poses), invert_rigid(predicted.double()), setup.network.camera["sdd"],
                         batch.target.center)
        weight_geo = setup.settings.weight_geo
        if pose_only:
            return weight_geo * geo, torch.full_like(geo, math.nan), geo
        rendered = batch.target.render(predicted, setup.network.intrinsics, setup.level, batch.multiplier)
        similarity = multiscale_ncc(batch.images, rendered)
        return 1.0 - similarity + weight_geo * geo, similarity, geo

    def _update(self, loss: torch.Tensor) -> bool:
        """One Adam step on ``loss``, skipped (False) when a gradient is not finite."""
        s, model = self.setup.settings, self.setup.network.model
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        if finite:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            fraction = self.setup.budget.fraction(self.state.iteration, self.state.clock)
            for group in self.optimizer.param_groups:
                group["lr"] = s.lr * lr_factor(self.state.iteration, fraction, s.warmup_iterations)
            self.optimizer.step()
        return finite

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Iterate until the budget is spent or a stop is asked for, then validate, save and report."""
        self.state.started = time.perf_counter()
        self.checkpointer.restart_clock()
        self.reporter.start(self.state.iteration)
        try:
            status = self._iterate()
            hashes = self._finish(status)
        finally:
            self.reporter.close()
            self._unlock()
        return self._result(status, hashes)

    def _iterate(self) -> str:
        """The iterations: "finished" when the budget is spent, "cancelled" when a stop was asked for."""
        setup, state, s = self.setup, self.state, self.setup.settings
        ranks = setup.ranks
        if ranks.main and s.validate_every and state.iteration == 0:
            self._validate()  # the untrained baseline
        while True:
            stop, state.clock = ranks.agree_on_clock(bool(self.should_stop and self.should_stop()), state.elapsed())
            if setup.budget.done(state.iteration, state.clock):
                return "finished"
            if stop:
                return "cancelled"
            stats = self.step()
            now = time.perf_counter()
            self.reporter.after_step(stats, s.batch_size * ranks.world, state, setup.budget, now)
            if ranks.main and s.validate_every and state.iteration % s.validate_every == 0:
                self._validate()
            if ranks.agree(self.checkpointer.due(state.iteration, now)):
                if ranks.main:
                    self.checkpointer.save(self.optimizer, state)
                self.checkpointer.restart_clock()

    def _validate(self) -> None:
        validation = self.validator.run(self.setup.network.model, self.state.iteration)
        self.state.record(validation)
        self.reporter.report("validation", **validation)

    def _finish(self, status: str) -> list[str] | None:
        """Validate and save what the last checkpoint lacks; the weights' hashes of all ranks."""
        state = self.state
        if self.setup.ranks.main:
            if status == "finished" and (not state.history or state.history[-1]["iteration"] != state.iteration):
                self._validate()
            if not self.checkpointer.is_current(state):
                self.checkpointer.save(self.optimizer, state)
        return self.setup.ranks.weight_hashes(self.setup.network.model)

    def _result(self, status: str, hashes: list[str] | None) -> TrainResult:
        state, checkpoint = self.state, self.checkpointer.latest
        result = TrainResult(status, state.iteration, self.setup.output, checkpoint, state.elapsed(), state.validation,
                             state.history)
        fields = {"iteration": state.iteration, "model": str(self.setup.output), "checkpoint": str(checkpoint),
                  "elapsed_s": round(result.elapsed_s, 3), "validation": state.validation}
        if hashes is not None:
            fields["rank_weights_sha256"] = hashes
        self.reporter.report(status, **fields)
        if self.setup.ranks.owns_group:
            self.network = self.setup.network.model  # drop the DistributedDataParallel wrapper first
            self.setup.ranks.leave()
        return result


def train(
    config: TrainSettings,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train (or resume, or finetune) a pose-regression model; see :class:`~.settings.TrainSettings`.

    ``progress`` receives event dicts (``event`` = "progress", "validation", "checkpoint",
    "finished" or "cancelled", plus fields) — pass ``lambda e: jobs.emit(**e)``-style adapters for
    the JSON-line protocol. ``should_stop`` is polled every iteration; when it returns True the run
    saves a checkpoint and returns with status "cancelled".
    """
    return Trainer(config, progress, should_stop).run()
