"""DICOMs in, result files out, for the joint registration of several views and the tracking of a run.

:func:`register_views` (``xvrcore register --joint``): the X-rays are read with their geometry and
start poses as a batch's are (:mod:`xvrcore.registration.pipeline`: the same volume, starts, frame
choice and overrides), registered together (:func:`~xvrcore.registration.multiview.register_jointly`),
and each view's result is written in the shared format exactly as a single registration's
(:mod:`xvrcore.registration.outputs`: ``<name>.json``, ``.tfm`` and the QA pictures), its JSON with a
``joint`` entry (mode, why, the view's weight and why it was down-weighted). Then the patient
transform: ``joint_patient.json`` (the mode and why, every view's part, ``correction``: each view's
camera is ``correction @ start``, and ``patient_transform`` = ``correction⁻¹``, the CT's motion into
the C-arm frame of the starts) and ``joint_patient.tfm`` (that motion as a Slicer transform node:
put the CT under it). The views depend on each other, so a re-run registers them all again.
A view whose joint result is still no registration (at chance level, e.g. pure noise) fails and
gets no files; the others are written.

:func:`track_run` (``xvrcore register --track``): every frame of one multi-frame X-ray, each with its
own header start (per-frame positioner angles), tracked by
:func:`~xvrcore.registration.tracking.track_frames`; the per-frame poses and qualities go to
``<name>_track.jsonl`` (:func:`~xvrcore.registration.tracking.write_track`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..geometry.rotations import invert_rigid
from ..io.atomic import atomic_write_text
from ..io.itk_transform import write_pose_transform
from ..io.pose_json import dumps_compact
from ..xray import read_xray
from .batch import InputOutcome, PipelineSettings, RunSummary
from .checks import result_failure
from .inputs import collect_inputs
from .multiview import JointResult, JointSettings, JointView, register_jointly, view_results
from .outputs import (
    input_identity,
    open_output_folder,
    output_paths,
    plan_outputs,
    result_record,
    write_outputs,
)
from .start import find_start, start_method
from .target import RegistrationTarget, prepare_target
from .tracking import SequenceFrame, TrackSettings, track_frames, track_summary, write_track

__all__ = ["JOINT_FILES", "register_views", "track_run"]

JOINT_FILES = {"json": "joint_patient.json", "transform": "joint_patient.tfm"}


def _target(settings: PipelineSettings, prepared, should_stop, what: str) -> RegistrationTarget:
    target = prepared or prepare_target(settings, start_method(settings.init).prepare, should_stop)
    if target.vessel_only:
        raise ValueError(f"{Path(settings.volume).name}: {what} of DSA to a vessel-only volume is not supported; "
                         "register each DSA on its own")
    return target


def _center(settings: PipelineSettings) -> torch.Tensor | None:
    return None if settings.isocenter is None else torch.as_tensor(settings.isocenter, dtype=torch.float64)


def _read_views(items, settings: PipelineSettings, target: RegistrationTarget):
    """Each input's X-ray, start and joint view."""
    xrays = [read_xray(i.path, frame=settings.frame, mask_frame=settings.mask_frame, overrides=settings.overrides)
             for i in items]
    starts = [find_start(x, settings, target, i.name) for x, i in zip(xrays, items, strict=True)]
    views = [JointView(torch.as_tensor(x.pixels), x.intrinsics, s.camera_to_world, torch.as_tensor(x.mask),
                       from_header=s.info["method"] == "dicom", name=i.name)
             for x, s, i in zip(xrays, starts, items, strict=True)]
    return xrays, starts, views


def _view_entry(result: JointResult, index: int) -> dict[str, Any]:
    single = None if result.singles is None or result.singles[index] is None else result.singles[index].similarity
    return {"mode": result.mode, "mode_reason": result.mode_reason, "weight": result.weights[index],
            "down_weighted": result.reasons[index], "similarity_single": single,
            "similarity_joint": result.similarity[index], "patient_file": JOINT_FILES["json"]}


def _write_view(i, item, xray, start, target, run_result, joint: JointResult, settings, t0) -> InputOutcome:
    """One view's result files (as a single registration's, plus ``joint``); a failed outcome if it is no result."""
    failure = result_failure(target.drr, xray.intrinsics, torch.as_tensor(xray.mask), run_result)
    if failure is not None:
        return InputOutcome(item.path.name, "failed", message=f"{item.path.name}: the joint registration failed for "
                            f"this view: {failure}; no result written", similarity=run_result.similarity,
                            name=item.name)
    paths = output_paths(settings.output, item.name)
    record = result_record(xray, target, start, run_result, settings.settings, paths, str(target.drr.device),
                           item=item, run=settings)
    record["joint"] = _view_entry(joint, i)
    record["timings_s"] = {"register": round(joint.seconds, 3)}
    write_outputs(paths, xray, target, run_result.camera_to_world.cpu(), run_result, record, t0)
    return InputOutcome(item.path.name, "done", str(paths["json"]), similarity=run_result.similarity,
                        seconds=time.perf_counter() - t0, name=item.name)


