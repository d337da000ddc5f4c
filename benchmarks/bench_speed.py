"""Registration in seconds: the default schedule against a faster candidate, on the same X-rays, in one run.

For each CT (pelvis 1 mm, head 0.49 × 0.49 × 2.5 mm, torso 3 mm) and detector size (``--pixels``, the same
field of view as the accuracy harness's preset, so finer detectors have smaller pixels): ``--n`` realistic
synthetic XA DICOMs from ``xvrcore evaluate``'s generator (exact Siddon, photon noise, gain, blur,
collimation, cached in ``--workdir``), read back with our reader, each registered from the harness's
perturbed start (20–40 mm, up to 10°) and from its header, with

* **default**: ``xvrcore.registration.RegistrationSettings()``;
* **fast**: the candidate (:func:`fast_settings`): the middle stages end after one drop with a patience
  of 4, the polish renders from a CT level up to 2× coarser than its pixels, the searches up to 2.5×.

Both run in the same process, alternating per X-ray, so a busy machine slows both alike. Times are the
registration's own wall-clock seconds (the CT is loaded before the clock). Accuracy: mTRE at the harness's
target points. A second table gives the QA pictures' DRR per X-ray: at the X-ray's full size on the finest
level (as before) and at ``PICTURE_SIDE`` pixels (as written now). Run::

    python benchmarks/bench_speed.py [--n 2] [--pixels 256 512 1024] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

CTS = {  # name: (file under shared/data/open/ct, accuracy-harness preset)
    "pelvis": ("pelvis_vhf/pelvis_ct_vhf_1mm.nii.gz", "pelvis"),
    "head": ("head_skull_dbdicom/head_ct.nii.gz", "skull"),
    "torso": ("torso_totalseg/torso_ct_3mm.nii.gz", "pelvis"),
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open" / "ct"


def fast_settings():
    """The faster candidate schedule (see the module docstring)."""
    from xvrcore.registration import RegistrationSettings
    from xvrcore.registration.settings import DEFAULT_STAGES, RETRY_SEARCHES, SearchSettings

    s = DEFAULT_STAGES
    stages = (s[0], replace(s[1], patience=4, max_reductions=1), replace(s[2], patience=4, max_reductions=1),
              replace(s[3], lod_bias=2.0))
    return RegistrationSettings(stages=stages, search=SearchSettings(lod_bias=2.5),
                                retry_searches=tuple(replace(r, lod_bias=2.5) for r in RETRY_SEARCHES))


def picture_seconds(volume, pose, intrinsics, pixels, mask, full_size: bool) -> float:
    """Seconds of the QA pictures' X-ray and DRR: at the X-ray's size on the finest level (before) or as written
    now (:func:`xvrcore.registration.outputs.picture_images`)."""
    from xvrcore.drr import render
    from xvrcore.registration.outputs import picture_images

    t0 = time.perf_counter()
    if full_size:
        with torch.no_grad():
            render(volume, pose.to(volume.dtype), intrinsics, lod_bias=1.0)
    else:
        picture_images(volume, pose, pixels, intrinsics, mask)
    return time.perf_counter() - t0


def run_case(evaluation, index: int, schedules: dict, verbose: bool = False) -> list[dict]:
    """Both schedules on X-ray ``index`` from its perturbed and its header start."""
    from xvrcore.app.evaluate import perturb, pose_errors
    from xvrcore.geometry.positioner import pose_from_xray
    from xvrcore.registration import register
    from xvrcore.xray import read_xray

    rng = np.random.default_rng([0, index])
    dicom, true = evaluation._synthesise(index, rng)
    xray = read_xray(dicom)
    pixels, mask = torch.as_tensor(xray.pixels), torch.as_tensor(xray.mask)
    starts = {"perturbed": perturb(true, evaluation.center, rng, (20.0, 40.0), 10.0),
              "header": pose_from_xray(xray, evaluation.center)}
    rows = [{"schedule": "pictures", "index": index, **{
        size: round(picture_seconds(evaluation.volume, true, xray.intrinsics, pixels, mask, size == "full"), 3)
        for size in ("full", "capped")}}]
    for start_name, start in starts.items():
        for name, settings in schedules.items():
            t0 = time.perf_counter()
            result = register(evaluation.volume, pixels, xray.intrinsics, start, mask=mask, center=evaluation.center,
                              settings=settings)
            seconds = time.perf_counter() - t0
            error = pose_errors(true, result.camera_to_world, xray, evaluation.targets, evaluation.center)["mtre_mm"]
            rows.append({"schedule": name, "start": start_name, "index": index, "seconds": round(seconds, 3),
                         "mtre_mm": round(error, 4), "attempts": result.attempts,
                         "iterations": [s.iterations for s in result.stages]})
            if verbose:
                print(f"  {index} {start_name:9} {name:8} {seconds:6.2f} s  {error:6.2f} mm  attempts {result.attempts}  "
                      f"iterations {rows[-1]['iterations']}", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    times = sorted(r["seconds"] for r in rows)
    errors = [r["mtre_mm"] for r in rows]
    return {"n": len(rows), "median_s": statistics.median(times), "p90_s": float(np.percentile(times, 90)),
            "median_mtre_mm": statistics.median(errors), "below_1mm": sum(e < 1.0 for e in errors) / len(errors)}


def _line(label: str, old: dict, new: dict) -> str:
    return (f"| {label} | {old['median_s']:.1f} / {old['p90_s']:.1f} s | {new['median_s']:.1f} / {new['p90_s']:.1f} s "
            f"| {old['median_s'] / new['median_s']:.2f}× | {old['median_mtre_mm']:.2f} / {new['median_mtre_mm']:.2f} mm "
            f"| {100 * old['below_1mm']:.0f} / {100 * new['below_1mm']:.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--pixels", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--cts", nargs="+", default=list(CTS), choices=list(CTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/xvr_bench_speed")
    parser.add_argument("--json")
    parser.add_argument("--verbose", action="store_true", help="a line per registration")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from xvrcore.app.evaluate import Evaluation, EvaluationSettings
    from xvrcore.registration import RegistrationSettings

    schedules = {"default": RegistrationSettings(), "fast": fast_settings()}
    rows, pictures = [], []
    print("| CT, detector | default: median / p90 | fast: median / p90 | speed-up | median mTRE | < 1 mm |")
    print("|---|---|---|---|---|---|")
    for ct in args.cts:
        file, preset = CTS[ct]
        for pixels in args.pixels:
            evaluation = Evaluation(EvaluationSettings(str(DATA / file), f"{args.workdir}/{ct}_{pixels}", preset=preset,
                                                       n=args.n, pixels=pixels))
            case = [row | {"ct": ct, "pixels": pixels} for i in range(args.n) for row in run_case(evaluation, i, schedules, args.verbose)]
            pictures += [r for r in case if r["schedule"] == "pictures"]
            case = [r for r in case if r["schedule"] != "pictures"]
            rows += case
            old, new = (summary([r for r in case if r["schedule"] == s]) for s in schedules)
            print(_line(f"{ct} {pixels}²", old, new), flush=True)
    old, new = (summary([r for r in rows if r["schedule"] == s]) for s in schedules)
    print(_line("all", old, new))
    print("\n| CT, detector | QA pictures' DRR: full size | at most PICTURE_SIDE px |\n|---|---|---|")
    for key in dict.fromkeys((r["ct"], r["pixels"]) for r in pictures):
        mine = [r for r in pictures if (r["ct"], r["pixels"]) == key]
        full, capped = (statistics.median(r[size] for r in mine) for size in ("full", "capped"))
        print(f"| {key[0]} {key[1]}² | {full:.2f} s | {capped:.2f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "pictures": pictures, "default": old, "fast": new},
                                              indent=1))


if __name__ == "__main__":
    main()
