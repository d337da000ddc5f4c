"""Registration benchmark: xvrcore's refinement side by side with the xvr paper's test-time
optimisation re-implemented on DiffDRR 0.6.1, on the same synthetic X-rays from the same starts.

For each of ``--n`` X-rays of the pelvis CT (views drawn as in the accuracy harness,
``xvrcore.app.evaluate``): a realistic detector image (exact Siddon, photon noise, gain, blur,
collimation) is written as an XA DICOM and read back with our reader, which gives both methods
the same line-integral-like intensities (dense = high). The start is the harness's perturbation
of the true pose (20–40 mm, up to 10° about the volume centre). Then

* **ours**: ``xvrcore.registration.register`` with its default settings (full image + exposure
  mask);
* **reference**: the xvr paper's refinement, written here from the facts in
  ``shared/notes/xvr-upstream.md`` §11 on DiffDRR's public API: euler ZXY angles (rad) and a
  translation (mm) as two parameters; similarity ½ mNCC (½ global + ½ 9×9 patches) + ½ gradNCC
  (11×11 patches, σ = 0) from ``diffdrr.metrics``; stages at downsampling factors 4, 2, 1 (the
  detector rescaled, the X-ray area-averaged to match); per stage Adam(maximize) with
  lr_rot = 1e-2, lr_xyz = 1.0 divided by k = 1, 2, 8 and ReduceLROnPlateau(max, ×0.1, patience
  10, rel. threshold 1e-4); a stage ends after 2 LR reductions or ``--n-itrs`` iterations; DiffDRR's
  trilinear renderer with its default 500 points per ray. As ``xvr --crop`` would, the reference
  sees the X-ray centre-cropped symmetrically to inside the collimator (DiffDRR's metrics take no
  mask), and both images go through xvr's per-image min–max + Normalize(0.15, 0.1).

Both final poses are scored with the same mTRE (our convention, our target points). Times are
wall-clock seconds of the refinement only (the CT is loaded and our volume pyramid built before
the clock starts). Before benchmarking the script asserts that at the true pose both renderers'
DRRs match the X-ray (NCC > 0.99), so a mis-converted pose cannot make the reference look bad.

Run it in the benchmark environment (see the README)::

    python benchmarks/bench_register.py [--n 5] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_render import FOV, SDD, prepare_inputs

MIN_NCC = 0.99  # both renderers vs the X-ray at the true pose (the conversion check)
QUICK_ITERATIONS = 8


@dataclass(frozen=True)
class ReferenceSettings:
    """The paper's test-time optimisation (shared/notes/xvr-upstream.md §11)."""

    factors: tuple[int, ...] = (4, 2, 1)  # downsampling of the (cropped) X-ray per stage
    n_itrs: int = 500
    lr_rot: float = 1e-2  # rad
    lr_xyz: float = 1.0  # mm
    patience: int = 10
    threshold: float = 1e-4  # relative
    reduce_factor: float = 0.1
    max_reductions: int = 2
    voxel_shift: float = 0.5  # DiffDRR 0.6.1's exact value; xvr passes 0.0 (half a voxel off)


@dataclass
class Case:
    """One synthetic X-ray with its truth and start (our convention)."""

    xray: object  # xvrcore.xray.reader.XrayImage
    true: torch.Tensor
    start: torch.Tensor


# ---- problems -------------------------------------------------------------------------------------


