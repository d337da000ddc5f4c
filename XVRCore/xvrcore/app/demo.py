"""The demo on shipped data: the main job, end to end, on the pelvis CT.

1. Frontal and lateral DRRs of the CT (PNGs and pose JSONs), as a mobile C-arm would see them.
2. An X-ray DICOM of the CT at a C-arm pose the registration is not told (simulated detector
   image with its C-arm header), registered from its header like a clinical file: the result
   JSON, the Slicer transform and the overlay picture are written and the error is printed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..drr import DRRVolume, render
from ..geometry.camera import Detector
from ..geometry.carm import carm_pose
from ..io.images import labelled_panel, save_png, to_uint8
from ..io.pose_json import camera_pose, write_pose_json
from ..volume import load_volume
from ..volume.attenuation import to_attenuation

__all__ = ["DEMO_XRAY_PARAMS", "PELVIS_CT", "VIEWS", "View", "run_demo", "shared_data_dir"]

DEMO_XRAY_PARAMS = (18.0, -12.0, 6.0, 14.0, -780.0, -9.0)  # paper's (α, β, γ, x, y, z), "PA"

PELVIS_CT = Path("open") / "ct" / "pelvis_vhf" / "pelvis_ct_vhf_1mm.nii.gz"


@dataclass(frozen=True)
class View:
    """One of the demo's DRR views: a name for the files, a description and the C-arm angles."""

    name: str
    description: str
    alpha: float  # paper's LAO/RAO angle, degrees
    beta: float = 0.0


# A mobile C-arm under a supine patient: the source is posterior ("PA" beam), so the detector-side
# image shows the patient's right on the left of the picture, as radiologists read it.
VIEWS = (
    View("ap", "frontal view (source posterior, detector anterior)", 0.0),
    View("lateral", "lateral view (source at the patient's right, detector at the left)", 90.0),
)


