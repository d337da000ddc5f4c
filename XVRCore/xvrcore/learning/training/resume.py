"""A run's checkpoints: saving them, and resuming from the latest one — or refusing to mix runs.

A checkpoint holds the weights, the optimizer state, the iteration, the clock, the validations and
torch's global random state (:mod:`xvrcore.learning.run_state`); every other random number is keyed
on the iteration, so a run resumed from any checkpoint ends with the weights of an uninterrupted
one. An output folder that already holds a run is resumed only when asked (``resume``), and only
with the same CTs, camera and the settings that decide the batches and the network. A run starts by
removing what interrupted runs left (unfinished checkpoint folders, half-written model files), and
refuses a damaged checkpoint in one line that names its file.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...io.atomic import remove_stale_temporaries
from ..model_files import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    CheckpointError,
    check_camera,
    check_tensors_fit,
    check_volume,
    load_model,
    read_metadata,
    save_model,
)
from ..run_state import (
    checkpoint_name,
    clean_stale_temporaries,
    latest_checkpoint,
    load_state,
    save_state,
    write_checkpoint,
)
from .progress import Reporter
from .setup import RunSetup
from .state import RunState

__all__ = ["RESUME_KEYS", "Checkpointer"]

# Settings a resumed run must share with the checkpoint: they decide its batches and its network.
RESUME_KEYS = ("seed", "batch_size", "ranges", "preset", "parameterization", "architecture", "width", "labels",
               "modality")


class Checkpointer:
    """Writes the run's checkpoints (on the main rank) and restores the latest one."""

    def __init__(self, setup: RunSetup, reporter: Reporter) -> None:
        self.setup, self.reporter = setup, reporter
        self.latest: Path | None = None  # newest checkpoint folder of the run
        self._saved_validations = 0  # validations the latest checkpoint holds
        self._last_save = time.perf_counter()

    def resume_or_refuse(self, optimizer: torch.optim.Optimizer, state: RunState) -> None:
        """Load the latest checkpoint into the model, ``optimizer`` and ``state``, if resuming one."""
        output, resume, main = self.setup.output, self.setup.settings.resume, self.setup.ranks.main
        if main:  # under the run's lock (the Trainer's): what interrupted runs left is stale
            stale = clean_stale_temporaries(output)
            if stale:
                self.reporter.say(f"removed {len(stale)} unfinished checkpoint(s) that an interrupted run left in {output}")
            remove_stale_temporaries(output)  # half-written model files of the run folder
        found = self.latest = latest_checkpoint(output)
        if found is None:
            if (output / MODEL_JSON).exists() and not resume:
                raise CheckpointError(f"{output} already holds a model; choose a new folder for this run")
            if resume and main:
                self.reporter.say(f"nothing to resume in {output}; starting a new run")
            return
        if not resume:
            raise CheckpointError(f"{output} already holds a training run ({found.name}); resume it with --resume or choose a new folder")
        saved = self._resumable(found)
        loaded = load_model(found, self.setup.device)
        network = self.setup.network.model
        check_tensors_fit(network.state_dict(), loaded.model.state_dict(), str(found / MODEL_WEIGHTS))
        network.load_state_dict(loaded.model.state_dict())
        try:
            optimizer.load_state_dict(saved["optimizer"])
            if saved.get("torch_rng") is not None:
                torch.set_rng_state(saved["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{found}: its optimizer or random state does not fit this run ({str(exc)[:200]})") from None
        state.restore(saved)
        self._saved_validations = len(state.history)
        if main:
            self.reporter.say(f"resuming {found.name} at iteration {state.iteration}")

    def _resumable(self, found: Path) -> dict:
        """The saved state of ``found``, once its CTs, camera and settings are those of this run."""
        meta, _ = read_metadata(found)
        targets, saved_volumes = self.setup.targets, meta.get("volumes", [])
        for target, record in zip(targets, saved_volumes, strict=False):
            check_volume({"volume": record}, target.fingerprint, what=f"the checkpoint in {found}")
        if len(saved_volumes) != len(targets):
            raise CheckpointError(f"the checkpoint in {found} was trained on {len(saved_volumes)} volumes, not {len(targets)}")
        check_camera(meta, self.setup.network.camera, what=f"the checkpoint in {found}")
        saved = load_state(found)
        _check_saved_state(saved, found)
        now = self.setup.settings.to_dict()
        for key in RESUME_KEYS:
            if saved["config"].get(key) != now.get(key):
                raise CheckpointError(f"cannot resume {found}: {key} was {saved['config'].get(key)!r}, now {now.get(key)!r}")
        return saved

    def due(self, iteration: int, now: float) -> bool:
        """Whether this rank wants a checkpoint after ``iteration`` (every N iterations or M minutes)."""
        s = self.setup.settings
        every = iteration % s.checkpoint_every == 0 if s.checkpoint_every else False
        return every or (now - self._last_save) / 60.0 >= s.checkpoint_minutes

    def restart_clock(self) -> None:
        """A checkpoint was taken (on every rank's behalf): the minutes count from now."""
        self._last_save = time.perf_counter()

    def is_current(self, state: RunState) -> bool:
        """Whether the latest checkpoint already holds ``state`` (its iteration and its validations)."""
        return (self.latest is not None and self.latest.name == checkpoint_name(state.iteration)
                and self._saved_validations == len(state.history))

    def save(self, optimizer: torch.optim.Optimizer, state: RunState) -> Path:
        """Write a checkpoint folder and the run folder's model files (which stay a usable model)."""
        model, settings = self.setup.network.model, self.setup.settings
        meta = self.setup.metadata(state)
        run = {
            "optimizer": optimizer.state_dict(),
            "iteration": state.iteration,
            "elapsed_s": state.elapsed(),
            "history": state.history,
            "config": settings.without_paths(),
            "torch_rng": torch.get_rng_state(),
        }

        def write(folder: Path) -> None:
            save_model(folder, model, meta)
            save_state(folder, run)

        self.latest = write_checkpoint(self.setup.output, state.iteration, write, keep=settings.keep_checkpoints)
        self._saved_validations = len(state.history)
        save_model(self.setup.output, model, meta)
        self.reporter.report("checkpoint", iteration=state.iteration, path=str(self.latest))
        return self.latest


def _check_saved_state(saved: dict, found: Path) -> None:
    """Refuse a training state whose entries are not what :meth:`Checkpointer.save` writes."""
    kinds = {"optimizer": dict, "iteration": int, "elapsed_s": (int, float), "history": list, "config": dict}
    for key, kind in kinds.items():
        if not isinstance(saved.get(key), kind) or isinstance(saved.get(key), bool):
            raise CheckpointError(f"{found}: damaged training state ({key} is {type(saved.get(key)).__name__})")
    if saved["iteration"] < 0 or not all(isinstance(v, dict) for v in saved["history"]):
        raise CheckpointError(f"{found}: damaged training state (iteration {saved['iteration']}, history)")