def make_cases(mu, center: torch.Tensor, size: int, n: int, seed: int, workdir: Path) -> list[Case]:
    """Synthetic X-ray DICOMs read back with our reader, and perturbed starts (as the harness does)."""
    from xvrcore.app.evaluate import PRESETS, perturb, sample_true_pose
    from xvrcore.drr import DRRVolume
    from xvrcore.geometry.camera import Detector
    from xvrcore.xray import read_xray
    from xvrcore.xray.synthesis import SynthesisSettings, synthesize_xray, write_xray_dicom

    exact = DRRVolume.from_volume(mu, dtype=torch.float64)
    detector = Detector(SDD, size, size, FOV / size, FOV / size)  # DeepFluoro-like, 256² class
    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        true = sample_true_pose(PRESETS["pelvis"], center, rng)
        settings = SynthesisSettings(photons=float(rng.uniform(5e3, 5e4)), blur_sigma_px=float(rng.uniform(0.3, 1.0)),
                                     gain_variation=float(rng.uniform(0.0, 0.2)), store=("raw", "log")[i % 2])
        image = synthesize_xray(exact, true, detector, settings, rng)
        path = write_xray_dicom(workdir / f"xray_{i:03d}.dcm", image, detector, true, center, store=settings.store)
        start = perturb(true, center, rng, (20.0, 40.0), 10.0)
        cases.append(Case(read_xray(path), true, start))
    return cases


def symmetric_crop(mask: np.ndarray, multiple: int, margin: int = 2) -> int:
    """Pixels to cut from every side so the rest is exposed (``margin`` more for the blurred blade
    edges) and its size divides by ``multiple`` (so every stage's detector is exact)."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    c = max(rows.min(), cols.min(), h - 1 - rows.max(), w - 1 - cols.max()) + margin
    while (h - 2 * c) % multiple or (w - 2 * c) % multiple:
        c += 1
    if not mask[c:h - c, c:w - c].all():
        raise RuntimeError("the centre crop still contains collimated pixels")
    return int(c)


# ---- the reference: the paper's refinement on DiffDRR -----------------------------------------


def xvr_normalise(img: torch.Tensor) -> torch.Tensor:
    """xvr's per-image preprocessing before the metric: min–max to [0, 1], Normalize(0.15, 0.1)."""
    lo = img.amin((-1, -2), keepdim=True)
    hi = img.amax((-1, -2), keepdim=True)
    return ((img - lo) / (hi - lo + 1e-6) - 0.15) / 0.1


