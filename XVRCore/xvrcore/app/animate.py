"""``xvrcore animate``: the DRR over the X-ray as a registration's pose converges, as a GIF.

From a trajectory file (``xvrcore register --save-trajectory`` or ``--animate``:
:mod:`xvrcore.io.trajectory`), the volume and the X-ray it was recorded for, draw the frames of
:mod:`xvrcore.registration.animation` and write them as a looping GIF (atomically). The X-ray is read
with the frame and mask frame the trajectory records, and the DRRs use its recorded intrinsics (the
geometry the registration used, options such as ``--sdd`` included). Only GIF is written: no video
encoder ships with xvrcore.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import DEVICES, MODALITY_OPTIONS, add_options
from .option_types import Bounded

__all__ = ["add_animate", "run_animate"]

_PANEL_PIXELS = Bounded(int, low=128, high=1024)  # below 128 the caption does not fit


def add_animate(sub) -> None:
    """The ``animate`` sub-command's parser."""
    animate = sub.add_parser("animate", help="a GIF of the DRR over the X-ray as the registration converges")
    animate.add_argument("--volume", required=True, help="the CT or MRA the X-ray was registered to")
    add_options(animate, MODALITY_OPTIONS)
    animate.add_argument("--xray", required=True, help="the X-ray DICOM the trajectory was recorded for")
    animate.add_argument("--trajectory", required=True, help="<name>_trajectory.json (xvrcore register "
                                                              "--save-trajectory)")
    animate.add_argument("--output", required=True, help="the GIF to write")
    animate.add_argument("--fps", type=Bounded(float, low=0.5, high=50), default=10.0,
                         help="frames per second (default: %(default)s; the start and result are held longer)")
    animate.add_argument("--size", type=_PANEL_PIXELS, default=256,
                         help="pixels on the longer side of each of the two panels (default: %(default)s)")
    animate.add_argument("--device", choices=DEVICES, default="auto", help="where to render (default: %(default)s)")
    animate.set_defaults(func=run_animate)


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".gif":
        raise ValueError(f"{output}: only a GIF animation can be written (no video encoder is installed); "
                         "give a name ending in .gif")
    if output.is_dir():
        raise ValueError(f"{output}: is a folder; give the GIF's file name")


def run_animate(args: argparse.Namespace) -> int:
    """Write the animation; exit code 0 (a bad file raises ``ValueError`` naming it: exit code 2)."""
    import sys

    import torch

    from ..drr import DRRVolume
    from ..io.trajectory import read_trajectory
    from ..registration.animation import write_animation
    from ..volume.vessels import load_rendered_volume
    from ..xray import read_xray

    output = Path(args.output)
    _check_output(output)
    trajectory = read_trajectory(args.trajectory)
    xray = read_xray(args.xray, frame=trajectory.frame, mask_frame=trajectory.mask_frame)
    height, width = xray.pixels.shape[-2:]
    if (width, height) != trajectory.image_size:
        raise ValueError(f"{args.trajectory}: the trajectory is of a {trajectory.image_size[0]}×"
                         f"{trajectory.image_size[1]} image, but {Path(args.xray).name} is {width}×{height}; "
                         "give the X-ray it was recorded for")
    loaded = load_rendered_volume(args.volume, args.modality, args.vessels)
    if loaded.warning:
        print(f"xvrcore animate: warning: {loaded.warning}", file=sys.stderr)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    volume = DRRVolume.from_volume(loaded.attenuation, device=device)
    frames = write_animation(output, volume, xray.pixels, xray.mask, trajectory, fps=args.fps, longer_side=args.size)
    print(f"wrote {output} ({frames} frames)")
    return 0
