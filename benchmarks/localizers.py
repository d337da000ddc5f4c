"""The head CT's two real scouts against their CT: similarity at the header pose, registration, overlays.

Reads ``open/ct/head_skull_dbdicom`` (the CT and its AP and lateral localizers, one study), renders
line-scan DRRs at the scouts' header geometry, registers each scout alone and both together (one
rigid correction of the CT), prints the README's table ("Real projection images") and writes the
overlays ``Resources/Screenshots/localizer_{ap,lat}_overlay.png``. One to two minutes on 2 CPU cores.

    python benchmarks/localizers.py [--data ../shared/data] [--no-pictures]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from xvrcore.drr import DRRVolume, render_linescan
from xvrcore.io.images import save_png
from xvrcore.io.overlay import overlay_picture
from xvrcore.metrics.similarity import ncc
from xvrcore.registration.linescan import (
    localizer_view,
    register_linescan,
    rigid_about,
    view_at,
    view_similarities,
)
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.readers import load_volume
from xvrcore.xray.localizer import read_localizer

ROOT = Path(__file__).resolve().parents[1]
STUDY = Path("open/ct/head_skull_dbdicom")
NAMES = ("AP", "LAT")
LEGEND_ROWS = 52  # a black band above the picture for the legend


def _polarity_check(volume, views) -> list[str]:
    """Global NCC of each scout (as read: dense = high) with its header-pose DRR."""
    lines = []
    for name, view in zip(NAMES, views, strict=True):
        small = view_at(view, 4)
        drr = render_linescan(volume, small.camera_to_world, small.camera)
        value = float(ncc(drr, small.image, small.mask)[0])
        lines.append(f"{name}: NCC(scout, DRR) at the header pose {value:+.4f} (dense = high as read)")
    return lines


def _registrations(volume, views) -> dict[str, object]:
    runs = {}
    for label, chosen in (("AP alone", [0]), ("LAT alone", [1]), ("both", [0, 1])):
        started = time.perf_counter()
        result = register_linescan(volume, [views[i] for i in chosen])
        runs[label] = (chosen, result, time.perf_counter() - started)
    return runs


def _print_table(volume, views, runs) -> None:
    print("| registered | view | similarity at the header pose | after registration | CT rotation | CT translation "
          "| motion (x, y, z mm, RAS) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (chosen, result, seconds) in runs.items():
        motion = torch.linalg.inv(result.correction)
        shift = motion[:3, :3] @ volume.center + motion[:3, 3] - volume.center
        xyz = ", ".join(f"{v:+.2f}" for v in shift.tolist())
        for slot, index in enumerate(chosen):
            print(f"| {label} | {NAMES[index]} | {result.header_similarity[slot]:.3f} | {result.similarity[slot]:.3f} "
                  f"| {result.rotation_deg:.2f}° | {result.translation_mm:.2f} mm | {xyz} | {seconds:.0f} |")
    shifted = rigid_about(torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64),
                          volume.center)
    small = [view_at(v, 4) for v in views]
    values = view_similarities(volume, small, shifted)
    print("header pose moved 10 mm along the table: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(NAMES, values, strict=True)))


def _head_box(mask, drr, margin: int = 12) -> tuple[slice, slice]:
    """Rows and columns around the CT's part of the scout (where the DRR has anatomy)."""
    inside = mask & (drr > 0.02 * drr.max())
    rows, cols = inside.any(1).nonzero()[0], inside.any(0).nonzero()[0]
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def _pictures(volume, views, localizers, result) -> None:
    """Full-resolution overlays cropped to the head, with a black band on top for the legend."""
    for index, (name, view) in enumerate(zip(NAMES, views, strict=True)):
        pose = result.correction @ view.camera_to_world
        with torch.no_grad():
            drr = render_linescan(volume, pose, view.camera)[0, 0].numpy()
        image, mask = view.image.numpy(), view.mask.numpy() > 0
        rows, cols = _head_box(mask, drr)
        band = np.zeros((LEGEND_ROWS, cols.stop - cols.start), np.float32)
        image, drr = (np.vstack([band + a[rows, cols].min(), a[rows, cols]]) for a in (image, drr))
        mask = np.vstack([band > 0, mask[rows, cols]])
        beam = localizers[index].beam.replace("→", "to")
        text = [f"{name} scout (beam {beam}); DRR edges after registration",
                f"similarity {result.header_similarity[index]:.3f} (header pose) -> {result.similarity[index]:.3f}",
                f"CT correction {result.rotation_deg:.2f} deg, {result.translation_mm:.2f} mm"]
        picture = overlay_picture(image, drr, mask=mask, text=text).quantize(64)  # grey and green: small PNGs
        path = save_png(ROOT / "Resources" / "Screenshots" / f"localizer_{name.lower()}_overlay.png", picture)
        print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pictures", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = args.data / STUDY
    volume = DRRVolume.from_volume(to_attenuation(load_volume(study / "head_ct.nii.gz")))
    localizers = [read_localizer(study / "localizers" / f"localizer_{name}.dcm") for name in NAMES]
    for name, loc in zip(NAMES, localizers, strict=True):
        print(f"{name}: {loc!r}")
        for line in loc.polarity_evidence + loc.warnings:
            print(f"    {line}")
    views = [localizer_view(loc, volume) for loc in localizers]
    print("\n".join(_polarity_check(volume, views)))
    runs = _registrations(volume, views)
    _print_table(volume, views, runs)
    if not args.no_pictures:
        _pictures(volume, views, localizers, runs["both"][1])


if __name__ == "__main__":
    main()
