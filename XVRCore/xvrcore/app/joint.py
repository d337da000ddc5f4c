"""``xvrcore register --joint`` and ``--track``: several views of one patient together, or every frame of a run.

The rest of ``register``'s options (volume, starts, overrides, tuning) mean what they mean for a
batch; the tuning options set the single-view schedule (``--joint``: each view's own registration
before the joint one; ``--track``: the key frame and any lost frame). What is written:
:mod:`xvrcore.registration.multiview_run`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path

from ..io.events import EXIT_CANCELLED, CancelToken, emit
from ..registration.batch import PipelineSettings
from ..registration.multiview import JointSettings
from ..registration.multiview_run import JOINT_FILES, register_views, track_run
from ..registration.tracking import FrameResult, TrackSettings

__all__ = ["run_together"]


def _check(args: argparse.Namespace) -> None:
    flag = "--joint" if args.joint else "--track"
    for given, name in ((args.save_trajectory, "--save-trajectory"), (args.animate, "--animate")):
        if given:
            raise ValueError(f"{name} is not available with {flag}")
    if args.joint_mode is not None and not args.joint:
        raise ValueError("--joint-mode is the mode of --joint; it has no meaning without it")


def _warn(text: str) -> None:
    print(f"xvrcore register: warning: {text}", file=sys.stderr)


def _joint(args: argparse.Namespace, options: PipelineSettings, token: CancelToken) -> int:
    settings = JointSettings(single=options.settings, mode=args.joint_mode or "auto")
    summary, result = register_views(args.xrays, options, settings, should_stop=token, notify=_warn)
    if summary.cancelled:
        print("xvrcore register: cancelled; nothing of the joint registration written", file=sys.stderr)
        return EXIT_CANCELLED
    if not args.quiet:
        print(f"joint registration, {result.mode} mode: {result.mode_reason}")
        for outcome, weight, reason in zip(summary.outcomes, result.weights, result.reasons, strict=True):
            said = f", down-weighted to {weight:g}: {reason}" if reason else ""
            print(f"  {outcome.input}: similarity {outcome.similarity:.3f}{said}")
        print(f"the CT moved by {result.rotation_deg:.2f}° and {result.translation_mm:.1f} mm "
              f"({JOINT_FILES['json']}, {JOINT_FILES['transform']})")
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            print(f"xvrcore register: error: {outcome.message}", file=sys.stderr)
    print(f"{summary.text()} → {Path(args.output).resolve()}")
    return summary.exit_code


def _frame_line(args: argparse.Namespace):
    def said(frame: FrameResult) -> None:
        if args.progress_json:
            emit("frame_done", frame=frame.index, status=frame.status, similarity=frame.similarity, flag=frame.flag)
        elif not args.quiet:
            flagged = f" — flagged: {frame.flag}" if frame.flag else ""
            print(f"frame {frame.index}: {frame.status}, similarity {frame.similarity:.3f}{flagged}")
    return said


def _track(args: argparse.Namespace, options: PipelineSettings, token: CancelToken) -> int:
    settings = TrackSettings(full=options.settings)
    path, summary = track_run(args.xrays, options, settings, progress=_frame_line(args), should_stop=token,
                              notify=_warn)
    rate = summary["frames_per_second"]
    print(f"tracked {summary['frames']} frames: {summary['tracked']} from the neighbour, {summary['re-registered']} "
          f"re-registered, {summary['lost']} lost" + (f", {rate:.2f} frames/s after the key frame" if rate else "")
          + f" → {path.resolve()}")
    if token():
        return EXIT_CANCELLED
    if summary["lost"]:
        lost = [str(i) for i in summary["flagged"]]
        print(f"xvrcore register: error: {path.name}: frames {', '.join(lost)} flagged; "
              f"{summary['lost']} of them still fail after a full registration", file=sys.stderr)
        return 1
    return 0


def run_together(args: argparse.Namespace, options: PipelineSettings) -> int:
    """``register --joint`` or ``--track`` with the batch's options (``options``); the exit code."""
    _check(args)
    options = replace(options, overwrite=True)  # the views (frames) depend on each other: all are redone
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    token = CancelToken(args.cancel_file, handle_signals=True)
    try:
        return (_joint if args.joint else _track)(args, options, token)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
