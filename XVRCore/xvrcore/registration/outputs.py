"""One X-ray's results, written atomically into the output folder, the JSON last as the commit marker.

* ``<stem>.json``: the pose in the shared result format (:mod:`xvrcore.conventions`) plus the software
  version, timings, initial and final similarity, the start used, a summary of the X-ray geometry,
  warnings and a ``quality`` entry (:func:`xvrcore.metrics.quality.assess`);
* ``<stem>.tfm``: the pose for 3D Slicer (TransformToParent = camera → world);
* ``<stem>_overlay.png`` and ``<stem>_checkerboard.png``: the QA pictures (:mod:`xvrcore.io.overlay`).

A result counts as finished only when its JSON reads back as one of ours and the other files exist, so
a re-run skips finished inputs and redoes an interrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..drr import render, structure_masks
from ..io.images import save_png
from ..io.itk_transform import write_pose_transform
from ..io.overlay import checkerboard_picture, overlay_picture
from ..io.pose_json import PoseFileError, camera_pose, read_pose_json, write_pose_json
from ..metrics.quality import assess
from .settings import RegistrationResult, RegistrationSettings
from .start import StartPose
from .target import RegistrationTarget

__all__ = ["is_finished", "output_paths", "result_record", "write_outputs"]


def output_paths(output: str | Path, stem: str) -> dict[str, Path]:
    out = Path(output)
    return {"json": out / f"{stem}.json", "transform": out / f"{stem}.tfm",
            "overlay": out / f"{stem}_overlay.png", "checkerboard": out / f"{stem}_checkerboard.png"}


def is_finished(paths: dict[str, Path]) -> bool:
    """A valid result exists: the JSON (written last) reads back and is one of ours."""
    if not paths["json"].is_file():
        return False
    try:
        pose = read_pose_json(paths["json"])
    except PoseFileError:
        return False
    return "registration" in pose.extra and all(paths[k].is_file() for k in ("transform", "overlay", "checkerboard"))


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


def result_record(xray, target: RegistrationTarget, start: StartPose, result: RegistrationResult,
                  settings: RegistrationSettings, paths: dict[str, Path], device: str) -> dict[str, Any]:
    """Everything the result JSON records besides the pose (its ``timings_s`` are filled in by the caller)."""
    return {
        "software": {"name": "xvrcore", "version": __version__},
        "input": {"file": Path(xray.source).name},
        "volume": target.summary,
        "initialization": start.info,
        "similarity": {"initial": result.initial_similarity, "final": result.similarity,
                       "measure": _similarity_measure(settings)},
        "quality": assess(result.similarity),
        "registration": {"stages": _stage_logs(result), "attempts": result.attempts,
                         "seconds": round(result.seconds, 3), "device": device},
        "xray_geometry": _geometry_summary(xray),
        "warnings": list(xray.warnings) + start.warnings,
        "outputs": {k: p.name for k, p in paths.items() if k != "json"},
    }


def _caption(result: RegistrationResult, record: dict[str, Any]) -> list[str]:
    quality = record["quality"]
    return [f"similarity {result.similarity:.3f} (start {result.initial_similarity:.3f})",
            f"quality: {'pass' if quality['passed'] else 'CHECK'} (P(<1 mm) {quality['p_submillimetre']:.2f})",
            f"start: {record['initialization']['method']}"]


def write_outputs(paths: dict[str, Path], xray, target: RegistrationTarget, pose: torch.Tensor,
                  result: RegistrationResult, record: dict[str, Any], t0: float) -> None:
    """Transform, pictures, then the JSON (last: its presence marks the input as finished)."""
    t_out = time.perf_counter()
    intrinsics = xray.intrinsics
    write_pose_transform(paths["transform"], pose)
    with torch.no_grad():
        drr = render(target.drr, pose.to(target.drr.device, target.drr.dtype), intrinsics)[0, 0].cpu().numpy()
    silhouettes = structure_masks(target.outlines, pose, intrinsics)
    save_png(paths["overlay"], overlay_picture(xray.pixels, drr, mask=xray.mask, structures=silhouettes,
                                               names=target.names, colors=target.colors,
                                               text=_caption(result, record)))
    save_png(paths["checkerboard"], checkerboard_picture(xray.pixels, drr, mask=xray.mask))
    now = time.perf_counter()
    record["timings_s"].update(outputs=round(now - t_out, 3), total=round(now - t0, 3))
    write_pose_json(paths["json"], camera_pose(intrinsics, pose, **record))
