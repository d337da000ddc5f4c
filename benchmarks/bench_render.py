"""DRR rendering benchmark: xvrcore side by side with DiffDRR 0.6.1 and nanodrr 0.1.7, same run.

For each configuration (128×128 at batch 1, 8 and 32, 256×256 at batch 1; forward, and
forward+backward with respect to the pose) every renderer runs in a fresh process
(``harness.run_isolated``), which reports images/s and the extra peak memory of rendering
(above the memory held after loading). The table gives ratios against nanodrr measured in the
same run, because this machine's speed varies from run to run.

Accuracy: each renderer's images of the same poses are compared (NCC, and NCC of the Sobel
gradient images, which is more sensitive to sharpness and aliasing) with a reference: xvrcore's
exact Siddon integration at full CT resolution in float64, each pixel the mean of 2×2 sub-pixel
rays. All renderers integrate the same attenuation field: DiffDRR and nanodrr each read a
pseudo-HU copy of the CT on which their HU→density model is linear (an affine image of our
attenuation volume), so differences come from the rendering alone.

Run it in the benchmark environment (see the README)::

    python benchmarks/bench_render.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import measure_throughput, run_isolated

POSE_SEED = 20261127
# DeepFluoro-like geometry of the xvr paper: sdd 1020 mm, a 278.6 mm detector.
SDD, FOV = 1020.0, 278.6
CONFIGS = [(128, 1), (128, 8), (128, 32), (256, 1)]
MODES = ("forward", "forward_backward")


def random_poses(n: int, seed: int = POSE_SEED) -> tuple[list, list]:
    """DiffDRR-convention poses (euler ZXY radians, mm) around an AP view of the pelvis."""
    g = np.random.default_rng(seed)
    rot = np.stack([g.uniform(-0.35, 0.35, n), g.uniform(-0.17, 0.17, n), g.uniform(-0.09, 0.09, n)], 1)
    xyz = np.stack([g.uniform(-20, 20, n), g.uniform(800, 900, n), g.uniform(-20, 20, n)], 1)
    return rot.tolist(), xyz.tolist()


# ---- xvrcore as a benchmark target (runs in the child process) -----------------------------------


class XvrRenderer:
    """xvrcore with the same inputs as the competitors: DiffDRR-convention poses, AP, no x reversal."""

    def __init__(self, mu_path: str, sdd: float, height: int, delx: float, method="trilinear", level="auto",
                 lod_bias: float | None = None, dtype=torch.float32, subpixel: int = 1):
        from xvrcore.drr import DRRVolume
        from xvrcore.geometry.camera import Detector, pixel_grid
        from xvrcore.volume import load_volume

        mu = load_volume(mu_path, kind="attenuation")
        self.volume = DRRVolume.from_volume(mu, dtype=dtype)
        self.iso = torch.as_tensor(mu.center)
        self.intrinsics = Detector(sdd, height, height, delx, delx, mirrored=True).intrinsics()
        self.options = dict(method=method, level=level)
        if lod_bias is not None:  # else the renderer's default
            self.options["lod_bias"] = lod_bias
        self.shape = (height, height)
        self.subpixel = subpixel
        self.pixels = None
        if subpixel > 1:
            offsets = (torch.arange(subpixel, dtype=torch.float64) + 0.5) / subpixel - 0.5
            grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1)
            self.pixels = (pixel_grid(height, height, dtype=torch.float64)[:, :, None, None] + grid).reshape(-1, 2)

    def _poses(self, rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        from xvrcore.geometry.carm import from_diffdrr
        from xvrcore.geometry.rotations import euler_to_matrix, make_rigid

        r = euler_to_matrix(rot, "ZXY")
        pose, mirrored = from_diffdrr(make_rigid(r, (r @ xyz[..., None])[..., 0]), "AP", False, self.iso)
        assert mirrored  # DiffDRR's AP image without x reversal is the detector-side view
        return pose

    def render_with_grad(self, rot: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        from xvrcore.drr import render

        poses = self._poses(rot.reshape(-1, 3), xyz.reshape(-1, 3)).to(self.volume.dtype)
        img = render(self.volume, poses, self.intrinsics, self.pixels, **self.options)
        if self.subpixel > 1:
            img = img.reshape(img.shape[0], *self.shape, self.subpixel**2).mean(-1)
        return img.reshape(-1, *self.shape)

    def render(self, rot, xyz) -> torch.Tensor:
        with torch.no_grad():
            return self.render_with_grad(torch.as_tensor(rot, dtype=torch.float64), torch.as_tensor(xyz, dtype=torch.float64))


def bench_xvr(mu_path: str, sdd: float, height: int, delx: float, batch_size: int, mode: str, rot, xyz,
              method: str = "trilinear", level="auto", lod_bias: float | None = None, min_seconds: float = 3.0,
              warmup: int = 1, n_threads: int = 2, mark_baseline=None) -> dict:
    torch.set_num_threads(int(n_threads))
    t0 = time.perf_counter()
    r = XvrRenderer(mu_path, sdd, height, delx, method, level, lod_bias)
    rot_t = torch.as_tensor(rot, dtype=torch.float32).reshape(-1, 3)[:batch_size]
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32).reshape(-1, 3)[:batch_size]
    r.render(rot_t, xyz_t)  # builds the pyramid level and slice stacks this view needs (setup)
    setup_s = time.perf_counter() - t0
    if mode == "forward":
        def fn():
            return r.render(rot_t, xyz_t)
    else:
        rot_t.requires_grad_(True)
        xyz_t.requires_grad_(True)

        def fn():
            rot_t.grad = xyz_t.grad = None
            img = r.render_with_grad(rot_t, xyz_t)
            img.mean().backward()
            return img
    if mark_baseline is not None:
        mark_baseline()
    res = measure_throughput(fn, batch_size, min_seconds=min_seconds, warmup=warmup)
    res.update(mode=mode, batch_size=batch_size, height=height, setup_s=setup_s, torch_version=torch.__version__)
    return res


# ---- inputs for everyone --------------------------------------------------------------------------


def prepare_inputs(ct_path: Path, workdir: Path) -> dict:
    """Our attenuation volume, and pseudo-HU copies on which each competitor's model is linear."""
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation

    mu = to_attenuation(load_volume(ct_path))
    peak = float(mu.data.max())
    paths = {"xvrcore": workdir / "mu.nii.gz", "diffdrr": workdir / "hu_diffdrr.nii.gz", "nanodrr": workdir / "hu_nanodrr.nii.gz"}
    mu.save(paths["xvrcore"])
    # DiffDRR: linear for HU > -800 (then min-max normalised, air at the minimum -> 0).
    mu.with_data((-799.0 + 2000.0 * mu.data / peak).astype(np.float32), kind="generic").save(paths["diffdrr"])
    # nanodrr: mu_w (1 + HU/1000) is linear for HU <= 0 and 0 at -1000.
    mu.with_data((-1000.0 + 1000.0 * mu.data / peak).astype(np.float32), kind="generic").save(paths["nanodrr"])
    return {k: str(v) for k, v in paths.items()}


