"""Register many X-ray/DSA DICOMs to one CT/MRA and write every result to a folder.

For each input: read the DICOM (with the user's geometry overrides and frame choice), find a
start pose — from the header's positioner angles about the volume centre or a given isocentre
(``"dicom"``), from a pose JSON (``"pose"``) or from 2D–3D landmarks (``"landmarks"``) — refine it
by intensity-based registration on the exposed pixels, and write, atomically:

* ``DIR/<stem>.json``: the pose in the shared result format (:mod:`xvrcore.io.pose_json`) plus the
  software version, timings, initial and final similarity, the start used, a summary of the
  X-ray geometry, warnings and a ``quality`` entry (:func:`xvrcore.metrics.quality.assess`);
* ``DIR/<stem>.tfm``: the pose for 3D Slicer (:mod:`xvrcore.io.itk_transform`: TransformToParent =
  camera → world);
* ``DIR/<stem>_overlay.png`` and ``DIR/<stem>_checkerboard.png``: the QA pictures
  (:mod:`xvrcore.io.overlay`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..drr.render import DRRVolume, render
from ..geometry.camera import Intrinsics
from ..geometry.positioner import pose_from_xray
from ..io.events import EXIT_CANCELLED, emit
from ..io.images import save_png
from ..io.itk_transform import write_pose_transform
from ..io.overlay import checkerboard_picture, overlay_picture, read_label_names, structure_masks
from ..io.pose_json import PoseFileError, camera_pose, read_pose_json, write_pose_json
from ..metrics.quality import assess
from ..volume.attenuation import to_attenuation
from ..volume.grid import load_labelmap, load_volume
from ..volume.labels import label_values, masked_attenuation, structure_volumes
from ..xray.reader import GeometryOverrides, XrayImage, read_xray
from .landmarks import read_landmarks, solve_pnp
from .optimizer import RegistrationResult, RegistrationSettings, register

__all__ = [
    "INIT_METHODS",
    "InputOutcome",
    "PipelineSettings",
    "RegistrationTarget",
    "RunSummary",
    "collect_inputs",
    "output_paths",
    "prepare_target",
    "register_inputs",
]

INIT_METHODS = ("dicom", "pose", "landmarks", "model")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_EVENT_INTERVAL_S = 0.25  # at most this often a "progress" event / callback within an input


@dataclass
class PipelineSettings:
    """Everything a run needs besides the input files."""

    volume: str | Path
    output: str | Path
    labels: str | Path | None = None
    structures: Sequence[int] | None = None  # register on these labels only (masked attenuation)
    label_names: str | Path | None = None  # JSON {id: name} or a Slicer colour table
    volume_mode: str = "ct"  # "ct" (HU) or "mra" (see attenuation.to_attenuation)
    init: str = "dicom"
    init_pose: str | Path | None = None  # a pose JSON, or a folder of <stem>.json
    landmarks: str | Path | None = None  # a landmarks JSON, or a folder of <stem>.json
    isocenter: Sequence[float] | None = None  # RAS mm; the volume centre by default
    frame: int | str | None = None
    mask_frame: int | None = None
    overrides: GeometryOverrides = field(default_factory=GeometryOverrides)
    settings: RegistrationSettings = field(default_factory=RegistrationSettings)
    model: str | Path | None = None  # a trained model folder (init "model"), see xvrcore.learning.training
    allow_other_volume: bool = False  # use a patient-specific model on a CT it was not trained on
    device: str = "cpu"
    overwrite: bool = False  # re-register inputs that already have a valid result


@dataclass
class RegistrationTarget:
    """What is built once per run: the DRR volume, the structures to outline and their names."""

    drr: DRRVolume
    center: np.ndarray  # RAS mm, the volume's centre
    outlines: dict[int, DRRVolume]
    names: dict[int, str]
    colors: dict[int, tuple[int, int, int]]
    summary: dict[str, Any]
    model: Any = None  # the loaded network for init "model"
    frame: Any = None  # the CT's centre and fingerprint, for the network's pose


@dataclass
class InputOutcome:
    input: str  # the file name (never a full path in events and results)
    status: str  # "done", "skipped", "failed" or "cancelled"
    json_path: str | None = None
    message: str | None = None
    bad_input: bool = False  # the failure is the input's fault (exit code 2), not ours
    similarity: float | None = None
    seconds: float = 0.0


@dataclass
class RunSummary:
    outcomes: list[InputOutcome]
    cancelled: bool
    seconds: float

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """130 if cancelled, 2 if an input was bad, 1 for other failures, else 0."""
        if self.cancelled:
            return EXIT_CANCELLED
        failed = [o for o in self.outcomes if o.status == "failed"]
        if not failed:
            return 0
        return 2 if all(o.bad_input for o in failed) else 1

    def text(self) -> str:
        line = (f"registered {self.count('done')}, skipped {self.count('skipped')} (already done), "
                f"failed {self.count('failed')} of {len(self.outcomes)} in {self.seconds:.1f} s")
        return line + (" — cancelled; run again to resume" if self.cancelled else "")


# ---- inputs and outputs ------------------------------------------------------------------------------


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The DICOM files named, and those in named folders (not recursive), in order, without repeats."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and _is_dicom(p))
            if not found:
                raise ValueError(f"{path}: the folder holds no DICOM files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    stems: dict[str, Path] = {}
    for path in unique:
        other = stems.setdefault(input_stem(path), path)
        if other != path:
            raise ValueError(f"{other} and {path} would write the same results ({input_stem(path)}.json); "
                             "register them into different output folders")
    return unique


def input_stem(path: str | Path) -> str:
    """The file name without a DICOM suffix (names such as ``1.2.840.10008.1`` keep their dots)."""
    name = Path(path).name
    return name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in _DICOM_SUFFIXES else name


def output_paths(output: str | Path, stem: str) -> dict[str, Path]:
    out = Path(output)
    return {"json": out / f"{stem}.json", "transform": out / f"{stem}.tfm",
            "overlay": out / f"{stem}_overlay.png", "checkerboard": out / f"{stem}_checkerboard.png"}


def _finished(paths: dict[str, Path]) -> bool:
    """A valid result exists: the JSON (written last) reads back and is one of ours."""
    if not paths["json"].is_file():
        return False
    try:
        pose = read_pose_json(paths["json"])
    except PoseFileError:
        return False
    return "registration" in pose.extra and all(paths[k].is_file() for k in ("transform", "overlay", "checkerboard"))


# ---- the volume, once per run --------------------------------------------------------------------------


def prepare_target(options: PipelineSettings) -> RegistrationTarget:
    """Load the CT/MRA (and label map), convert to attenuation and build the DRR volumes."""
    volume = load_volume(options.volume)
    attenuation = to_attenuation(volume, mode=options.volume_mode)
    names, colors = read_label_names(options.label_names) if options.label_names else ({}, {})
    summary: dict[str, Any] = {"file": Path(options.volume).name, "mode": options.volume_mode,
                               "size_ijk": list(volume.shape_ijk), "spacing_mm": volume.spacing.round(4).tolist()}
    outlines: dict[int, DRRVolume] = {}
    if options.structures and not options.labels:
        raise ValueError("--structures needs --labels (the label map the ids refer to)")
    if options.labels:
        labelmap = load_labelmap(options.labels, reference=volume)
        chosen = [int(v) for v in options.structures] if options.structures else label_values(labelmap)
        if options.structures:
            attenuation = masked_attenuation(attenuation, labelmap, chosen)
        outlines = {label: DRRVolume.from_volume(v, device=options.device)
                    for label, v in structure_volumes(labelmap, chosen).items()}
        summary.update(labels_file=Path(options.labels).name, structures=chosen,
                       registered_on="structures" if options.structures else "whole volume")
    drr = DRRVolume.from_volume(attenuation, device=options.device)
    prepared = RegistrationTarget(drr, np.asarray(volume.center, dtype=np.float64), outlines, names, colors, summary)
    if options.init == "model":
        from ..learning.checkpoint import load_model
        from ..learning.inference import PatientFrame

        if options.model is None:
            raise ValueError("init 'model' needs a trained model folder (--model)")
        prepared.model = load_model(options.model, options.device)
        prepared.frame = PatientFrame.from_volume(volume)
        summary["model"] = Path(options.model).name
    return prepared


# ---- one input ------------------------------------------------------------------------------------------


def _per_input_file(path: str | Path, stem: str, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{stem}.json"
        if not candidate.is_file():
            raise ValueError(f"{what} folder {path} has no {stem}.json for this X-ray")
        return candidate
    return path


def _check_pose_matches(pose, intrinsics: Intrinsics, name: str, source: Path, warnings: list[str]) -> None:
    given = (pose.intrinsics.width, pose.intrinsics.height)
    if given != (intrinsics.width, intrinsics.height):
        raise ValueError(
            f"{name}: the pose JSON {source.name} is for a {given[0]}×{given[1]} image but the X-ray is "
            f"{intrinsics.width}×{intrinsics.height}; give a pose registered on this X-ray (or start from the header)"
        )
    if pose.intrinsics.mirrored != intrinsics.mirrored:
        raise ValueError(f"{name}: the pose JSON {source.name} is for a "
                         f"{'mirrored' if pose.intrinsics.mirrored else 'non-mirrored'} image, unlike the X-ray")
    a = np.array([pose.intrinsics.fx, pose.intrinsics.fy, pose.intrinsics.cx, pose.intrinsics.cy])
    b = np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy])
    if np.abs(a - b).max() > 0.01 * abs(intrinsics.fy):
        warnings.append(f"the intrinsics of {source.name} differ from the X-ray header's; the header's are used")


def _initial_pose(xray: XrayImage, options: PipelineSettings, prepared: RegistrationTarget, stem: str):
    """Start pose (camera_to_world, float64), a description of it, and warnings."""
    name = Path(xray.source).name
    intrinsics = xray.intrinsics
    warnings: list[str] = []
    if options.init == "dicom":
        iso = np.asarray(options.isocenter if options.isocenter is not None else prepared.center, dtype=np.float64)
        missing = [n for n in ("primary_angle", "secondary_angle", "sod") if getattr(xray, n) is None]
        if missing:
            raise ValueError(
                f"{name}: the header has no {', '.join(missing)} for a start pose; give --primary-angle, "
                "--secondary-angle and --sod, or start from --init-pose or --landmarks"
            )
        pose = pose_from_xray(xray, torch.as_tensor(iso)).numpy()
        info = {"method": "dicom", "isocenter_ras": iso.tolist(),
                "isocenter_from": "user" if options.isocenter is not None else "volume centre",
                "primary_angle": xray.primary_angle, "secondary_angle": xray.secondary_angle, "sod": xray.sod,
                "patient_position": xray.patient_position}
    elif options.init == "pose":
        if options.init_pose is None:
            raise ValueError("init 'pose' needs a pose JSON (--init-pose)")
        source = _per_input_file(options.init_pose, stem, "pose JSON")
        given = read_pose_json(source)
        _check_pose_matches(given, intrinsics, name, source, warnings)
        pose = given.camera_to_world
        info = {"method": "pose", "file": source.name}
    elif options.init == "landmarks":
        if options.landmarks is None:
            raise ValueError("init 'landmarks' needs a landmarks JSON (--landmarks)")
        source = _per_input_file(options.landmarks, stem, "landmarks")
        marks = read_landmarks(source)
        fit = solve_pnp(marks.points_2d, marks.points_3d, intrinsics)
        pose = fit.camera_to_world
        warnings += fit.warnings
        if fit.rms_px > 5.0:
            warnings.append(f"the landmarks fit with {fit.rms_px:.1f} px RMS; check that each pair is the same point")
        info = {"method": "landmarks", "file": source.name, "points": len(marks.points_2d),
                "rms_px": fit.rms_px, "start": fit.method}
    elif options.init == "model":
        from ..learning.inference import predict_pose

        pose = predict_pose(prepared.model, xray.pixels, xray.mask, intrinsics, prepared.frame, device=options.device,
                            allow_other_volume=options.allow_other_volume).cpu().numpy()
        info = {"method": "model", "model": Path(options.model).name}
    else:
        raise ValueError(f"unknown initialisation {options.init!r}; expected one of {INIT_METHODS}")
    info["camera_to_world"] = np.asarray(pose).tolist()
    return torch.as_tensor(np.asarray(pose), dtype=torch.float64), info, warnings


def _geometry_summary(xray: XrayImage) -> dict[str, Any]:
    d = xray.detector
    return {
        "modality": xray.modality, "rows": d.rows, "columns": d.cols, "frames": xray.number_of_frames,
        "frame": xray.frame_info, "sdd_mm": d.sdd, "sod_mm": xray.sod,
        "pixel_spacing_mm": [d.row_spacing, d.col_spacing], "principal_offset_mm": list(d.principal_offset),
        "primary_angle_deg": xray.primary_angle, "secondary_angle_deg": xray.secondary_angle,
        "patient_position": xray.patient_position, "polarity": xray.polarity,
        "geometry_sources": dict(xray.geometry_sources),
    }


def _similarity_measure(settings: RegistrationSettings) -> str:
    w = settings.stages[-1].similarity_weight
    return f"{w:g} × multiscale NCC + {1 - w:g} × gradient NCC on the exposed pixels, at the finest stage"


def _stage_logs(result: RegistrationResult) -> list[dict[str, Any]]:
    return [{"size": list(s.size), "iterations": s.iterations, "similarity": s.similarity,
             "seconds": round(s.seconds, 3)} for s in result.stages]


def _write_outputs(paths, xray: XrayImage, prepared: RegistrationTarget, pose: torch.Tensor, result, extra, t0) -> None:
    """Transform, pictures, then the JSON (last: its presence marks the input as finished)."""
    t_out = time.perf_counter()
    intrinsics = xray.intrinsics
    write_pose_transform(paths["transform"], pose)
    with torch.no_grad():
        drr = render(prepared.drr, pose.to(prepared.drr.device, prepared.drr.dtype), intrinsics)[0, 0].cpu().numpy()
    silhouettes = structure_masks(prepared.outlines, pose.numpy(), intrinsics)
    passed = extra["quality"]["passed"]
    text = [f"similarity {result.similarity:.3f} (start {result.initial_similarity:.3f})",
            f"quality: {'pass' if passed else 'CHECK'} (P(<1 mm) {extra['quality']['p_submillimetre']:.2f})", f"start: {extra['initialization']['method']}"]
    save_png(paths["overlay"], overlay_picture(xray.pixels, drr, mask=xray.mask, structures=silhouettes,
                                               names=prepared.names, colors=prepared.colors, text=text))
    save_png(paths["checkerboard"], checkerboard_picture(xray.pixels, drr, mask=xray.mask))
    now = time.perf_counter()
    extra["timings_s"].update(outputs=round(now - t_out, 3), total=round(now - t0, 3))
    write_pose_json(paths["json"], camera_pose(intrinsics, pose, **extra))


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


def _register_one(path: Path, index: int, options: PipelineSettings, prepared: RegistrationTarget, report, should_stop):
    t0 = time.perf_counter()
    name = path.name
    stem = input_stem(path)
    paths = output_paths(options.output, stem)
    xray = read_xray(path, frame=options.frame, mask_frame=options.mask_frame, overrides=options.overrides)
    t_read = time.perf_counter()
    initial, info, warnings = _initial_pose(xray, options, prepared, stem)
    t_init = time.perf_counter()
    device = prepared.drr.device
    center = torch.as_tensor(options.isocenter, dtype=torch.float64) if options.isocenter is not None else None

    shown = [0.0]

    def progress(p: dict) -> None:
        fraction = (p["stage"] + p["iteration"] / max(1, p["iterations"])) / max(1, p["stages"])
        shown[0] = max(shown[0], fraction)  # a retry starts the stages again; the bar does not go back
        report("progress", index=index, total=report.total, input=name, fraction=(index + shown[0]) / report.total,
               attempt=p.get("attempt", 1), stage=p["stage"], iteration=p["iteration"], similarity=p["similarity"])

    result = register(prepared.drr, torch.as_tensor(xray.pixels), xray.intrinsics, initial.to(device),
                      mask=torch.as_tensor(xray.mask), center=center, settings=options.settings,
                      progress=progress, should_stop=should_stop)
    t_reg = time.perf_counter()
    if should_stop is not None and should_stop():
        return None  # interrupted: the best pose so far is not a result
    pose = result.camera_to_world.detach().cpu().to(torch.float64)
    extra = {
        "software": {"name": "xvrcore", "version": __version__},
        "input": {"file": name},
        "volume": prepared.summary,
        "initialization": info,
        "similarity": {"initial": result.initial_similarity, "final": result.similarity,
                       "measure": _similarity_measure(options.settings)},
        "quality": assess(result.similarity),
        "registration": {"stages": _stage_logs(result), "attempts": result.attempts, "seconds": round(result.seconds, 3),
                         "device": str(device)},
        "xray_geometry": _geometry_summary(xray),
        "warnings": list(xray.warnings) + warnings,
        "outputs": {k: p.name for k, p in paths.items() if k != "json"},
    }
    extra["timings_s"] = {"read": round(t_read - t0, 3), "initialize": round(t_init - t_read, 3),
                          "register": round(t_reg - t_init, 3)}
    _write_outputs(paths, xray, prepared, pose, result, extra, t0)
    return InputOutcome(name, "done", str(paths["json"]), similarity=result.similarity,
                        seconds=time.perf_counter() - t0)


def _failure_message(exc: BaseException, name: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if name in text else f"{name}: {text}"


def register_inputs(
    inputs: Sequence[str | Path],
    options: PipelineSettings,
    *,
    progress: Callable[[dict], None] | None = None,
    emit_events: bool = False,
    should_stop: Callable[[], bool] | None = None,
    prepared: RegistrationTarget | None = None,
) -> RunSummary:
    """Register every input (files or folders of DICOMs); see the module docstring.

    ``progress`` receives the same event dictionaries as the JSON lines (``{"event": ..., ...}``);
    ``prepared`` reuses a volume already built by :func:`prepare_target`.
    """
    t0 = time.perf_counter()
    if options.init not in INIT_METHODS:
        raise ValueError(f"unknown initialisation {options.init!r}; expected one of {INIT_METHODS}")
    for what, given, flag in (("pose", options.init_pose, "--init-pose"), ("landmarks", options.landmarks, "--landmarks")):
        if options.init == what and (given is None or not Path(given).exists()):
            raise ValueError(f"{given or 'no file given'}: the {what} file for the start pose was not found ({flag})")
    files = collect_inputs(inputs)
    report = _Reporter(progress, emit_events, len(files))
    Path(options.output).mkdir(parents=True, exist_ok=True)
    report("run_start", total=len(files), output=str(options.output))
    outcomes: list[InputOutcome] = []
    todo = []
    for index, path in enumerate(files):
        paths = output_paths(options.output, input_stem(path))
        if not options.overwrite and _finished(paths):
            outcomes.append(InputOutcome(path.name, "skipped", str(paths["json"])))
            report("input_skipped", index=index, total=len(files), input=path.name, json=str(paths["json"]))
        else:
            todo.append((index, path))
    cancelled = False
    if todo and prepared is None:
        prepared = prepare_target(options)
    for index, path in todo:
        if should_stop is not None and should_stop():
            cancelled = True
            break
        report("input_start", index=index, total=len(files), input=path.name)
        t_start = time.perf_counter()
        try:
            outcome = _register_one(path, index, options, prepared, report, should_stop)
        except (ValueError, OSError) as exc:  # bad DICOM, pose or landmarks file: the input's fault
            outcome = InputOutcome(path.name, "failed", message=_failure_message(exc, path.name), bad_input=True)
        except Exception as exc:  # noqa: BLE001 — one input's crash must not stop the others
            outcome = InputOutcome(path.name, "failed", message=_failure_message(exc, path.name)
                                   + f" ({type(exc).__name__})")
        if outcome is None:
            cancelled = True
            outcomes.append(InputOutcome(path.name, "cancelled"))
            break
        outcome.seconds = time.perf_counter() - t_start
        outcomes.append(outcome)
        if outcome.status == "done":
            report("input_done", index=index, total=len(files), input=path.name, json=outcome.json_path,
                   similarity=outcome.similarity, seconds=round(outcome.seconds, 3))
        else:
            report("input_failed", index=index, total=len(files), input=path.name, error=outcome.message)
    done_names = {o.input for o in outcomes}
    outcomes += [InputOutcome(p.name, "cancelled") for _, p in todo if p.name not in done_names] if cancelled else []
    summary = RunSummary(outcomes, cancelled, time.perf_counter() - t0)
    if cancelled:
        report("cancelled", done=summary.count("done"), total=len(files))
    report("run_done", done=summary.count("done"), skipped=summary.count("skipped"),
           failed=summary.count("failed"), cancelled=cancelled, seconds=round(summary.seconds, 3))
    return summary
