"""CPU-budget training experiment: a patient-specific pelvis network after M minutes on the CPU.

1. Train ``xvrcore.learning.training.train`` on the pelvis CT (preset "pelvis", the paper's Table S2
   ranges) for ``--minutes`` of wall time.
2. Held-out test: ``--n`` synthetic X-ray DICOMs (exact Siddon, noise, gain, blur, collimation)
   at poses drawn from the same ranges with another seed, on a detector with other intrinsics
   than the network's canonical camera (so the Fig. S2 resampling is exercised).
3. For each: the network's pose (no header information) → mTRE; then registration refinement
   from it → mTRE. Prints the fraction of starts within 20 mm (the refinement's capture range)
   and the sub-millimetre rate after refinement.

    python benchmarks/train_budget.py --minutes 20 --n 30 --profile quick --output /tmp/budget  # the README's figures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    from xvrcore.app.demo import PELVIS_CT, shared_data_dir
    from xvrcore.app.evaluate import pose_errors, target_points
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.learning import load_model
    from xvrcore.learning.inference import PatientFrame, predict_pose
    from xvrcore.learning.sampling import PRESETS, keyed_generator, sample_poses
    from xvrcore.learning.training import PROFILES, TrainSettings, profile_settings, train
    from xvrcore.registration import register
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray import read_xray
    from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", default=None)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="standard", help="the options below override it")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--width", type=int, help="ResNet-18 base width (64 = the standard network)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--pose-loss-fraction", type=float, help="first part of the budget on the pose term alone")
    parser.add_argument("--output", required=True)
    parser.add_argument("--skip-training", action="store_true", help="evaluate the model already in OUTPUT/model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    ct_path = Path(args.ct) if args.ct else shared_data_dir() / PELVIS_CT
    t0 = time.perf_counter()
    if not args.skip_training:
        settings = profile_settings(args.profile, batch_size=args.batch_size, image_size=args.image_size, width=args.width,
                                    lr=args.lr, pose_loss_fraction=args.pose_loss_fraction)
        result = train(TrainSettings(volumes=[str(ct_path)], output=str(out / "model"), preset="pelvis", minutes=args.minutes,
                                   threads=args.threads, **settings))
        print(f"trained {result.iterations} iterations in {time.perf_counter() - t0:.0f} s", flush=True)
    model = load_model(out / "model")
    ct = load_volume(ct_path)
    mu = to_attenuation(ct)
    center = torch.as_tensor(ct.center)
    frame = PatientFrame.from_volume(ct)
    volume, exact = DRRVolume.from_volume(mu), DRRVolume.from_volume(mu, dtype=torch.float64)
    targets = target_points(mu, 30, np.random.default_rng(0))
    detector = Detector(1020.0, 256, 256, 278.6 / 256 * 1.1, 278.6 / 256 * 1.1)  # other pixels and field than the model's
    preset = PRESETS["pelvis"]
    poses, _ = sample_poses(preset.ranges, args.n, keyed_generator(987654, 0), center)
    rows = []
    for i, true in enumerate(poses):
        rng = np.random.default_rng(i)
        image = synthesize_xray(exact, true, detector, SynthesisSettings(subpixel=1), rng)
        xray = read_xray(write_xray_dicom(out / "xrays" / f"xray_{i:03d}.dcm", image, detector, true, center))
        try:
            start = predict_pose(model, xray.pixels, xray.mask, xray.intrinsics, frame)
        except ValueError as exc:  # e.g. the view shows almost nothing of the model's field
            rows.append({"index": i, "error": str(exc)})
            continue
        res = register(volume, torch.as_tensor(xray.pixels), xray.intrinsics, start, mask=torch.as_tensor(xray.mask), center=center)
        row = {"index": i, "initial": pose_errors(true, start, xray, targets, center),
               "final": pose_errors(true, res.camera_to_world, xray, targets, center), "seconds": res.seconds}
        rows.append(row)
        print(f"{i}: network {row['initial']['mtre_mm']:7.1f} mm -> refined {row['final']['mtre_mm']:7.2f} mm", flush=True)
    ok = [r for r in rows if "initial" in r]
    init = np.array([r["initial"]["mtre_mm"] for r in ok])
    final = np.array([r["final"]["mtre_mm"] for r in ok])
    summary = {
        "n": len(rows), "predicted": len(ok),
        "network_median_mtre_mm": float(np.median(init)), "within_20mm": float(np.mean(init < 20)) if ok else 0.0,
        "refined_median_mtre_mm": float(np.median(final)),
        "submm_after_refinement": float(np.sum(final < 1.0) / max(len(rows), 1)),
    }
    (out / "summary.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
