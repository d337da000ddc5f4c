"""Register many X-ray/DSA DICOMs to one CT/MRA and write every result to a folder.

The data path of one input goes down the layers once: read the DICOM with its geometry
(:mod:`xvrcore.xray`), find a start pose (:mod:`xvrcore.registration.start`: the header, a pose JSON,
landmarks or a trained network), refine it by intensity-based registration on the exposed pixels
(:mod:`xvrcore.registration.optimizer`, rendering with :mod:`xvrcore.drr`), and write the result files
(:mod:`xvrcore.registration.outputs`: the result JSON, the Slicer transform, the QA pictures).

The JSON is written last, so its presence marks a finished input: a re-run skips inputs whose
JSON exists and reads back as a valid result, and a crash or a cancel loses only the input in
progress. One input's failure (a DICOM without geometry, a pose JSON for another image size, …)
is reported and the others go on. So is an input that cannot be registered or a result that is no
registration (:mod:`xvrcore.registration.checks`: no contrast, a start or result that misses the
volume or puts the source inside it, a similarity at chance level): failed, nothing written. The
volume (and the structure volumes for the outlines) is prepared once per run.

Progress goes to a callback (the command line's progress bar) and, when asked, to JSON-line
events (:func:`xvrcore.io.events.emit`): ``run_start``, ``input_start``, ``progress``, ``input_done``,
``input_skipped``, ``input_failed``, ``cancelled``, ``run_done``, and ``warning`` (a choice made for the
user: a series picked, a label map resampled, a stale lock taken over). The input events carry ``input``
(the file name), ``stem`` (its output name, :func:`~xvrcore.registration.inputs.name_inputs`) and
``sop_instance_uid``. ``should_stop`` (e.g. a :class:`~xvrcore.io.events.CancelToken`) is polled
between inputs, between the structures of a label map, before every search chunk and after every
registration iteration.

The output folder is locked for the run (:func:`~xvrcore.registration.outputs.open_output_folder`:
also the check that it is writable, before anything is loaded); a full disk stops the batch, keeping
what is finished (exit code 3).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import is_disk_full
from ..io.events import emit
from ..volume import LabelGridWarning
from ..volume.dicom_series import SeriesChoiceWarning
from ..volume.modality import ModalityWarning
from ..xray import read_xray
from .animation import write_watch_outputs
from .batch import InputOutcome, PipelineSettings, RunSummary
from .checks import result_failure
from .dsa import register_dsa
from .inputs import BatchInput, collect_inputs, input_stem
from .optimizer import register
from .outputs import (
    discard_unfinished,
    input_identity,
    is_finished,
    open_output_folder,
    output_paths,
    plan_outputs,
    result_record,
    write_outputs,
)
from .start import STARTS, find_start, start_method
from .target import RegistrationTarget, prepare_target

__all__ = ["INIT_METHODS", "collect_inputs", "input_stem", "register_inputs"]

INIT_METHODS = tuple(STARTS)  # the start methods, in the order the command line lists them
_EVENT_INTERVAL_S = 0.25  # at most this often a "progress" event / callback within an input


class _Reporter:
    """Sends events to the callback and, when asked, as JSON lines; throttles per-iteration progress."""

    def __init__(self, callback, emit_events: bool, total: int) -> None:
        self.callback, self.emit_events, self.total = callback, emit_events, total
        self._last, self._attempt = 0.0, None

    def __call__(self, event: str, **fields: Any) -> None:
        if event == "progress":
            now = time.monotonic()
            retry_started = fields.get("attempt") != self._attempt  # always shown: the panel says it retries
            if now - self._last < _EVENT_INTERVAL_S and not retry_started:
                return
            self._last, self._attempt = now, fields.get("attempt")
        if self.emit_events:
            emit(event, **fields)
        if self.callback is not None:
            self.callback({"event": event, **fields})

    def iterations(self, index: int, name: str):
        """A registration progress callback for input ``index``; the fraction never goes back on a retry."""
        shown = [0.0]

        def progress(p: dict) -> None:
            fraction = (p["stage"] + p["iteration"] / max(1, p["iterations"])) / max(1, p["stages"])
            shown[0] = max(shown[0], fraction)
            self("progress", index=index, total=self.total, input=name, fraction=(index + shown[0]) / self.total,
                 attempt=p.get("attempt", 1), stage=p["stage"], iteration=p["iteration"], similarity=p["similarity"])

        return progress


def _about(item: BatchInput) -> dict[str, Any]:
    """The fields that say which input an event is about."""
    return {"input": item.path.name, "stem": item.name, "sop_instance_uid": item.sop_instance_uid}


def _register_one(item: BatchInput, index: int, settings: PipelineSettings, target: RegistrationTarget,
                  report: _Reporter, should_stop) -> InputOutcome | None:
    """Register one X-ray and write its results; None if cancelled (the best pose so far is not a result)."""
    t0 = time.perf_counter()
    path, stem = item.path, item.name
    paths = output_paths(settings.output, stem)
    xray = read_xray(path, frame=settings.frame, mask_frame=settings.mask_frame, overrides=settings.overrides)
    t_read = time.perf_counter()
    start = find_start(xray, settings, target, stem)
    t_init = time.perf_counter()
    device = target.drr.device
    center = torch.as_tensor(settings.isocenter, dtype=torch.float64) if settings.isocenter is not None else None
    register_with = register_dsa if target.vessel_only else register  # a vessel-only DRR: a DSA's similarity
    result = register_with(target.drr, torch.as_tensor(xray.pixels), xray.intrinsics, start.camera_to_world.to(device),
                           mask=torch.as_tensor(xray.mask), center=center, settings=settings.settings,
                           progress=report.iterations(index, path.name), should_stop=should_stop)
    t_reg = time.perf_counter()
    if should_stop is not None and should_stop():
        return None
    failure = result_failure(target.drr, xray.intrinsics, torch.as_tensor(xray.mask), result)
    if failure is not None:  # no registration: said, and nothing written that a re-run would take as finished
        return InputOutcome(path.name, "failed", message=f"{path.name}: the registration failed: {failure}; "
                            "no result written", similarity=result.similarity, name=stem)
    pose = result.camera_to_world.detach().cpu().to(torch.float64)
    record = result_record(xray, target, start, result, settings.settings, paths, str(device), item=item, run=settings)
    record["timings_s"] = {"read": round(t_read - t0, 3), "initialize": round(t_init - t_read, 3),
                           "register": round(t_reg - t_init, 3)}
    if settings.save_trajectory or settings.animate:  # before the JSON, which marks the input finished
        watched = write_watch_outputs(settings, stem, xray, target.drr, result, should_stop)
        if watched is None:
            return None
        record["outputs"].update({key: p.name for key, p in watched.items()})
    write_outputs(paths, xray, target, pose, result, record, t0)
    return InputOutcome(path.name, "done", str(paths["json"]), similarity=result.similarity,
                        seconds=time.perf_counter() - t0, name=stem)


def _failure_message(exc: BaseException, name: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if name in text else f"{name}: {text}"


def _disk_full_message(exc: BaseException, name: str) -> str:
    where = getattr(exc, "filename", None)  # io.atomic names the file, not its temporary
    written = f" while writing {Path(str(where)).name}" if where else ""
    return f"{name}: the disk is full{written}; stopped the batch (finished results are kept); free space and run again"


def _outcome(item: BatchInput, index: int, settings: PipelineSettings, target, report, should_stop) -> InputOutcome | None:
    """:func:`_register_one`, with a failure turned into a failed outcome (the other inputs go on)."""
    name = item.path.name
    try:
        return _register_one(item, index, settings, target, report, should_stop)
    except (ValueError, OSError) as exc:  # bad DICOM, pose or landmarks file: the input's fault
        if is_disk_full(exc):  # not the input's fault, and the next one would fail alike
            return InputOutcome(name, "failed", message=_disk_full_message(exc, name), disk_full=True, name=item.name)
        return InputOutcome(name, "failed", message=_failure_message(exc, name), bad_input=True, name=item.name)
    except Exception as exc:  # noqa: BLE001 - an unforeseen fault fails this input, not the batch
        return InputOutcome(name, "failed", message=_failure_message(exc, name) + f" ({type(exc).__name__})",
                            name=item.name)


def _check_start_files(settings: PipelineSettings) -> None:
    start_method(settings.init)
    for what, given, flag in (("pose", settings.init_pose, "--init-pose"),
                              ("landmarks", settings.landmarks, "--landmarks")):
        if settings.init == what and (given is None or not Path(given).exists()):
            raise ValueError(f"{given or 'no file given'}: the {what} file for the start pose was not found ({flag})")


def _split_finished(items: list[BatchInput], settings: PipelineSettings, report: _Reporter):
    """Outcomes of the inputs already registered (skipped), and the ``(index, item)`` of the others, whose
    leftovers of an interrupted run are removed."""
    skipped, todo = [], []
    for index, item in enumerate(items):
        paths = output_paths(settings.output, item.name)
        if not settings.overwrite and is_finished(paths, input_identity(item, settings)):
            skipped.append(InputOutcome(item.path.name, "skipped", str(paths["json"]), name=item.name))
            report("input_skipped", index=index, total=len(items), **_about(item), json=str(paths["json"]))
        else:
            discard_unfinished(paths)
            todo.append((index, item))
    return skipped, todo


def _run(todo, settings: PipelineSettings, target, report: _Reporter, should_stop) -> tuple[list[InputOutcome], bool]:
    """Register the inputs in turn; returns their outcomes and whether the run was cancelled."""
    outcomes: list[InputOutcome] = []
    for index, item in todo:
        if should_stop is not None and should_stop():
            return outcomes, True
        report("input_start", index=index, total=report.total, **_about(item))
        t_start = time.perf_counter()
        outcome = _outcome(item, index, settings, target, report, should_stop)
        if outcome is None:
            outcomes.append(InputOutcome(item.path.name, "cancelled", name=item.name))
            return outcomes, True
        outcome.seconds = time.perf_counter() - t_start
        outcomes.append(outcome)
        if outcome.status == "done":
            report("input_done", index=index, total=report.total, **_about(item), json=outcome.json_path,
                   similarity=outcome.similarity, seconds=round(outcome.seconds, 3))
        else:
            report("input_failed", index=index, total=report.total, **_about(item), error=outcome.message)
            if outcome.disk_full:  # stop: keep what is finished, lose no more work
                return outcomes, True
    return outcomes, False


_SAID_WARNINGS = (SeriesChoiceWarning, LabelGridWarning, ModalityWarning)  # choices made for the user: said and recorded


def _prepare(settings: PipelineSettings, report: _Reporter, should_stop=None) -> RegistrationTarget:
    """:func:`prepare_target`, with the choices it made for the user reported and kept for the result JSONs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = prepare_target(settings, start_method(settings.init).prepare, should_stop)
    for w in caught:
        if issubclass(w.category, _SAID_WARNINGS):
            target.warnings.append(str(w.message))
            report("warning", message=str(w.message))
        else:  # not ours to say: shown as before
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return target


