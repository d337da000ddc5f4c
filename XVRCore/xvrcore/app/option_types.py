"""Argparse types that check a number's range, so nonsense stops at the command line.

``Bounded(int, low=32)`` reads an integer and refuses one below 32 with a message argparse prints as
``xvrcore train: error: argument --image-size: must be an integer ≥ 32, got 7`` (exit code 2).
Floats must also be finite. The options' tables (:mod:`xvrcore.app.commands`) and the other
sub-commands (:mod:`xvrcore.app.cli`) use these instead of bare ``int``/``float``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

__all__ = [
    "Bounded",
    "angle",
    "finite_float",
    "fraction",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "positive_seconds",
    "width_height",
]


@dataclass(frozen=True)
class Bounded:
    """A number of ``kind`` (``int`` or ``float``) in ``[low, high]``; ``open_low``: strictly above ``low``."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    unit: str = ""

    @property
    def __name__(self) -> str:  # argparse names the type in some of its messages
        return self.kind.__name__

    def describe(self) -> str:
        """``an integer ≥ 32``, ``a number > 0``, ``a number in [0, 1]``: what the option accepts."""
        what = "an integer" if self.kind is int else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None and not self.open_low:
            return f"{what} in [{_number(self.low)}, {_number(self.high)}]{unit}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '≥'} {_number(self.low)}{unit}")
        if self.high is not None:
            parts.append(f"≤ {_number(self.high)}{unit}")
        return " ".join([what, " and ".join(parts)]).strip() if parts else what

    def __call__(self, text: str) -> int | float:
        value = self._parse(text)
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        if below or (self.high is not None and value > self.high):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def _parse(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()} (finite), got {text}")
        return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


positive_int = Bounded(int, low=1)
non_negative_int = Bounded(int, low=0)
positive_float = Bounded(float, low=0, open_low=True)
finite_float = Bounded(float)
fraction = Bounded(float, low=0, high=1)
positive_seconds = Bounded(float, low=0, open_low=True, unit="seconds")


def angle(limit: float) -> Bounded:
    """Degrees in ``[−limit, limit]``."""
    return Bounded(float, low=-limit, high=limit, unit="degrees")


def width_height(values: list[int] | None, flag: str) -> tuple[int, int] | None:
    """An image size given as one number (a square) or WIDTH HEIGHT (``nargs="+"``); None when not given."""
    if values is None:
        return None
    if len(values) > 2:
        raise ValueError(f"{flag} takes one number (a square image) or WIDTH HEIGHT, got {len(values)} numbers")
    return values[0], values[-1]
