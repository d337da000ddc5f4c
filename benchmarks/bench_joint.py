"""Joint biplane registration and sequence tracking, side by side with registering each view or frame on its own.

**Biplane pairs.** For each of ``--pairs`` pairs: view A at a random C-arm angle of the preset
(``xvrcore.app.evaluate.PRESETS``), view B 60–90° further round the patient (either side), both
about the volume centre at the preset's SOD; the patient has moved by a random rigid motion (20–40
mm in a random direction, up to 10° about a random axis: the accuracy harness's perturbation) from
where the headers put it. Each view is a realistic detector image (exact Siddon, photon noise,
gain, blur, collimation) written as an XA DICOM and read back with our reader. Then, from the
headers: **single**: each view registered on its own (``xvrcore.registration.register``, default
schedule: search, stages, retries); **joint**: ``register_jointly`` started from those results
(its own time is the joint refinement alone). Both scored by mTRE at the harness's target points.

**Sequence.** ``--frames`` frames of a fixed C-arm while the patient breathes: 10 mm head-wards
and back (1 − cos) with 2 mm forward, after a 10–20 mm offset from the header. **track**:
``track_frames`` (a full registration of frame 0, then the short schedule from the neighbour);
**single**: every frame registered on its own from its header with the full schedule.

    python benchmarks/bench_joint.py [--ct pelvis|head] [--pairs 5] [--frames 10] [--pixels 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from xvrcore.app.evaluate import PRESETS, perturb, pose_errors, target_points
from xvrcore.drr import DRRVolume
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.registration import RegistrationSettings, Stage, register
from xvrcore.registration.linescan import rigid_about
from xvrcore.registration.multiview import JointView, register_jointly
from xvrcore.registration.tracking import SequenceFrame, TrackSettings, track_frames, track_summary
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.xray import read_xray
from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open" / "ct"
CTS = {"pelvis": (DATA / "pelvis_vhf" / "pelvis_ct_vhf_1mm.nii.gz", "pelvis"),
       "head": (DATA / "head_skull_dbdicom" / "head_ct.nii.gz", "skull")}


def _setup(ct: str, pixels: int | None):
    path, preset_name = CTS[ct]
    preset = PRESETS[preset_name]
    volume = load_volume(path)
    attenuation = to_attenuation(volume)
    n = pixels or preset.pixels
    detector = Detector(preset.sdd, n, n, preset.pixel_spacing * preset.pixels / n, preset.pixel_spacing * preset.pixels / n)
    center = torch.as_tensor(volume.center, dtype=torch.float64)
    targets = target_points(attenuation, 30, np.random.default_rng(0))
    return preset, DRRVolume.from_volume(attenuation), detector, center, targets


def _xray(folder: Path, name: str, drr, true, header, detector, center, seed: int):
    """A synthetic X-ray at ``true`` written with the C-arm ``header`` and read back."""
    image = synthesize_xray(drr, true, detector, rng=np.random.default_rng(seed))
    path = write_xray_dicom(folder / f"{name}.dcm", image, detector, header, center)
    return read_xray(path)


def _motion(center, rng) -> torch.Tensor:
    """The patient's motion as a correction of the cameras: the harness's perturbation about the centre."""
    return perturb(torch.eye(4, dtype=torch.float64), center, rng, (20.0, 40.0), 10.0)


def _error(true, pose, xray, targets, center) -> float:
    return pose_errors(true, pose.cpu(), xray, targets, center)["mtre_mm"]


def biplane(setup, pairs: int, seed: int, folder: Path) -> list[dict]:
    preset, drr, detector, center, targets = setup
    rng, records = np.random.default_rng(seed), []
    for pair in range(pairs):
        primary, secondary = rng.uniform(*preset.alpha), rng.uniform(*preset.beta)
        other = primary + rng.choice([-1.0, 1.0]) * rng.uniform(60.0, 90.0)
        sod = rng.uniform(*preset.sod)
        motion = _motion(center, rng)
        headers = [pose_from_positioner(a, secondary, sod, center) for a in (primary, other)]
        truth = [motion @ h for h in headers]
        xrays = [_xray(folder, f"pair{pair}_{i}", drr, t, h, detector, center, 100 * pair + i)
                 for i, (t, h) in enumerate(zip(truth, headers, strict=True))]
        views = [JointView(torch.as_tensor(x.pixels), x.intrinsics, h, torch.as_tensor(x.mask), name=str(i))
                 for i, (x, h) in enumerate(zip(xrays, headers, strict=True))]
        singles, t_single = [], []
        for view in views:
            t0 = time.perf_counter()
            singles.append(register(drr, view.xray, view.intrinsics, view.start, mask=view.mask))
            t_single.append(time.perf_counter() - t0)
        joint = register_jointly(drr, views, singles=singles)
        record = {"pair": pair, "angles": [primary, other, secondary], "mode": joint.mode, "weights": joint.weights,
                  "start_mm": [_error(t, h, x, targets, center) for t, h, x in zip(truth, headers, xrays, strict=True)],
                  "single_mm": [_error(t, r.camera_to_world, x, targets, center)
                                for t, r, x in zip(truth, singles, xrays, strict=True)],
                  "joint_mm": [_error(t, p, x, targets, center)
                               for t, p, x in zip(truth, joint.camera_to_world, xrays, strict=True)],
                  "single_similarity": [r.similarity for r in singles], "joint_similarity": joint.similarity,
                  "single_s": t_single, "joint_s": joint.seconds}
        print(json.dumps({k: (np.round(v, 3).tolist() if isinstance(v, list) else v) for k, v in record.items()}),
              flush=True)
        records.append(record)
    return records


def sequence(setup, frames: int, seed: int, folder: Path, with_single: bool, short=None) -> dict:
    preset, drr, detector, center, targets = setup
    rng = np.random.default_rng(seed + 1)
    header = pose_from_positioner(rng.uniform(*preset.alpha), rng.uniform(*preset.beta), rng.uniform(*preset.sod),
                                  center)
    offset = perturb(torch.eye(4, dtype=torch.float64), center, rng, (10.0, 20.0), 3.0)
    truth, xrays = [], []
    for k in range(frames):
        phase = 0.5 * (1 - math.cos(2 * math.pi * k / max(frames - 1, 1)))
        breath = rigid_about(torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 2.0 * phase, 10.0 * phase],
                                                                                dtype=torch.float64), center)
        truth.append(breath @ offset @ header)
        xrays.append(_xray(folder, f"frame{k}", drr, truth[-1], header, detector, center, 1000 + k))
    seq = [SequenceFrame(k, torch.as_tensor(x.pixels), x.intrinsics, header, torch.as_tensor(x.mask))
           for k, x in enumerate(xrays)]
    results = track_frames(drr, seq, settings=TrackSettings(short=short) if short else TrackSettings())
    record = {"track_mm": [_error(t, r.camera_to_world, x, targets, center)
                           for t, r, x in zip(truth, results, xrays, strict=True)],
              "status": [r.status for r in results], "track_s": [r.seconds for r in results],
              "summary": track_summary(results)}
    if with_single:
        single_mm, single_s = [], []
        for frame, t, x in zip(seq, truth, xrays, strict=True):
            t0 = time.perf_counter()
            result = register(drr, frame.xray, frame.intrinsics, frame.start, mask=frame.mask)
            single_s.append(time.perf_counter() - t0)
            single_mm.append(_error(t, result.camera_to_world, x, targets, center))
        record.update(single_mm=single_mm, single_s=single_s)
    print(json.dumps({k: (np.round(v, 3).tolist() if isinstance(v, list) and v and isinstance(v[0], float) else v)
                      for k, v in record.items()}), flush=True)
    return record


def _share(values, limit=1.0) -> float:
    return sum(v < limit for v in values) / len(values)


def report(pairs: list[dict], seq: dict | None) -> None:
    if pairs:
        single = [e for r in pairs for e in r["single_mm"]]
        joint = [e for r in pairs for e in r["joint_mm"]]
        print(f"biplane, {len(pairs)} pairs: median mTRE single {statistics.median(single):.3f} mm "
              f"({_share(single):.0%} < 1 mm), joint {statistics.median(joint):.3f} mm ({_share(joint):.0%} < 1 mm); "
              f"median time single {statistics.median(t for r in pairs for t in r['single_s']):.1f} s per view, "
              f"joint refinement {statistics.median(r['joint_s'] for r in pairs):.1f} s per pair")
    if seq is not None:
        print(f"sequence, {len(seq['track_mm'])} frames: tracked median mTRE {statistics.median(seq['track_mm']):.3f} mm "
              f"({_share(seq['track_mm']):.0%} < 1 mm), {seq['summary']['frames_per_second']} frames/s after the key "
              f"frame; flagged {seq['summary']['flagged']}")
        if "single_mm" in seq:
            print(f"  each frame on its own: median {statistics.median(seq['single_mm']):.3f} mm "
                  f"({_share(seq['single_mm']):.0%} < 1 mm), {len(seq['single_s']) / sum(seq['single_s']):.2f} frames/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", choices=tuple(CTS), default="pelvis")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--pixels", type=int, help="detector pixels per side (default: the preset's, same field)")
    parser.add_argument("--no-single-frames", action="store_true", help="skip registering every frame on its own")
    parser.add_argument("--short-stage", type=int, nargs=2, metavar=("PX", "ITERATIONS"),
                        help="track with one short stage of this size and length instead of the default schedule")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = _setup(args.ct, args.pixels)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = biplane(setup, args.pairs, args.seed, Path(tmp)) if args.pairs else []
        short = None if args.short_stage is None else RegistrationSettings(
            stages=(Stage(args.short_stage[0], args.short_stage[1], 4e-3, 1.0, 0.5),), search=None, retry_searches=(),
            patience=5)
        seq = (sequence(setup, args.frames, args.seed, Path(tmp), not args.no_single_frames, short) if args.frames
               else None)
    report(pairs, seq)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "pairs": pairs,
                                         "sequence": seq}, indent=1))


if __name__ == "__main__":
    main()