def _patient_record(joint: JointResult, items, outcomes, settings: PipelineSettings) -> dict[str, Any]:
    views = [{"input": input_identity(item, settings), **_view_entry(joint, i),
              "result": Path(o.json_path).name if o.json_path else None, "status": o.status}
             for i, (item, o) in enumerate(zip(items, outcomes, strict=True))]
    for view in views:
        for key in ("mode", "mode_reason", "patient_file"):
            view.pop(key)
    return {"software": {"name": "xvrcore", "version": __version__}, "mode": joint.mode,
            "mode_reason": joint.mode_reason, "world_frame": "RAS", "units": "mm",
            "patient_transform": invert_rigid(joint.correction).tolist(), "correction": joint.correction.tolist(),
            "rotation_deg": joint.rotation_deg, "translation_mm": joint.translation_mm,
            "objective": joint.objective, "seconds": round(joint.seconds, 3), "views": views,
            "outputs": {"transform": JOINT_FILES["transform"]}}


def register_views(inputs: Sequence[str | Path], settings: PipelineSettings, joint: JointSettings | None = None, *,
                   should_stop: Callable[[], bool] | None = None, notify: Callable[[str], None] | None = None,
                   prepared: RegistrationTarget | None = None) -> tuple[RunSummary, JointResult]:
    """Register the X-rays together and write every view's results and the patient transform (module docstring)."""
    t0 = time.perf_counter()
    files = collect_inputs(inputs)
    if len(files) < 2:
        raise ValueError(f"{files[0].name if files else 'no X-ray'}: --joint registers two or more views of one "
                         "patient together; give at least two X-rays")
    with open_output_folder(settings.output, notify or (lambda note: None)):
        items = plan_outputs(files, settings)
        target = _target(settings, prepared, should_stop, "joint registration")
        xrays, starts, views = _read_views(items, settings, target)
        result = register_jointly(target.drr, views, center=_center(settings), settings=joint or JointSettings(),
                                  should_stop=should_stop)
        if should_stop is not None and should_stop():
            return RunSummary([InputOutcome(i.path.name, "cancelled", name=i.name) for i in items], True,
                              time.perf_counter() - t0), result
        outcomes = [_write_view(i, *parts, target, r, result, settings, t0)
                    for i, (parts, r) in enumerate(zip(zip(items, xrays, starts, strict=True),
                                                       view_results(result, views), strict=True))]
        out = Path(settings.output)
        write_pose_transform(out / JOINT_FILES["transform"], invert_rigid(result.correction))
        atomic_write_text(out / JOINT_FILES["json"], dumps_compact(_patient_record(result, items, outcomes, settings)))
    return RunSummary(outcomes, False, time.perf_counter() - t0), result


def _frames(path: Path, settings: PipelineSettings, target: RegistrationTarget, stem: str):
    """Every frame of the run (but the DSA mask frame) as a sequence frame with its own header start."""
    count = read_xray(path, frame=0, overrides=settings.overrides).number_of_frames
    mask = None if settings.mask_frame is None else settings.mask_frame % count
    frames, intrinsics = [], []
    for n in range(count):
        if n == mask:
            continue
        xray = read_xray(path, frame=n, mask_frame=settings.mask_frame, overrides=settings.overrides)
        start = find_start(xray, settings, target, stem)
        frames.append(SequenceFrame(n, torch.as_tensor(xray.pixels), xray.intrinsics, start.camera_to_world,
                                    torch.as_tensor(xray.mask)))
        intrinsics.append(xray.intrinsics)
    return frames, intrinsics


def track_run(inputs: Sequence[str | Path], settings: PipelineSettings, track: TrackSettings | None = None, *,
              progress=None, should_stop: Callable[[], bool] | None = None,
              notify: Callable[[str], None] | None = None,
              prepared: RegistrationTarget | None = None) -> tuple[Path, dict[str, Any]]:
    """Track every frame of one multi-frame X-ray; returns the JSON-lines file and the run's summary."""
    files = collect_inputs(inputs)
    if len(files) != 1 or settings.frame is not None:
        raise ValueError(f"{', '.join(Path(p).name for p in inputs)}: --track follows every frame of ONE multi-frame X-ray "
                         f"({len(files)} given{', and --frame was given' if settings.frame is not None else ''})")
    with open_output_folder(settings.output, notify or (lambda note: None)):
        item = plan_outputs(files, settings)[0]
        target = _target(settings, prepared, should_stop, "tracking")
        frames, intrinsics = _frames(item.path, settings, target, item.name)
        if len(frames) < 2:
            raise ValueError(f"{item.path.name}: has one frame; --track needs a run of frames (register it without)")
        results = track_frames(target.drr, frames, settings=track or TrackSettings(), center=_center(settings), progress=progress,
                               should_stop=should_stop)
        path = write_track(Path(settings.output) / f"{item.name}_track.jsonl", results,
                           [intrinsics[[f.index for f in frames].index(r.index)] for r in results],
                           input=input_identity(item, settings))
    return path, track_summary(results)
