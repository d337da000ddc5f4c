"""Where a trained network's start error comes from on realistic X-rays (issue 19).

Trains a patient-specific network (or takes ``--model``), then predicts the pose of the X-ray at
each held-out validation pose of the training run, once as a clean DRR and once per detector or
C-arm effect alone and with all together, and prints the median start mTRE per condition. Every
image except the clean DRR is a synthetic XA DICOM (:mod:`xvrcore.xray.synthesis`) read back by
:func:`xvrcore.xray.read_xray`, so the reader's log conversion, polarity and exposure mask are the
ones a real file gets; geometric conditions pass the detector's exact intrinsics.

    python benchmarks/network_gap.py --minutes 8 --threads 1           # pelvis CT, quick profile
    python benchmarks/network_gap.py --model runs/pelvis --n 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import torch

PELVIS = Path("/work/shared/data/open/ct/pelvis_vhf/pelvis_ct_vhf_1mm.nii.gz")
OFF = {"photons": 1e9, "blur_sigma_px": 0.0, "gain_variation": 0.0, "collimation": 0.0, "subpixel": 1}


@dataclass(frozen=True)
class Condition:
    """One way the X-ray differs from a training DRR."""

    name: str
    synthesis: dict  # SynthesisSettings fields on top of OFF
    scatter: float = 0.0  # low-frequency background added to the raw counts, fraction of their mean
    shutter: str = "rect"  # "rect" (the synthesis's blades, if any) or "circle"
    keep_mask: bool = True  # False: the reader's mask is discarded (every pixel counted)
    monochrome1: bool = False
    detector: dict | None = None  # Detector overrides: sdd, pixels, spacing factor, principal offset


CONDITIONS = [
    Condition("photon noise (3000/px)", {"photons": 3000.0}),
    Condition("detector blur (σ 1.2 px)", {"blur_sigma_px": 1.2}),
    Condition("gain field (±10 %)", {"gain_variation": 0.2}),
    Condition("scatter background (40 %)", {}, scatter=0.4),
    Condition("rectangular collimation, mask", {"collimation": 0.25}),
    Condition("rectangular collimation, no mask", {"collimation": 0.25}, keep_mask=False),
    Condition("circular collimation, mask", {}, shutter="circle"),
    Condition("circular collimation, no mask", {}, shutter="circle", keep_mask=False),
    Condition("MONOCHROME1", {}, monochrome1=True),
    Condition("SDD 1150 mm, 3× finer pixels", {}, detector={"sdd": 1150.0, "zoom": 3}),
    Condition("off-centre principal point (15 %)", {}, detector={"offset": 0.15}),
]
ALL = Condition("all together", {"photons": 3000.0, "blur_sigma_px": 1.2, "gain_variation": 0.2}, scatter=0.4,
                shutter="circle", monochrome1=True, detector={"sdd": 1150.0, "zoom": 3, "offset": 0.15})


def _detector(canonical, sdd: float, spec: dict | None):
    """The X-ray's detector: the canonical one, or another SDD / pixel size / principal point."""
    from xvrcore.geometry.camera import Detector

    spec = spec or {}
    n, spacing = canonical.width, sdd / abs(canonical.fx)
    zoom = spec.get("zoom", 1)
    new_sdd = spec.get("sdd", sdd)
    pixels = n * zoom
    px = spacing * new_sdd / sdd / zoom  # the same field of view at the isocentre, nearly
    offset = spec.get("offset", 0.0) * pixels
    return Detector(new_sdd, pixels, pixels, px, px, principal_offset=(offset, -offset), mirrored=True)


def _smooth(shape, rng) -> np.ndarray:
    v, u = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return 1 + 0.5 * (rng.uniform(-1, 1) * u + rng.uniform(-1, 1) * v)