def shared_data_dir() -> Path:
    """The shared data folder: ``$XVR_SHARED_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("XVR_SHARED_DATA")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for path in candidates:
        if (path / "open").is_dir():
            return path
    raise FileNotFoundError(
        "shared data not found (looked in " + ", ".join(str(c) for c in candidates) + "); "
        "set XVR_SHARED_DATA to the shared/data folder or pass --ct"
    )


def run_demo(
    output: str | Path,
    ct_path: str | Path | None = None,
    size: int = 384,
    method: str = "trilinear",
    progress: bool = True,
    register_xray: bool = True,
) -> dict:
    """Run the demo; returns a summary with the written files, timings and the registration error."""
    output = Path(output)
    ct_path = Path(ct_path) if ct_path else shared_data_dir() / PELVIS_CT
    # A 384 × 240 mm detector: wide enough for both iliac wings, about as tall as the 150 mm scan.
    spacing = 384.0 / size
    detector = Detector(sdd=1020.0, rows=round(size * 0.625), cols=size, row_spacing=spacing, col_spacing=spacing)
    summary: dict = {"files": [], "timings_s": {}}
    steps = 2 + 2 * len(VIEWS) + (2 if register_xray else 0)
    with tqdm(total=steps, desc="xvrcore demo", unit="step", disable=not progress) as bar:
        t0 = time.perf_counter()
        bar.set_postfix_str("loading the CT")
        ct = load_volume(ct_path)
        volume = DRRVolume.from_volume(to_attenuation(ct))
        summary["timings_s"]["load"] = time.perf_counter() - t0
        bar.update(1)
        isocenter = torch.as_tensor(ct.center)
        images = [_render_view(output, view, volume, isocenter, detector, method, ct_path.name, summary, bar)
                  for view in VIEWS]
        bar.set_postfix_str("overview")
        panel = labelled_panel(images, [v.description.split(" (")[0] for v in VIEWS])
        summary["files"].append(save_png(output / "pelvis_views.png", np.asarray(panel)))
        bar.update(1)
        if register_xray:
            bar.set_postfix_str("simulating an X-ray DICOM")
            summary["registration"] = _registration_job(output, ct, volume, isocenter, summary, bar)
    summary["timings_s"]["total"] = time.perf_counter() - t0
    return summary


def _render_view(output: Path, view: View, volume: DRRVolume, isocenter: torch.Tensor, detector: Detector,
                 method: str, volume_name: str, summary: dict, bar) -> np.ndarray:
    """Render ``view``, write its PNG and pose JSON (recorded in ``summary``); returns the picture."""
    bar.set_postfix_str(f"rendering {view.name}")
    intrinsics = detector.intrinsics()
    pose = carm_pose(torch.tensor([view.alpha, view.beta, 0.0, 0.0, -800.0, 0.0]), "PA", isocenter)
    t0 = time.perf_counter()
    drr = render(volume, pose.float(), intrinsics, method=method)[0, 0].numpy()
    summary["timings_s"][f"render_{view.name}"] = time.perf_counter() - t0
    bar.update(1)
    bar.set_postfix_str(f"writing {view.name}")
    picture = to_uint8(drr, 2.0, 99.9, mask=drr > 0.2 * drr.max())  # window on the body
    summary["files"].append(save_png(output / f"pelvis_{view.name}.png", picture))
    extra = {
        "description": view.description,
        "volume": volume_name,
        "carm": {"alpha_deg": view.alpha, "beta_deg": view.beta, "gamma_deg": 0.0,
                 "translation_mm": [0.0, -800.0, 0.0], "orientation": "PA",
                 "isocenter_ras": [float(v) for v in isocenter]},
        "detector": {"sdd_mm": detector.sdd, "pixel_spacing_mm": [detector.row_spacing, detector.col_spacing]},
        "renderer": {"method": method},
        "software": f"xvrcore {__version__}",
    }
    summary["files"].append(write_pose_json(output / f"pelvis_{view.name}.json", camera_pose(intrinsics, pose, **extra)))
    bar.update(1)
    return picture


def _registration_job(output: Path, ct, volume: DRRVolume, isocenter: torch.Tensor, summary: dict, bar) -> dict:
    """Make an X-ray DICOM at a pose the registration does not know, register it from its header."""
    from ..geometry.camera import world_to_camera
    from ..io.pose_json import read_pose_json
    from ..metrics.pose_errors import mtre
    from ..registration import PipelineSettings, register_inputs
    from ..xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

    detector = Detector(sdd=1020.0, rows=256, cols=256, row_spacing=0.75, col_spacing=0.75)
    truth = carm_pose(torch.tensor(DEMO_XRAY_PARAMS, dtype=torch.float64), "PA", isocenter)
    t0 = time.perf_counter()
    exact = DRRVolume(volume.levels[0].data.double(), volume.levels[0].ijk_to_world)
    image = synthesize_xray(exact, truth, detector, SynthesisSettings(subpixel=1), rng=np.random.default_rng(2026))
    dicom = write_xray_dicom(output / "xray" / "pelvis_xray.dcm", image, detector, truth, isocenter)
    summary["timings_s"]["simulate_xray"] = time.perf_counter() - t0
    summary["files"].append(dicom)
    bar.update(1)
    bar.set_postfix_str("registering the X-ray")
    t1 = time.perf_counter()
    run = register_inputs([dicom], PipelineSettings(volume=ct.source, output=output / "registration", overwrite=True))
    summary["timings_s"]["register"] = time.perf_counter() - t1
    bar.update(1)
    outcome = run.outcomes[0]
    if outcome.status != "done":
        raise RuntimeError(f"the demo registration failed: {outcome}")
    result = read_pose_json(output / "registration" / "pelvis_xray.json")
    summary["files"] += sorted((output / "registration").iterdir())
    # Errors at bone voxels (the targets a clinician would look at) against the simulated truth.
    mu = volume.levels[0]
    dense = torch.nonzero(mu.data[0] > 0.035)[::997].flip(-1).double()  # (i, j, k) of dense voxels
    targets = dense @ mu.ijk_to_world[:3, :3].T + mu.ijk_to_world[:3, 3]
    w_true = world_to_camera(truth)
    start = torch.as_tensor(result.extra["initialization"]["camera_to_world"], dtype=torch.float64)
    return {
        "initial_mtre_mm": float(mtre(w_true, world_to_camera(start), targets)),
        "final_mtre_mm": float(mtre(w_true, world_to_camera(torch.as_tensor(result.camera_to_world)), targets)),
        "quality": result.extra["quality"],
    }