class PaperSimilarity(torch.nn.Module):
    """S = ½ mNCC + ½ gradNCC with DiffDRR's metric classes (mNCC = ½ global + ½ 9×9 patches;
    gradNCC over 11×11 patches without blur)."""

    def __init__(self) -> None:
        super().__init__()
        from diffdrr.metrics import (
            GradientNormalizedCrossCorrelation2d,
            MultiscaleNormalizedCrossCorrelation2d,
        )

        self.mncc = MultiscaleNormalizedCrossCorrelation2d(patch_sizes=[None, 9], patch_weights=[0.5, 0.5])
        self.gncc = GradientNormalizedCrossCorrelation2d(patch_size=11, sigma=0.0)

    def forward(self, target: torch.Tensor, drr: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.mncc(target, drr) + 0.5 * self.gncc(target, drr)


class DiffDRRReference:
    """The paper's refinement (shared/notes/xvr-upstream.md §11) on one DiffDRR ``DRR``.

    Poses are DiffDRR's (orientation "AP", ``reverse_x_axis=False``, CT centre at the origin);
    :func:`to_reference` / :func:`from_reference` convert from and to ours.
    """

    def __init__(self, hu_path: str, settings: ReferenceSettings) -> None:
        from diffdrr.data import read
        from diffdrr.drr import DRR

        self.settings = settings
        subject = read(hu_path, orientation="AP", bone_attenuation_multiplier=1.0, center_volume=True)
        # Detector set per X-ray and stage (set_intrinsics_); these values are placeholders.
        self.drr = DRR(subject, sdd=SDD, height=8, delx=1.0, x0=0.0, y0=0.0, reverse_x_axis=False,
                       renderer="trilinear", voxel_shift=settings.voxel_shift)
        self.similarity = PaperSimilarity()

    def set_detector(self, sdd: float, height: int, width: int, spacing: float) -> None:
        self.drr.set_intrinsics_(sdd=sdd, height=height, width=width, delx=spacing, dely=spacing, x0=0.0, y0=0.0)

    def render(self, pose: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` DRR of a DiffDRR pose at the current detector (no gradient)."""
        from diffdrr.pose import RigidTransform

        with torch.no_grad():
            return self.drr(RigidTransform(pose.reshape(1, 4, 4).float()))[0, 0]

    def register(self, xray: torch.Tensor, sdd: float, spacing: float, start: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Refine DiffDRR pose ``start`` on the (cropped, square-pixel) ``xray``; returns the final
        pose and a log (iterations per stage, last similarity per stage)."""
        from diffdrr.pose import RigidTransform

        rot, xyz = RigidTransform(start.reshape(1, 4, 4).float()).convert("euler_angles", "ZXY")
        rot = torch.nn.Parameter(rot.detach().clone())
        xyz = torch.nn.Parameter(xyz.detach().clone())
        log = {"iterations": [], "similarity": []}
        k = 1
        for stage, factor in enumerate(self.settings.factors):
            k *= 2**stage  # xvreg's step divisor: 1, 2, 8, 64, ...
            target = self._stage_target(xray, sdd, spacing, factor)
            iterations, value = self._run_stage(rot, xyz, target, k)
            log["iterations"].append(iterations)
            log["similarity"].append(value)
        final = self._pose(rot, xyz).detach().double()[0]
        return final, log

    def _stage_target(self, xray: torch.Tensor, sdd: float, spacing: float, factor: int) -> torch.Tensor:
        """Rescale the detector by ``factor`` and area-average the X-ray to its grid."""
        h, w = xray.shape[0] // factor, xray.shape[1] // factor
        self.set_detector(sdd, h, w, spacing * factor)
        small = F.interpolate(xray[None, None].float(), size=(h, w), mode="area")
        return xvr_normalise(small)

    @staticmethod
    def _pose(rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        from diffdrr.pose import convert

        return convert(rot, xyz, parameterization="euler_angles", convention="ZXY").matrix

    def _run_stage(self, rot, xyz, target: torch.Tensor, k: float) -> tuple[int, float]:
        s = self.settings
        optimizer = torch.optim.Adam([{"params": [rot], "lr": s.lr_rot / k}, {"params": [xyz], "lr": s.lr_xyz / k}],
                                     maximize=True)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=s.reduce_factor,
                                                               patience=s.patience, threshold=s.threshold,
                                                               threshold_mode="rel")
        lr, reductions, value, iteration = optimizer.param_groups[0]["lr"], 0, math.nan, 0
        for iteration in range(1, s.n_itrs + 1):
            optimizer.zero_grad()
            drr = self.drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
            score = self.similarity(target, xvr_normalise(drr)).mean()
            score.backward()
            optimizer.step()
            value = float(score.detach())
            scheduler.step(value)
            if optimizer.param_groups[0]["lr"] < lr:
                lr, reductions = optimizer.param_groups[0]["lr"], reductions + 1
            if reductions >= s.max_reductions:
                break
        return iteration, value


def to_reference(pose: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Our camera-to-world of a mirrored (DICOM) image -> DiffDRR pose (AP, reverse_x_axis=False)."""
    from xvrcore.geometry.carm import to_diffdrr

    p, reverse_x_axis = to_diffdrr(pose, True, "AP", center)
    assert not reverse_x_axis
    return p


def from_reference(pose: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    from xvrcore.geometry.carm import from_diffdrr

    p, mirrored = from_diffdrr(pose.double(), "AP", False, center)
    assert mirrored  # DiffDRR's AP image without x reversal is the detector-side (DICOM) view
    return p


# ---- checks -------------------------------------------------------------------------------------


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    from xvrcore.metrics.similarity import ncc

    return float(ncc(a.double(), b.double()))


def check_alignment(case: Case, crop: int, volume, reference: DiffDRRReference, center: torch.Tensor) -> dict:
    """NCC with the X-ray (cropped to the exposed field) of our DRR and DiffDRR's at the true pose."""
    from xvrcore.drr import render

    det = case.xray.detector
    h, w = det.rows - 2 * crop, det.cols - 2 * crop
    xray = torch.as_tensor(case.xray.pixels)[crop:crop + h, crop:crop + w]
    ours = render(volume, case.true.to(volume.dtype), case.xray.intrinsics)[0, 0].detach()[crop:crop + h, crop:crop + w]
    reference.set_detector(det.sdd, h, w, det.col_spacing)
    theirs = reference.render(to_reference(case.true, center))
    back = from_reference(to_reference(case.start, center).float(), center)
    out = {"ncc_ours_xray": _ncc(ours, xray), "ncc_diffdrr_xray": _ncc(theirs, xray),
           "ncc_ours_diffdrr": _ncc(ours, theirs), "roundtrip_mm": float((back - case.start)[:3, 3].abs().max())}
    if min(out["ncc_ours_xray"], out["ncc_diffdrr_xray"]) < MIN_NCC or out["roundtrip_mm"] > 1e-2:
        raise AssertionError(f"pose/geometry conversion check failed: {out}")
    return out


# ---- one case -----------------------------------------------------------------------------------


def run_case(case: Case, volume, reference: DiffDRRReference, our_settings, targets, center) -> dict:
    from xvrcore.app.evaluate import pose_errors
    from xvrcore.registration import register

    xray = case.xray
    crop = symmetric_crop(xray.mask, max(reference.settings.factors))
    row = {"crop_px": crop, "check": check_alignment(case, crop, volume, reference, center),
           "start_mtre_mm": pose_errors(case.true, case.start, xray, targets, center)["mtre_mm"]}
    _warm_up(volume, case.start, xray, our_settings)

    t0 = time.perf_counter()
    ours = register(volume, torch.as_tensor(xray.pixels), xray.intrinsics, case.start,
                    mask=torch.as_tensor(xray.mask), center=center, settings=our_settings)
    row["ours"] = {"seconds": time.perf_counter() - t0, "similarity": ours.similarity,
                   "iterations": [s.iterations for s in ours.stages], "attempts": ours.attempts,
                   **pose_errors(case.true, ours.camera_to_world, xray, targets, center)}

    det = xray.detector
    cropped = torch.as_tensor(xray.pixels)[crop:det.rows - crop, crop:det.cols - crop]
    t0 = time.perf_counter()
    final, log = reference.register(cropped, det.sdd, det.col_spacing, to_reference(case.start, center))
    row["reference"] = {"seconds": time.perf_counter() - t0, **log,
                        **pose_errors(case.true, from_reference(final, center), xray, targets, center)}
    return row


def _warm_up(volume, pose: torch.Tensor, xray, settings) -> None:
    """Build the volume pyramid levels and slice stacks our stages use (setup, not timed)."""
    from xvrcore.drr import render
    from xvrcore.registration import downsample_xray

    with torch.no_grad():
        for stage in settings.stages:
            _, k = downsample_xray(torch.as_tensor(xray.pixels), xray.intrinsics, stage.size)
            render(volume, pose.to(volume.dtype), k, method=settings.method)


# ---- report ---------------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in ("ours", "reference"):
        t = np.array([r[name]["seconds"] for r in rows])
        e = np.array([r[name]["mtre_mm"] for r in rows])
        out[name] = {"median_seconds": float(np.median(t)), "median_mtre_mm": float(np.median(e)),
                     "submm_rate": float(np.mean(e < 1.0)), "n": len(rows)}
    out["median_time_ratio_reference_over_ours"] = out["reference"]["median_seconds"] / out["ours"]["median_seconds"]
    return out


def table(rows: list[dict], summary: dict) -> str:
    lines = ["| X-ray | start mTRE | ours s | ours mTRE | reference s | reference mTRE | reference iterations | time ratio (ref/ours) |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        o, ref = r["ours"], r["reference"]
        lines.append(f"| {i} | {r['start_mtre_mm']:.1f} mm | {o['seconds']:.1f} | {o['mtre_mm']:.2f} mm | "
                     f"{ref['seconds']:.1f} | {ref['mtre_mm']:.2f} mm | {'+'.join(map(str, ref['iterations']))} | "
                     f"{ref['seconds'] / o['seconds']:.2f} |")
    o, ref = summary["ours"], summary["reference"]
    lines.append(f"| **median** | | {o['median_seconds']:.1f} | {o['median_mtre_mm']:.2f} mm | {ref['median_seconds']:.1f} | "
                 f"{ref['median_mtre_mm']:.2f} mm | | {summary['median_time_ratio_reference_over_ours']:.2f} |")
    lines.append(f"| **< 1 mm** | | | {100 * o['submm_rate']:.0f} % | | {100 * ref['submm_rate']:.0f} % | | |")
    return "\n".join(lines)


def _quick_settings(settings, n_itrs: int):
    """Ours with every stage capped at ``n_itrs`` iterations and no retries (smoke runs only)."""
    stages = tuple(replace(s, iterations=min(s.iterations, n_itrs)) for s in settings.stages)
    return replace(settings, stages=stages, retry_searches=())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", default=None, help="CT (default: the shared pelvis CT)")
    parser.add_argument("--n", type=int, default=5, help="number of X-rays")
    parser.add_argument("--size", type=int, default=256, help="detector pixels per side (field of view fixed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-itrs", type=int, default=500, help="reference: iteration cap per stage")
    parser.add_argument("--voxel-shift", type=float, default=0.5, help="reference: DiffDRR voxel_shift (xvr uses 0.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: 1 X-ray, {QUICK_ITERATIONS} iterations per stage")
    parser.add_argument("--json", help="write the configuration, per-X-ray rows and summary to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_itrs = 1, min(args.n_itrs, QUICK_ITERATIONS)
    torch.set_num_threads(args.threads)

    from xvrcore.app.demo import PELVIS_CT, shared_data_dir
    from xvrcore.app.evaluate import target_points
    from xvrcore.drr import DRRVolume
    from xvrcore.registration import RegistrationSettings
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation

    ct_path = Path(args.ct) if args.ct else shared_data_dir() / PELVIS_CT
    ct = load_volume(ct_path)
    mu = to_attenuation(ct)
    center = torch.as_tensor(ct.center, dtype=torch.float64)
    volume = DRRVolume.from_volume(mu)
    targets = target_points(mu, 30, np.random.default_rng(args.seed))
    ours_settings = RegistrationSettings()
    if args.quick:
        ours_settings = _quick_settings(ours_settings, QUICK_ITERATIONS)
    ref_settings = ReferenceSettings(n_itrs=args.n_itrs, voxel_shift=args.voxel_shift)

    rows = []
    with tempfile.TemporaryDirectory(prefix="xvr-bench-register-") as tmp:
        inputs = prepare_inputs(ct_path, Path(tmp))
        reference = DiffDRRReference(inputs["diffdrr"], ref_settings)
        cases = make_cases(mu, center, args.size, args.n, args.seed, Path(tmp))
        for i, case in enumerate(cases):
            rows.append(run_case(case, volume, reference, ours_settings, targets, center))
            r = rows[-1]
            print(f"X-ray {i}: start {r['start_mtre_mm']:.1f} mm | ours {r['ours']['seconds']:.1f} s "
                  f"{r['ours']['mtre_mm']:.2f} mm | reference {r['reference']['seconds']:.1f} s "
                  f"{r['reference']['mtre_mm']:.2f} mm | check {json.dumps({k: round(v, 4) for k, v in r['check'].items()})}",
                  flush=True)
    summary = summarise(rows)
    from importlib.metadata import version

    env = {"torch": torch.__version__, "diffdrr": version("diffdrr"), "threads": torch.get_num_threads(), "device": "cpu"}
    print(f"\n{env}; {args.size}² detector, sdd {SDD} mm, field {FOV} mm; reference: {asdict(ref_settings)}"
          + ("; QUICK smoke run (iterations capped, numbers not meaningful)" if args.quick else "") + "\n")
    print(table(rows, summary))
    if args.json:
        payload = {"config": {**vars(args), "reference": asdict(ref_settings)}, "environment": env,
                   "rows": rows, "summary": summary}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
