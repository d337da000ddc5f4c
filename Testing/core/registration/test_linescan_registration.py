"""The head CT against its two real scouts: the header geometry already aligns them, and registration
(one rigid correction of the CT, both scouts) stays close to it, also from a wrong start.

Cheap: the scouts are area-downsampled 8× (46×104 pixels) and the renderer draws on a matching coarse
CT level. Figures at these settings (README, "Real projection images"): similarity 0.645 (AP) and 0.654
(lateral) at the header pose; registration moves the CT by 0.5° and 1.2 mm.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from xvrcore.drr import DRRVolume, render_linescan
from xvrcore.geometry.rotations import make_rigid
from xvrcore.metrics.similarity import ncc
from xvrcore.registration.linescan import (
    LineScanSettings,
    LineScanStage,
    LineScanView,
    localizer_view,
    pose_change,
    register_linescan,
    rigid_about,
    view_at,
    view_similarities,
)
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.readers import load_volume
from xvrcore.xray.localizer import read_localizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = torch.float64
FACTOR = 8
SETTINGS = LineScanSettings(stages=(LineScanStage(FACTOR, 40),))
NO_ROTATION = torch.zeros(3, dtype=D)


@pytest.fixture(scope="module")
def head(head_ct_path):
    """The CT as a DRR volume and both scouts as full-resolution views (AP, lateral)."""
    volume = DRRVolume.from_volume(to_attenuation(load_volume(head_ct_path)))
    folder = head_ct_path.parent / "localizers"
    views = [localizer_view(read_localizer(folder / f"localizer_{name}.dcm"), volume) for name in ("AP", "LAT")]
    return volume, views


def test_only_rows_inside_the_cts_slab_count(head):
    """The CT's slices span z = −19.25 … 145.75 mm (2.5 mm apart); the scout's row v lies at z = 150 − 0.545455 v."""
    _, views = head
    z_low, z_high = -19.25 - 1.25, 145.75 + 1.25  # the outer faces of the first and last slices
    rows = torch.arange(367, dtype=D)
    z, half = 150.0 - 0.545455 * rows, 0.545455 / 2
    expected = (z - half >= z_low) & (z + half <= z_high)
    for view in views:
        mask = view.mask
        assert bool((mask == mask[:, :1]).all())  # whole rows
        assert torch.equal(mask[:, 0] > 0, expected)
    assert int(expected.nonzero()[0]) == 6 and int(expected.nonzero()[-1]) == 312 and int(expected.sum()) == 307


def _shifted(volume, axis: int, mm: float = 10.0) -> torch.Tensor:
    shift = torch.zeros(3, dtype=D)
    shift[axis] = mm
    return rigid_about(NO_ROTATION, shift, volume.center)


def test_the_header_geometry_already_aligns_the_scouts(head):
    volume, views = head
    small = [view_at(v, FACTOR) for v in views]
    header = view_similarities(volume, small, torch.eye(4, dtype=D))
    assert min(header) > 0.55
    # polarity: the scouts as read (dense = high) correlate with the line integrals
    for view in small:
        drr = render_linescan(volume, view.camera_to_world, view.camera)
        assert float(ncc(drr, view.image, view.mask)[0]) > 0.98
    # 10 mm in the image plane (AP: x and z; lateral: y and z, RAS) costs much similarity
    for index, axes in ((0, (0, 2)), (1, (1, 2))):
        for axis in axes:
            moved = view_similarities(volume, [small[index]], _shifted(volume, axis))[0]
            assert moved < header[index] - 0.1, (index, axis, moved, header[index])


def _source_on_the_other_side(view: LineScanView) -> LineScanView:
    """The same pixel-to-plane mapping with the source on the opposite side of the rotation axis."""
    pose, camera = view.camera_to_world, view.camera
    x, y, z, source = pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3]
    flipped = make_rigid(torch.stack([-x, y, -z], 1), source + 2 * camera.plane_distance * z)
    return replace(view, camera=replace(camera, mirrored=not camera.mirrored), camera_to_world=flipped)


def test_the_source_is_on_the_side_the_header_implies(head):
    """The image is shown as seen from the detector, like every DICOM projection: the other side scores lower."""
    volume, views = head
    ap = view_at(views[0], FACTOR)
    identity = torch.eye(4, dtype=D)
    header = view_similarities(volume, [ap], identity)[0]
    other = view_similarities(volume, [_source_on_the_other_side(ap)], identity)[0]
    assert other < header - 0.05, (other, header)


def test_registration_stays_close_to_the_header_geometry(head):
    volume, views = head
    result = register_linescan(volume, views, settings=SETTINGS)
    assert result.rotation_deg < 2.0 and result.translation_mm < 3.0
    assert all(after >= before for after, before in zip(result.similarity, result.header_similarity, strict=True))


def test_registration_from_a_wrong_start_returns_to_the_header_geometry(head):
    volume, views = head
    start = rigid_about(torch.tensor([0.03, -0.02, 0.02], dtype=D), torch.tensor([4.0, -3.0, 3.0], dtype=D), volume.center)
    start_rotation, start_translation = pose_change(start, volume.center)
    assert start_rotation > 2.0 and start_translation > 5.0
    result = register_linescan(volume, views, start=start, settings=SETTINGS)
    assert result.rotation_deg < 1.0 and result.translation_mm < 2.0, (result.rotation_deg, result.translation_mm)