def _xray(volume, pose, iso, det, cond: Condition, folder: Path, rng):
    """(pixels, mask, intrinsics) of one synthetic XA file as the reader gives them."""
    from xvrcore.xray import read_xray
    from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

    synth = synthesize_xray(volume, pose, det, SynthesisSettings(**{**OFF, **cond.synthesis}), rng)
    if cond.scatter:
        counts = synth.stored.astype(np.float64)
        counts += cond.scatter * counts[synth.mask].mean() * _smooth(counts.shape, rng)
        synth = replace(synth, stored=np.clip(np.round(counts), 0, 4095).astype(np.uint16))
    path = write_xray_dicom(folder / "xa.dcm", synth, det, pose, iso)
    ds = pydicom.dcmread(path)
    if cond.shutter == "circle":
        ds.ShutterShape = "CIRCULAR"
        centre, radius = (det.rows + 1) // 2, int(0.45 * min(det.rows, det.cols))  # integer strings (VR IS)
        ds.CenterOfCircularShutter, ds.RadiusOfCircularShutter = [centre, (det.cols + 1) // 2], radius
        rows, cols = np.mgrid[1 : det.rows + 1, 1 : det.cols + 1]
        outside = (rows - centre) ** 2 + (cols - (det.cols + 1) // 2) ** 2 > radius**2
        ds.PixelData = np.where(outside, 0, ds.pixel_array).astype("<u2").tobytes()  # the iris absorbs
    if cond.monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelIntensityRelationshipSign = -1
        ds.PixelData = (4095 - ds.pixel_array.astype(np.int32)).astype("<u2").tobytes()
    ds.save_as(path)
    xray = read_xray(path)
    mask = xray.mask if cond.keep_mask else None
    return xray.pixels, mask, det.intrinsics()


def _errors(model, ct, volume, poses, targets, cond: Condition | None, folder: Path, seed: int) -> list[float]:
    from xvrcore.drr import render
    from xvrcore.geometry.camera import world_to_camera
    from xvrcore.learning.inference import PatientFrame, predict_pose
    from xvrcore.metrics.pose_errors import mtre

    frame = PatientFrame.from_volume(ct, fingerprint=False)
    iso = torch.as_tensor(ct.center, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    out = []
    for pose in poses:
        if cond is None:
            k = model.intrinsics
            with torch.no_grad():
                pixels, mask = render(volume, pose[None].float(), k)[0, 0], None
        else:
            det = _detector(model.intrinsics, float(model.metadata["camera"]["sdd"]), cond.detector)
            pixels, mask, k = _xray(volume, pose, iso, det, cond, folder, rng)
        est = predict_pose(model, pixels, mask, k, frame, allow_other_volume=True)
        out.append(float(mtre(world_to_camera(pose), world_to_camera(est), targets)))
    return out


def _train(ct: Path, folder: Path, profile: str, minutes: float, threads: int) -> Path:
    from xvrcore.learning.training import TrainSettings, profile_settings, train

    config = TrainSettings(volumes=[str(ct)], output=str(folder), preset="pelvis", minutes=minutes, device="cpu",
                           threads=threads, validate_every=0, validation_size=8, checkpoint_every=0,
                           checkpoint_minutes=1e9, progress_bar=False, **profile_settings(profile))
    result = train(config)
    print(f"trained {result.iterations} iterations ({profile}, {minutes:g} min, {threads} thread(s))", file=sys.stderr)
    return folder


def _row(name: str, errors: list[float]) -> dict:
    e = np.asarray(errors)
    return {"condition": name, "median_mm": float(np.median(e)), "q25_mm": float(np.percentile(e, 25)),
            "q75_mm": float(np.percentile(e, 75)), "within_20mm": float((e < 20).mean()), "n": len(e)}


def measure(model_dir: Path, ct_path: Path, n: int, seed: int) -> list[dict]:
    """One row per condition (clean first, all together last)."""
    from xvrcore.app.evaluate import target_points
    from xvrcore.drr import DRRVolume
    from xvrcore.learning.model_files import load_model
    from xvrcore.learning.sampling import PRESETS, keyed_generator, sample_poses
    from xvrcore.learning.training.data import VALIDATION_KEY
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation

    model = load_model(model_dir, "cpu")
    ct = load_volume(ct_path)
    attenuation = to_attenuation(ct)
    volume = DRRVolume.from_volume(attenuation)
    center = torch.as_tensor(ct.center, dtype=torch.float64)
    poses, _ = sample_poses(PRESETS["pelvis"].ranges, n, keyed_generator(seed, VALIDATION_KEY), center)
    targets = target_points(attenuation, 30, np.random.default_rng(seed))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cond in [None, *CONDITIONS, ALL]:
            name = "clean DRR (canonical camera)" if cond is None else cond.name
            rows.append(_row(name, _errors(model, ct, volume, poses, targets, cond, Path(tmp), seed)))
            print(f"{name}: {rows[-1]['median_mm']:.1f} mm", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| condition | median start mTRE (mm) | IQR (mm) | within 20 mm |", "|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['median_mm']:.1f} | {r['q25_mm']:.1f}–{r['q75_mm']:.1f} | "
              f"{r['within_20mm']:.0%} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=PELVIS)
    parser.add_argument("--model", type=Path, help="a trained model folder (else one is trained)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=12, help="validation poses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _train(args.ct, Path(tmp) / "model", args.profile, args.minutes, args.threads)
        rows = measure(model, args.ct, args.n, args.seed)
    print(table(rows))
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
