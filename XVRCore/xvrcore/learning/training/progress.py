"""What a run tells the outside: events for :mod:`xvrcore.io.events` (rank 0 only), a terminal bar and messages.

Events are dicts with ``event`` = "progress", "validation", "checkpoint", "finished" or "cancelled"
plus fields. Progress events come at most twice a second (and after the first and the last iteration).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .schedule import Budget
from .state import RunState

__all__ = ["Reporter", "bar_fields"]

_EVERY_S = 0.5  # least seconds between two progress events


class Reporter:
    """Sends a run's events to ``progress`` and draws its bar (``progress_bar``), on the main rank."""

    def __init__(self, progress: Callable[[dict], None] | None, main: bool, progress_bar: bool, total: int | None) -> None:
        self.progress, self.main, self.progress_bar, self.total = progress, main, progress_bar, total
        self.bar = None
        self.images = 0  # images trained on by all ranks since this process started
        self.last_event = 0.0

    def report(self, event: str, **fields) -> None:
        if self.progress is not None and self.main:
            self.progress({"event": event, **fields})

    def say(self, text: str) -> None:
        if self.progress_bar:
            print(text, flush=True)

    def start(self, iteration: int) -> None:
        """Open the bar at ``iteration``; the first progress event waits for the throttle from now."""
        self.last_event = time.perf_counter()
        if self.progress_bar and self.main:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=iteration, desc="training", unit="it", dynamic_ncols=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def after_step(self, stats: dict, images: int, state: RunState, budget: Budget, now: float) -> None:
        """Count ``images``, move the bar, and send a progress event when one is due."""
        self.images += images
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(bar_fields(stats))
        if now - self.last_event >= _EVERY_S or state.iteration == 1 or budget.done(state.iteration, state.elapsed()):
            self._progress(stats, state, budget, now)
            self.last_event = now

    def _progress(self, stats: dict, state: RunState, budget: Budget, now: float) -> None:
        elapsed = state.elapsed()
        speed = self.images / max(now - state.started, 1e-9)
        fraction = min(1.0, budget.fraction(state.iteration, elapsed))
        eta = (elapsed - state.elapsed_before) / fraction * (1 - fraction) if fraction > 0 else None
        self.report("progress", done=state.iteration, total=self.total, fraction=round(fraction, 5),
                    elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 1),
                    images_per_s=round(speed, 2), **stats)


def bar_fields(stats: dict) -> dict[str, str]:
    """The terminal bar's numbers; no NCC while on the pose term alone (it is not computed then)."""
    fields = {"loss": f"{stats['loss']:.3f}", "dgeo": f"{stats['dgeo_mm']:.0f}"}
    if math.isfinite(stats["ncc"]):
        fields["ncc"] = f"{stats['ncc']:.3f}"
    return fields
