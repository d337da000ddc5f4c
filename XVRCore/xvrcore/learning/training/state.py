"""Where a run stands: its iteration, its clock and its validations (what a checkpoint restores)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["RunState"]


@dataclass
class RunState:
    """The mutable progress of a run; everything else about it is fixed at its start."""

    iteration: int = 0
    elapsed_before: float = 0.0  # seconds trained before this process started (a resumed run)
    history: list[dict] = field(default_factory=list)  # validations, oldest first
    started: float | None = None  # time.perf_counter() when this process began iterating
    clock: float = 0.0  # elapsed seconds as all ranks agree on them (set every iteration)

    @property
    def validation(self) -> dict | None:
        """The latest validation."""
        return self.history[-1] if self.history else None

    def elapsed(self) -> float:
        """Seconds trained, this process's and those before a resume."""
        return self.elapsed_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def record(self, validation: dict) -> None:
        self.history.append(validation)

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint's state (:func:`~xvrcore.learning.run_state.load_state`)."""
        self.iteration = int(saved["iteration"])
        self.elapsed_before = float(saved["elapsed_s"])
        self.history = list(saved.get("history", []))
