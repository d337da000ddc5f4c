"""One X-ray's results, written into the output folder as one unit, the JSON last as the commit marker.

``<name>`` is the input's output name (:func:`~xvrcore.registration.inputs.name_inputs`):

* ``<name>.json``: the pose in the shared result format (:mod:`xvrcore.conventions`) plus the software
  version, timings, initial and final similarity, the start used, a summary of the X-ray geometry,
  warnings, a ``quality`` entry (:func:`xvrcore.metrics.quality.assess`) and ``input``: which X-ray
  and frame it is (``sop_instance_uid``, ``frame``, ``mask_frame``, ``name``; ``file`` too under the
  ``stem`` naming);
* ``<name>.tfm``: the pose for 3D Slicer (TransformToParent = camera → world);
* ``<name>_overlay.png`` and ``<name>_checkerboard.png``: the QA pictures (:mod:`xvrcore.io.overlay`).

The four are staged as temporaries and renamed into place together (:class:`~xvrcore.io.atomic.FileGroup`),
the JSON last. A result counts as finished only when its JSON reads back as one of ours, the other
files exist and it is the result of the same X-ray and frame; a re-run skips finished inputs and
redoes the others, removing what an interrupted run left of them first.

The JSON never holds a path: only file names, and under the ``uid`` and ``hash`` namings not even
those (nor the SOP Instance UID under ``hash``); warnings that name files are rewritten the same way.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..drr import render, structure_masks
from ..io.atomic import FileGroup, remove_stale_temporaries
from ..io.images import save_png
from ..io.itk_transform import write_pose_transform
from ..io.lock import FolderLock, lock_folder
from ..io.overlay import checkerboard_picture, overlay_picture
from ..io.pose_json import PoseFileError, camera_pose, read_pose_json, write_pose_json
from ..metrics.quality import assess
from .batch import PipelineSettings
from .inputs import BatchInput, name_inputs
from .resolution import stage_inputs
from .settings import RegistrationResult, RegistrationSettings
from .start import StartPose
from .target import RegistrationTarget

__all__ = ["ANONYMOUS_NAMINGS", "discard_unfinished", "input_identity", "is_finished", "open_output_folder",
           "output_paths", "picture_images", "plan_outputs", "result_record", "write_outputs"]

ANONYMOUS_NAMINGS = ("uid", "hash")  # namings under which the result JSON holds no file name
_PARTS = ("transform", "overlay", "checkerboard")  # written before the JSON
_CLAIM_DIGITS = 8


def open_output_folder(output: str | Path, notify) -> FolderLock:
    """Create and lock the output folder (:func:`~xvrcore.io.lock.lock_folder`: also the check that it is
    writable, before any work), then remove the temporaries an interrupted run left there.

    ``notify(text)`` is told of a stale lock taken over and of temporaries removed.
    """
    lock = lock_folder(output, notify)
    try:
        removed = remove_stale_temporaries(output)
    except BaseException:
        lock.release()
        raise
    if removed:
        notify(f"{output}: removed {len(removed)} temporary file(s) an interrupted run left")
    return lock


def output_paths(output: str | Path, stem: str) -> dict[str, Path]:
    out = Path(output)
    return {"json": out / f"{stem}.json", "transform": out / f"{stem}.tfm",
            "overlay": out / f"{stem}_overlay.png", "checkerboard": out / f"{stem}_checkerboard.png"}


def input_identity(item: BatchInput, settings: PipelineSettings) -> dict[str, Any]:
    """The result JSON's ``input``: which X-ray and frame the result is of (see the module docstring)."""
    identity: dict[str, Any] = {"name": item.name, "frame": settings.frame, "mask_frame": settings.mask_frame}
    if settings.name_outputs != "hash":
        identity["sop_instance_uid"] = item.sop_instance_uid
    if settings.name_outputs not in ANONYMOUS_NAMINGS:
        identity = {"file": item.path.name, **identity}
    return identity


def _recorded_input(paths: dict[str, Path]) -> dict[str, Any] | None:
    """The ``input`` of the finished result at ``paths``; None if there is none (or it is not ours)."""
    if not paths["json"].is_file():
        return None
    try:
        pose = read_pose_json(paths["json"])
    except PoseFileError:
        return None
    if "registration" not in pose.extra or not all(paths[k].is_file() for k in _PARTS):
        return None
    recorded = pose.extra.get("input")
    return recorded if isinstance(recorded, dict) else {}