def register_inputs(
    inputs: Sequence[str | Path],
    settings: PipelineSettings,
    *,
    progress: Callable[[dict], None] | None = None,
    emit_events: bool = False,
    should_stop: Callable[[], bool] | None = None,
    prepared: RegistrationTarget | None = None,
) -> RunSummary:
    """Register every input (files or folders of DICOMs); see the module docstring.

    ``progress`` receives the same event dictionaries as the JSON lines (``{"event": ..., ...}``);
    ``prepared`` reuses a target already built by :func:`~xvrcore.registration.target.prepare_target`.
    """
    t0 = time.perf_counter()
    _check_start_files(settings)
    files = collect_inputs(inputs)
    report = _Reporter(progress, emit_events, len(files))
    with open_output_folder(settings.output, lambda note: report("warning", message=note)):
        items = plan_outputs(files, settings)
        report("run_start", total=len(files), output=str(settings.output))
        outcomes, todo = _split_finished(items, settings, report)
        if todo and prepared is None:
            prepared = _prepare(settings, report, should_stop)
        done, stopped = _run(todo, settings, prepared, report, should_stop)
    outcomes += done
    if stopped:
        finished = {o.name for o in outcomes}
        outcomes += [InputOutcome(i.path.name, "cancelled", name=i.name) for _, i in todo if i.name not in finished]
    summary = RunSummary(outcomes, stopped and not any(o.disk_full for o in done), time.perf_counter() - t0)
    if summary.cancelled:
        report("cancelled", done=summary.count("done"), total=len(files))
    report("run_done", done=summary.count("done"), skipped=summary.count("skipped"), failed=summary.count("failed"),
           cancelled=summary.cancelled, disk_full=summary.disk_full, seconds=round(summary.seconds, 3))
    return summary