RENDERERS = {
    # name: (target, input key, extra kwargs)
    "xvrcore trilinear": ("bench_render:bench_xvr", "xvrcore", {"method": "trilinear"}),
    "xvrcore trilinear L0": ("bench_render:bench_xvr", "xvrcore", {"method": "trilinear", "level": 0}),
    "xvrcore siddon": ("bench_render:bench_xvr", "xvrcore", {"method": "siddon"}),
    "nanodrr": ("competitors:bench", "nanodrr", {"competitor": "nanodrr"}),
    "DiffDRR trilinear": ("competitors:bench", "diffdrr", {"competitor": "diffdrr_trilinear"}),
    "DiffDRR siddon": ("competitors:bench", "diffdrr", {"competitor": "diffdrr_siddon"}),
}


def _kwargs(name: str, inputs: dict, height: int, batch: int, mode: str, rot, xyz, min_seconds: float) -> dict:
    target, key, extra = RENDERERS[name]
    path_key = "mu_path" if target.startswith("bench_render") else "ct_path"
    return {path_key: inputs[key], "sdd": SDD, "height": height, "delx": FOV / height, "batch_size": batch,
            "mode": mode, "rot": rot[:batch], "xyz": xyz[:batch], "min_seconds": min_seconds, "warmup": 1,
            "n_threads": 2, **extra}


def measure_speed(inputs: dict, names: list[str], configs, modes, min_seconds: float, memory_limit_mb: float) -> list[dict]:
    rot, xyz = random_poses(max(b for _, b in configs))
    rows = []
    for height, batch in configs:
        for mode in modes:
            for name in names:
                if name == "DiffDRR siddon" and (batch > 8 or mode == "forward_backward"):
                    rows.append({"name": name, "height": height, "batch": batch, "mode": mode, "ok": False,
                                 "error": "skipped (needs ~0.8 GB per 128² image: OOM at batch 32 here)"})
                    continue
                res = run_isolated(RENDERERS[name][0], _kwargs(name, inputs, height, batch, mode, rot, xyz, min_seconds),
                                   n_threads=2, max_rss_mb=memory_limit_mb, raise_on_error=False, timeout=900)
                res.update(name=name, height=height, batch=batch, mode=mode)
                rows.append(res)
                print(_speed_line(res), flush=True)
    return rows


