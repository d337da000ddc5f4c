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
    python benchmarks/bench_train.py --profile 4             # where one standard iteration's time goes
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


def profile_stages(ct: Path, device: str, threads: int | None, iterations: int) -> dict[str, float]:
    """Median seconds per stage of one standard iteration (the first, which builds the pyramid, is dropped)."""
    import time

    from xvrcore.learning.network import to_world
    from xvrcore.learning.training import TrainSettings, profile_settings
    from xvrcore.learning.training.loop import Trainer
    from xvrcore.learning.training.model import predict
    from xvrcore.metrics.similarity import multiscale_ncc

    times: dict[str, list[float]] = {}

    def timed(stage, work):
        start = time.perf_counter()
        out = work()
        times.setdefault(stage, []).append(time.perf_counter() - start)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainSettings(volumes=[str(ct)], output=str(Path(tmp) / "profile"), preset="pelvis", device=device,
                               threads=threads, iterations=iterations + 1, validate_every=0, validation_size=4,
                               checkpoint_every=0, checkpoint_minutes=1e9, progress_bar=False,
                               **profile_settings("standard"))
        trainer = Trainer(config)
        setup = trainer.setup
        for iteration in range(iterations + 1):
            batch = timed("batch (render + augment)", lambda i=iteration: trainer.batches.draw(i, 0))
            centred = timed("forward", lambda b=batch: predict(trainer.network, b.inputs, setup.device))
            predicted = to_world(centred.float(), batch.target.center.to(setup.device))
            rendered = timed("render at prediction", lambda b=batch, p=predicted: b.target.render(
                p, setup.network.intrinsics, setup.level, b.multiplier))
            loss = timed("ncc", lambda b=batch, r=rendered: (1 - multiscale_ncc(b.images, r)).mean())
            trainer.optimizer.zero_grad(set_to_none=True)
            timed("backward", loss.backward)
            timed("optimizer step", trainer.optimizer.step)
        if trainer.lock is not None:
            trainer.lock.release()
    return {stage: sorted(t[1:])[len(t[1:]) // 2] for stage, t in times.items()}


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
    parser.add_argument("--profile", type=int, metavar="N", help="instead: time the stages of N standard iterations")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    names = args.configs or [*PROFILES, *(EXTRA if args.device == "cuda" else ())]
    ct = Path(args.ct) if args.ct else shared_data_dir() / PELVIS_CT
    threads = args.threads if args.device == "cpu" else None
    if args.profile:
        stages = profile_stages(ct, args.device, threads, args.profile)
        total = sum(stages.values())
        for stage, seconds in stages.items():
            print(f"{stage:26s} {1000 * seconds:8.1f} ms  {100 * seconds / total:5.1f} %")
        print(f"{'one iteration':26s} {1000 * total:8.1f} ms  ({32 / total:.1f} images/s at batch 32)")
        return 0
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
