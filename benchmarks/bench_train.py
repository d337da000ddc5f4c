"""Training throughput: images/s of render + forward + backward + step, per network profile.

Runs ``xvrcore.learning.training.train`` for ``--seconds`` per configuration on the pelvis CT and reads
the images/s of its last progress event (setup and the final validation are not counted).
Configurations, side by side in the same run (the first is the reference of the ratios):

* ``standard``  the training profile: 128×128, ResNet-18 (width 64), batch 32, the paper's loss
* ``quick``     the training profile: 64×64, half width, batch 16, the pose term alone
* ``paper-batch`` (CUDA only) the standard network at the paper's batch of 116

On CUDA the network runs under bfloat16 autocast (the engine's mixed precision). One prepared
command for a lent GPU (well under 15 minutes)::

    python benchmarks/bench_train.py --device cuda --seconds 60 --output $OUT/bench_train.json
    python benchmarks/bench_train.py --seconds 60            # 2 CPU threads
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

EXTRA = {"paper-batch": ("standard", {"batch_size": 116})}  # name: (profile, overrides)


def measure(name: str, ct: Path, device: str, seconds: float, threads: int | None) -> dict:
    """images/s of one configuration, from the training engine's own progress events."""
    from xvrcore.learning.training import TrainSettings, profile_settings, train

    profile, overrides = EXTRA.get(name, (name, {}))
    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainSettings(volumes=[str(ct)], output=str(Path(tmp) / name), preset="pelvis", minutes=seconds / 60.0,
                             device=device, threads=threads, validate_every=0, validation_size=4, checkpoint_every=0,
                             checkpoint_minutes=1e9, progress_bar=False, **profile_settings(profile, **overrides))
        result = train(config, progress=events.append)
    progress = [e for e in events if e.get("event") == "progress"]
    return {"name": name, "image_size": config.image_size, "width": config.width, "batch_size": config.batch_size,
            "pose_loss_fraction": config.pose_loss_fraction, "device": device, "iterations": result.iterations,
            "images_per_s": progress[-1]["images_per_s"] if progress else float("nan")}


def main(argv=None) -> int:
    import torch
    from xvrcore.app.demo import PELVIS_CT, shared_data_dir
    from xvrcore.learning.training import PROFILES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", default=None, help="default: the shipped pelvis CT")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per configuration")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on CUDA)")
    parser.add_argument("--configs", nargs="+", choices=[*PROFILES, *EXTRA], default=None)
    parser.add_argument("--output", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    names = args.configs or [*PROFILES, *(EXTRA if args.device == "cuda" else ())]
    ct = Path(args.ct) if args.ct else shared_data_dir() / PELVIS_CT
    threads = args.threads if args.device == "cpu" else None
    rows = []
    for name in names:
        rows.append(measure(name, ct, args.device, args.seconds, threads))
        print(f"{name:12s} {rows[-1]['images_per_s']:8.1f} images/s ({rows[-1]['iterations']} iterations)", flush=True)
    reference = rows[0]["images_per_s"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"\n{device}; ratio against {rows[0]['name']}")
    print("| configuration | image | width | batch | loss | images/s | ratio |\n|---|---|---|---|---|---|---|")
    for r in rows:
        loss = "pose term" if r["pose_loss_fraction"] >= 1 else "paper"
        print(f"| {r['name']} | {r['image_size']}² | {r['width']} | {r['batch_size']} | {loss} | "
              f"{r['images_per_s']:.1f} | {r['images_per_s'] / reference:.2f} |")
    if args.output:
        Path(args.output).write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
