"""Register many X-ray/DSA DICOMs to one CT/MRA and write every result to a folder.

The data path of one input goes down the layers once: read the DICOM with its geometry
(:mod:`xvrcore.xray`), find a start pose (:mod:`xvrcore.registration.start`: the header, a pose JSON,
landmarks or a trained network), refine it by intensity-based registration on the exposed pixels
(:mod:`xvrcore.registration.optimizer`, rendering with :mod:`xvrcore.drr`), and write the result files
(:mod:`xvrcore.registration.outputs`: the result JSON, the Slicer transform, the QA pictures).

The JSON is written last, so its presence marks a finished input: a re-run skips inputs whose
JSON exists and reads back as a valid result, and a crash or a cancel loses only the input in
progress. One input's failure (a DICOM without geometry, a pose JSON for another image size, …)
is reported and the others go on. The volume (and the structure volumes for the outlines) is
prepared once per run.

Progress goes to a callback (the command line's progress bar) and, when asked, to JSON-line
events (:func:`xvrcore.io.events.emit`): ``run_start``, ``input_start``, ``progress``, ``input_done``,
``input_skipped``, ``input_failed``, ``cancelled``, ``run_done``. ``should_stop`` (e.g. a
:class:`~xvrcore.io.events.CancelToken`) is polled between inputs and every registration iteration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io.events import emit
from ..xray import read_xray
from .batch import InputOutcome, PipelineSettings, RunSummary
from .inputs import collect_inputs, input_stem
from .optimizer import register
from .outputs import is_finished, output_paths, result_record, write_outputs
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


def _register_one(path: Path, index: int, settings: PipelineSettings, target: RegistrationTarget, report: _Reporter,
                  should_stop) -> InputOutcome | None:
    """Register one X-ray and write its results; None if cancelled (the best pose so far is not a result)."""
    t0 = time.perf_counter()
    stem = input_stem(path)
    paths = output_paths(settings.output, stem)
    xray = read_xray(path, frame=settings.frame, mask_frame=settings.mask_frame, overrides=settings.overrides)
    t_read = time.perf_counter()
    start = find_start(xray, settings, target, stem)
    t_init = time.perf_counter()
    device = target.drr.device
    center = torch.as_tensor(settings.isocenter, dtype=torch.float64) if settings.isocenter is not None else None
    result = register(target.drr, torch.as_tensor(xray.pixels), xray.intrinsics, start.camera_to_world.to(device),
                      mask=torch.as_tensor(xray.mask), center=center, settings=settings.settings,
                      progress=report.iterations(index, path.name), should_stop=should_stop)
    t_reg = time.perf_counter()
    if should_stop is not None and should_stop():
        return None
    pose = result.camera_to_world.detach().cpu().to(torch.float64)
    record = result_record(xray, target, start, result, settings.settings, paths, str(device))
    record["timings_s"] = {"read": round(t_read - t0, 3), "initialize": round(t_init - t_read, 3),
                           "register": round(t_reg - t_init, 3)}
    write_outputs(paths, xray, target, pose, result, record, t0)
    return InputOutcome(path.name, "done", str(paths["json"]), similarity=result.similarity,
                        seconds=time.perf_counter() - t0)


def _failure_message(exc: BaseException, name: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if name in text else f"{name}: {text}"


def _outcome(path: Path, index: int, settings: PipelineSettings, target, report, should_stop) -> InputOutcome | None:
    """:func:`_register_one`, with a failure turned into a failed outcome (the other inputs go on)."""
    try:
        return _register_one(path, index, settings, target, report, should_stop)
    except (ValueError, OSError) as exc:  # bad DICOM, pose or landmarks file: the input's fault
        return InputOutcome(path.name, "failed", message=_failure_message(exc, path.name), bad_input=True)
    except Exception as exc:
        return InputOutcome(path.name, "failed", message=_failure_message(exc, path.name) + f" ({type(exc).__name__})")


def _check_start_files(settings: PipelineSettings) -> None:
    start_method(settings.init)
    for what, given, flag in (("pose", settings.init_pose, "--init-pose"),
                              ("landmarks", settings.landmarks, "--landmarks")):
        if settings.init == what and (given is None or not Path(given).exists()):
            raise ValueError(f"{given or 'no file given'}: the {what} file for the start pose was not found ({flag})")


def _split_finished(files: list[Path], settings: PipelineSettings, report: _Reporter):
    """Outcomes of the inputs already registered (skipped), and the ``(index, path)`` of the others."""
    skipped, todo = [], []
    for index, path in enumerate(files):
        paths = output_paths(settings.output, input_stem(path))
        if not settings.overwrite and is_finished(paths):
            skipped.append(InputOutcome(path.name, "skipped", str(paths["json"])))
            report("input_skipped", index=index, total=len(files), input=path.name, json=str(paths["json"]))
        else:
            todo.append((index, path))
    return skipped, todo


def _run(todo, settings: PipelineSettings, target, report: _Reporter, should_stop) -> tuple[list[InputOutcome], bool]:
    """Register the inputs in turn; returns their outcomes and whether the run was cancelled."""
    outcomes: list[InputOutcome] = []
    for index, path in todo:
        if should_stop is not None and should_stop():
            return outcomes, True
        report("input_start", index=index, total=report.total, input=path.name)
        t_start = time.perf_counter()
        outcome = _outcome(path, index, settings, target, report, should_stop)
        if outcome is None:
            outcomes.append(InputOutcome(path.name, "cancelled"))
            return outcomes, True
        outcome.seconds = time.perf_counter() - t_start
        outcomes.append(outcome)
        if outcome.status == "done":
            report("input_done", index=index, total=report.total, input=path.name, json=outcome.json_path,
                   similarity=outcome.similarity, seconds=round(outcome.seconds, 3))
        else:
            report("input_failed", index=index, total=report.total, input=path.name, error=outcome.message)
    return outcomes, False


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
    Path(settings.output).mkdir(parents=True, exist_ok=True)
    report("run_start", total=len(files), output=str(settings.output))
    outcomes, todo = _split_finished(files, settings, report)
    if todo and prepared is None:
        prepared = prepare_target(settings, start_method(settings.init).prepare)
    done, cancelled = _run(todo, settings, prepared, report, should_stop)
    outcomes += done
    if cancelled:
        finished = {o.input for o in outcomes}
        outcomes += [InputOutcome(p.name, "cancelled") for _, p in todo if p.name not in finished]
    summary = RunSummary(outcomes, cancelled, time.perf_counter() - t0)
    if cancelled:
        report("cancelled", done=summary.count("done"), total=len(files))
    report("run_done", done=summary.count("done"), skipped=summary.count("skipped"),
           failed=summary.count("failed"), cancelled=cancelled, seconds=round(summary.seconds, 3))
    return summary