def _speed_line(r: dict) -> str:
    head = f"{r['name']:22s} {r['height']:>3d}² B={r['batch']:<3d} {r['mode']:17s}"
    if not r.get("ok"):
        return f"{head} FAILED: {r.get('error_kind', '')} {r.get('error', '')}"[:200]
    return f"{head} {r['images_per_s']:8.2f} img/s  extra peak {r['extra_peak_mb']:7.0f} MiB"


# ---- accuracy -------------------------------------------------------------------------------------


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x - x.mean()) / x.std()


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((_standardise(a) * _standardise(b)).mean())


def _grad_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    from xvrcore.metrics.similarity import gradient_ncc

    return float(gradient_ncc(a.double(), b.double(), patch_size=None).mean())


def measure_accuracy(inputs: dict, names: list[str], heights, n_poses: int) -> dict:
    """NCC and gradient-NCC of every renderer against the fine Siddon reference, per resolution."""
    from competitors import COMPETITORS, make_poses

    rot, xyz = random_poses(n_poses)
    out: dict = {}
    for height in heights:
        delx = FOV / height
        t0 = time.perf_counter()
        ref = XvrRenderer(inputs["xvrcore"], SDD, height, delx, "siddon", 0, dtype=torch.float64, subpixel=2).render(rot, xyz)
        print(f"reference {height}²: {time.perf_counter() - t0:.0f} s", flush=True)
        for name in names:
            target, key, extra = RENDERERS[name]
            if target.startswith("bench_render"):
                opts = {k: v for k, v in extra.items() if k != "method"}
                img = XvrRenderer(inputs[key], SDD, height, delx, extra["method"], **opts).render(rot, xyz)
            else:
                img = COMPETITORS[extra["competitor"]](inputs[key], SDD, height, delx).render(make_poses(rot, xyz))
            scores = [(_ncc(img[i], ref[i]), _grad_ncc(img[i], ref[i])) for i in range(n_poses)]
            out[(name, height)] = tuple(np.mean(scores, 0))
            print(f"{name:22s} {height}²: NCC {out[(name, height)][0]:.6f}  gradient NCC {out[(name, height)][1]:.4f}", flush=True)
    return out


# ---- report ---------------------------------------------------------------------------------------


def report(rows: list[dict], accuracy: dict, names: list[str]) -> str:
    lines = ["| config | mode | renderer | images/s | × nanodrr | extra peak MiB | NCC | gradient NCC |",
             "|---|---|---|---|---|---|---|---|"]
    by_key = {(r["name"], r["height"], r["batch"], r["mode"]): r for r in rows}
    for height, batch in sorted({(r["height"], r["batch"]) for r in rows}):
        for mode in MODES:
            base = by_key.get(("nanodrr", height, batch, mode))
            for name in names:
                r = by_key.get((name, height, batch, mode))
                if r is None:
                    continue
                acc = accuracy.get((name, height), (float("nan"), float("nan")))
                if r.get("ok"):
                    ratio = r["images_per_s"] / base["images_per_s"] if base and base.get("ok") else float("nan")
                    speed = f"{r['images_per_s']:.2f} | {ratio:.2f} | {r['extra_peak_mb']:.0f}"
                else:
                    speed = f"{r.get('error_kind') or r.get('error', '')} | – | –"
                lines.append(f"| {height}² B={batch} | {mode.replace('_', '+')} | {name} | {speed} | {acc[0]:.6f} | {acc[1]:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", default=None, help="CT (default: the shared pelvis CT)")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 128² batch 1 and 8 only")
    parser.add_argument("--renderers", nargs="*", default=list(RENDERERS), choices=list(RENDERERS))
    parser.add_argument("--accuracy-poses", type=int, default=2)
    parser.add_argument("--memory-limit-mb", type=float, default=14000, help="kill a renderer above this RSS")
    parser.add_argument("--json", help="write all measurements to this file")
    args = parser.parse_args(argv)
    from competitors import DEFAULT_CT

    configs = CONFIGS[:2] if args.quick else CONFIGS
    with tempfile.TemporaryDirectory(prefix="xvr-bench-") as tmp:
        inputs = prepare_inputs(Path(args.ct or DEFAULT_CT), Path(tmp))
        accuracy = measure_accuracy(inputs, args.renderers, sorted({h for h, _ in configs}), args.accuracy_poses)
        rows = measure_speed(inputs, args.renderers, configs, MODES, 1.0 if args.quick else 3.0, args.memory_limit_mb)
    table = report(rows, accuracy, args.renderers)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, CPU; reference: exact Siddon, full "
          "resolution, 2×2 rays per pixel, float64\n")
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "accuracy": {f"{k[0]} {k[1]}": v for k, v in accuracy.items()}},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
