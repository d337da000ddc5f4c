"""Command-line interface: ``xvrcore demo``, ``xvrcore render``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

_EXPECTED_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, OSError)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.output, args.ct, size=args.size, method=args.method, progress=not args.quiet)
    print(f"wrote {len(summary['files'])} files to {Path(args.output).resolve()}:")
    for path in summary["files"]:
        print(f"  {Path(path).name}")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in summary["timings_s"].items())
    print(f"timings: {timings}")
    return 0


def _render(args: argparse.Namespace) -> int:
    import torch

    from .attenuation import to_attenuation
    from .carm import carm_pose
    from .geometry import Detector
    from .imaging import save_png, to_uint8
    from .pose_io import camera_pose, read_pose_json, write_pose_json
    from .renderer import DRRVolume, render
    from .volume import load_volume

    ct = load_volume(args.volume)
    volume = DRRVolume.from_volume(to_attenuation(ct, bone_multiplier=args.bone_multiplier))
    if args.pose:
        pose = read_pose_json(args.pose)
        intrinsics, c2w = pose.intrinsics, torch.as_tensor(pose.camera_to_world)
    else:
        det = Detector(args.sdd, args.size, args.size, args.spacing, args.spacing)
        intrinsics = det.intrinsics()
        c2w = carm_pose(torch.tensor(args.carm, dtype=torch.float64), args.orientation, torch.as_tensor(ct.center))
    drr = render(volume, c2w.float(), intrinsics, method=args.method)[0, 0].numpy()
    out = Path(args.output)
    save_png(out, to_uint8(drr))
    if not args.pose:
        write_pose_json(out.with_suffix(".json"), camera_pose(intrinsics, c2w, volume=Path(args.volume).name))
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvrcore", description="X-ray to CT/MRA registration core (SlicerXVR).")
    parser.add_argument("--version", action="version", version=f"xvrcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="render frontal and lateral DRRs of the shipped pelvis CT")
    demo.add_argument("--output", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--ct", help="CT to use instead of the shipped pelvis CT")
    demo.add_argument("--size", type=int, default=384, help="detector columns (default: %(default)s)")
    demo.add_argument("--method", choices=["trilinear", "siddon"], default="trilinear")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    render = sub.add_parser("render", help="render one DRR of a volume at a pose")
    render.add_argument("--volume", required=True, help="CT (NIfTI, NRRD, MHA or a DICOM folder)")
    where = render.add_mutually_exclusive_group(required=True)
    where.add_argument("--pose", help="pose JSON in the shared result format")
    where.add_argument("--carm", type=float, nargs=6, metavar=("ALPHA", "BETA", "GAMMA", "X", "Y", "Z"),
                       help="the paper's C-arm parameters (degrees, mm) about the volume centre")
    render.add_argument("--orientation", choices=["AP", "PA"], default="PA")
    render.add_argument("--sdd", type=float, default=1020.0, help="source-to-detector distance, mm")
    render.add_argument("--size", type=int, default=256, help="detector pixels per side")
    render.add_argument("--spacing", type=float, default=1.4, help="detector pixel spacing, mm")
    render.add_argument("--method", choices=["trilinear", "siddon"], default="trilinear")
    render.add_argument("--bone-multiplier", type=float, default=1.0)
    render.add_argument("--output", required=True, help="PNG to write (a pose JSON is written beside it)")
    render.set_defaults(func=_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _EXPECTED_ERRORS as exc:
        print(f"xvrcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xvrcore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
