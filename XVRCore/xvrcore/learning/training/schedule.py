"""The learning-rate schedule and the budget (iterations and/or minutes) it runs over.

Both are functions of the iteration and of the elapsed time only, so a resumed run follows the
schedule of an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import TrainSettings

__all__ = ["Budget", "lr_factor"]


def lr_factor(iteration: int, fraction: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then half a cosine over the budget's ``fraction``."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


@dataclass(frozen=True)
class Budget:
    """How long a run trains: ``iterations`` and/or ``seconds``, whichever ends first."""

    iterations: int | None
    seconds: float | None

    @classmethod
    def from_settings(cls, settings: TrainSettings) -> Budget:
        if settings.iterations is None and settings.minutes is None:
            raise ValueError("give a training budget: iterations and/or minutes")
        if settings.iterations is not None and settings.iterations < 1 or settings.minutes is not None and settings.minutes <= 0:
            raise ValueError("the training budget must be positive")
        return cls(settings.iterations, None if settings.minutes is None else 60.0 * settings.minutes)

    def fraction(self, iteration: int, elapsed: float) -> float:
        """Share of the budget used after ``iteration`` iterations and ``elapsed`` seconds (may exceed 1)."""
        parts = []
        if self.iterations:
            parts.append(iteration / self.iterations)
        if self.seconds:
            parts.append(elapsed / self.seconds)
        return max(parts) if parts else 0.0

    def done(self, iteration: int, elapsed: float) -> bool:
        return (self.iterations is not None and iteration >= self.iterations) or (
            self.seconds is not None and elapsed >= self.seconds
        )