def _same_input(recorded: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether a recorded ``input`` is this X-ray and frame (what an older result did not record counts as equal)."""
    keys = ["frame", "mask_frame"] + (["sop_instance_uid"] if identity.get("sop_instance_uid") else [])
    return all(recorded.get(key, identity.get(key)) == identity.get(key) for key in keys)


def is_finished(paths: dict[str, Path], identity: dict[str, Any] | None = None) -> bool:
    """A valid result exists: the JSON (written last) reads back, is one of ours, its other files exist,
    and (given ``identity``, :func:`input_identity`) it is the result of the same X-ray and frame."""
    recorded = _recorded_input(paths)
    return recorded is not None and (identity is None or _same_input(recorded, identity))


def plan_outputs(files: list[Path], settings: PipelineSettings) -> list[BatchInput]:
    """The inputs' output names: unique in the batch, and not the name of another X-ray's result in the folder.

    A name whose finished result in the output folder is of another X-ray or frame (an earlier run of
    another series' ``IM000001``) gets a suffix from the SHA-256 of this input's SOP Instance UID (or
    path) and frame choice, so neither result is overwritten or taken for the other.
    """
    planned = []
    for item in name_inputs(files, settings.name_outputs):
        recorded = _recorded_input(output_paths(settings.output, item.name))
        if recorded is not None and not _same_input(recorded, input_identity(item, settings)):
            key = f"{item.sop_instance_uid or item.path}|frame={settings.frame}|mask={settings.mask_frame}"
            item = BatchInput(item.path, f"{item.name}-{hashlib.sha256(key.encode()).hexdigest()[:_CLAIM_DIGITS]}",
                              item.sop_instance_uid)
        planned.append(item)
    return planned


def discard_unfinished(paths: dict[str, Path]) -> list[str]:
    """Remove what an interrupted run left of an unfinished result (its JSON absent); returns the names removed."""
    if paths["json"].exists():
        return []  # finished, or a file that is not ours: registering again replaces it
    removed = [paths[k].name for k in _PARTS if paths[k].is_file()]
    for key in _PARTS:
        paths[key].unlink(missing_ok=True)
    return removed


def _geometry_summary(xray) -> dict[str, Any]:
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


def _file_roles(xray, run: PipelineSettings | None) -> list[tuple[str, str]]:
    """The files a run reads, by role: what a warning that names them is rewritten to."""
    given = {"the X-ray": xray.source}
    if run is not None:
        given.update({"the volume": run.volume, "the label map": run.labels, "the label names": run.label_names,
                      "the start pose file": run.init_pose, "the landmarks file": run.landmarks,
                      "the model": run.model})
    return [(role, str(path)) for role, path in given.items() if path is not None]


def _scrubbed(texts: list[str], roles: list[tuple[str, str]], anonymous: bool) -> list[str]:
    """``texts`` with every path named cut to its file name (``anonymous``: to its role, e.g. "the volume")."""
    out = []
    for text in texts:
        for role, path in roles:
            name = Path(path).name
            for spelling in sorted({str(Path(path).resolve()), str(Path(path)), path}, key=len, reverse=True):
                text = text.replace(spelling, role if anonymous else name)
            if anonymous and name:  # the bare name too, but not inside another word
                text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", role, text)
        out.append(text)
    return out


def _without_file_names(record: dict[str, Any]) -> dict[str, Any]:
    """The record less the names of the files read (the ``uid`` and ``hash`` namings)."""
    record["volume"] = {k: v for k, v in record["volume"].items() if k not in ("file", "labels_file", "vessels_file", "model")}
    record["initialization"] = {k: v for k, v in record["initialization"].items() if k not in ("file", "model")}
    return record


def result_record(xray, target: RegistrationTarget, start: StartPose, result: RegistrationResult,
                  settings: RegistrationSettings, paths: dict[str, Path], device: str, *,
                  item: BatchInput | None = None, run: PipelineSettings | None = None) -> dict[str, Any]:
    """Everything the result JSON records besides the pose (its ``timings_s`` are filled in by the caller).

    ``item`` and ``run`` (the batch input and the run's settings) give the ``input`` identity, the
    naming and the run's own warnings (:attr:`RegistrationTarget.warnings`: a series chosen, a label map
    resampled).
    """
    anonymous = run is not None and run.name_outputs in ANONYMOUS_NAMINGS
    identity = input_identity(item, run) if item is not None and run is not None else {"file": Path(xray.source).name}
    warnings = list(target.warnings) + list(xray.warnings) + start.warnings
    record = {
        "software": {"name": "xvrcore", "version": __version__},
        "input": identity,
        "volume": dict(target.summary),
        "initialization": dict(start.info),
        "similarity": {"initial": result.initial_similarity, "final": result.similarity,
                       "measure": _similarity_measure(settings)},
        "quality": assess(result.similarity),
        "registration": {"stages": _stage_logs(result), "attempts": result.attempts,
                         "seconds": round(result.seconds, 3), "device": device},
        "xray_geometry": _geometry_summary(xray),
        "warnings": _scrubbed(warnings, _file_roles(xray, run), anonymous),
        "outputs": {k: p.name for k, p in paths.items() if k != "json"},
    }
    return _without_file_names(record) if anonymous else record


def _caption(result: RegistrationResult, record: dict[str, Any]) -> list[str]:
    quality = record["quality"]
    return [f"similarity {result.similarity:.3f} (start {result.initial_similarity:.3f})",
            f"quality: {'pass' if quality['passed'] else 'CHECK'} (P(<1 mm) {quality['p_submillimetre']:.2f})",
            f"start: {record['initialization']['method']}"]


# The QA pictures are at most this many pixels on their longer side (the X-ray area-downsampled to match),
# from a CT level up to 1.5× coarser than their pixels: the DRR of a 1024² X-ray at full size on the finest
# level cost more than its whole registration on 2 CPU cores (benchmarks/README.md, "Registration in seconds").
PICTURE_SIDE = 512
PICTURE_LOD_BIAS = 1.5


def picture_images(volume, pose: torch.Tensor, pixels, intrinsics, mask):
    """The QA pictures' X-ray ``(h, w)``, intrinsics, exposure mask and DRR at ``pose`` (4, 4), at most
    :data:`PICTURE_SIDE` pixels on the longer side (numpy arrays, the intrinsics of that grid)."""
    image, k, exposed = stage_inputs(torch.as_tensor(pixels), intrinsics, torch.as_tensor(mask), PICTURE_SIDE)
    with torch.no_grad():
        drr = render(volume, pose.to(volume.device, volume.dtype), k, lod_bias=PICTURE_LOD_BIAS)[0, 0].cpu().numpy()
    return image.numpy(), k, exposed.numpy(), drr


def write_outputs(paths: dict[str, Path], xray, target: RegistrationTarget, pose: torch.Tensor,
                  result: RegistrationResult, record: dict[str, Any], t0: float) -> None:
    """Transform, pictures, then the JSON (last: its presence marks the input as finished), as one unit.

    All four are staged first; a failure (a full disk) leaves the folder as it was, a kill leaves only
    temporaries (removed by the next run) or an unfinished result (redone by the next run).
    """
    t_out = time.perf_counter()
    pixels, k, mask, drr = picture_images(target.drr, pose, xray.pixels, xray.intrinsics, xray.mask)
    silhouettes = structure_masks(target.outlines, pose, k)
    overlay = overlay_picture(pixels, drr, mask=mask, structures=silhouettes, names=target.names,
                              colors=target.colors, text=_caption(result, record))
    with FileGroup() as unit:
        unit.write(paths["transform"], lambda tmp: write_pose_transform(tmp, pose))
        unit.write(paths["overlay"], lambda tmp: save_png(tmp, overlay))
        unit.write(paths["checkerboard"], lambda tmp: save_png(tmp, checkerboard_picture(pixels, drr, mask=mask)))
        now = time.perf_counter()
        record["timings_s"].update(outputs=round(now - t_out, 3), total=round(now - t0, 3))
        unit.write(paths["json"], lambda tmp: write_pose_json(tmp, camera_pose(xray.intrinsics, pose, **record)))
        unit.commit()
