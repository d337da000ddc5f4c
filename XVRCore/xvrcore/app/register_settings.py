"""The registration settings of one ``xvrcore register`` run: its ``--settings`` file, then its options.

Explicit options override the file (:func:`xvrcore.registration.settings_file.tuned_settings` says how
each one applies); ``--show-settings`` prints the result in the file's own form and needs no inputs.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..registration.settings import RegistrationSettings
from ..registration.settings_file import read_settings_file, settings_text, tuned_settings

__all__ = ["effective_settings", "show_settings"]

# tuned_settings' keywords → the command line's flags, for its messages.
_FLAGS = {"iterations": "--n-itrs", "lr_rotation": "--lr-rot", "lr_translation": "--lr-xyz"}


def effective_settings(args: argparse.Namespace) -> RegistrationSettings:
    """The defaults, else ``--settings``; then ``--time-budget``, ``--no-retry`` and the tuning options."""
    settings = read_settings_file(args.settings) if args.settings else RegistrationSettings()
    if args.time_budget is not None:
        settings = replace(settings, time_budget_s=args.time_budget)
    if args.no_retry:
        settings = replace(settings, retry_searches=())
    try:
        return tuned_settings(settings, scales=args.scales, iterations=args.n_itrs, lr_rotation=args.lr_rot,
                              lr_translation=args.lr_xyz, patience=args.patience, threshold=args.threshold,
                              max_plateaus=args.max_n_plateaus, metric=args.metric)
    except ValueError as exc:
        message = str(exc)
        for keyword, flag in _FLAGS.items():
            if message.startswith(f"{keyword}:"):
                message = flag + message[len(keyword):]
        raise ValueError(message) from None


def show_settings(args: argparse.Namespace) -> int:
    """Print the effective settings (TOML that ``--settings`` reads back); exit code 0."""
    print(settings_text(effective_settings(args)), end="")
    return 0
