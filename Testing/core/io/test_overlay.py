"""QA pictures: outlines on the projected structure boundary, edges on the DRR's true edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from xvrcore.drr import DRRVolume, render, structure_masks
from xvrcore.geometry.camera import Detector, camera_directions, pixel_grid
from xvrcore.geometry.positioner import pose_from_positioner
from xvrcore.io.images import to_uint8
from xvrcore.io.label_names import read_label_names
from xvrcore.io.overlay import (
    EDGE_COLOR,
    checkerboard_picture,
    drr_edges,
    gradient_magnitude,
    outline,
    overlay_picture,
)
from xvrcore.volume import load_labelmap, load_volume, volume_from_array
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.labels import structure_volumes


@pytest.fixture(scope="module")
def spine(shared_data):
    folder = shared_data / "open" / "ct" / "torso_totalseg"
    ct = load_volume(folder / "torso_ct_3mm_crop30.nii.gz")
    labels = load_labelmap(folder / "torso_ct_3mm_crop30_labels.nii.gz", reference=ct)
    detector = Detector(1000.0, 160, 200, 1.2, 1.2)
    pose = pose_from_positioner(20.0, -10.0, 650.0, torch.as_tensor(ct.center)).numpy()
    return ct, labels, detector.intrinsics(), pose


def _projected_voxel_centres(labels, label, pose, k) -> tuple[np.ndarray, np.ndarray]:
    centres = labels.ijk_to_ras(np.argwhere(labels.data == label)[:, ::-1].astype(np.float64))
    w2c = np.linalg.inv(pose)
    cam = centres @ w2c[:3, :3].T + w2c[:3, 3]
    uv = np.c_[k.fx * cam[:, 0] / cam[:, 2] + k.cx, k.fy * cam[:, 1] / cam[:, 2] + k.cy]
    return uv, cam[:, 2]


def _nearest(points: np.ndarray, centres: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Distance from each point to the nearest centre (in chunks: the liver has ~40 000 voxels)."""
    return np.concatenate([np.linalg.norm(points[i : i + chunk, None] - centres[None], axis=-1).min(1)
                           for i in range(0, len(points), chunk)])


@pytest.mark.parametrize("label", [31, 5])  # a vertebra and the liver (cut by the field of view)
def test_outlines_lie_on_the_projected_structure_boundary(spine, label):
    _, labels, k, pose = spine
    volumes = {lab: DRRVolume.from_volume(v) for lab, v in structure_volumes(labels, [label]).items()}
    silhouette = structure_masks(volumes, pose, k)[label]
    assert silhouette.shape == (k.height, k.width)
    uv, depth = _projected_voxel_centres(labels, label, pose, k)
    pix = np.round(uv).astype(int)
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < k.width) & (pix[:, 1] >= 0) & (pix[:, 1] < k.height)
    # Every voxel's centre is inside the silhouette: the nearest pixel's ray passes through its voxel.
    assert silhouette[pix[inside, 1], pix[inside, 0]].all()
    edge = outline(silhouette)
    rows, cols = np.nonzero(edge)
    assert 0 < len(rows) < 0.5 * silhouette.sum()
    # Every outline pixel is within one projected voxel (half-diagonal) of a voxel centre ...
    reach = np.sqrt(3) / 2 * 3.0 * abs(k.fx) / depth.min() + np.sqrt(0.5)
    assert _nearest(np.c_[cols, rows].astype(float), uv).max() <= reach
    # ... and on the silhouette's border: a 4-neighbour inside the image is outside the silhouette.
    padded = np.pad(silhouette, 1, mode="edge")
    outside = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    assert np.array_equal(edge, silhouette & outside)


def _ball(radius: float, value: float = 0.02, n: int = 64, sub: int = 4):
    """A ball with partial-volume voxels (a voxelised staircase would add ripples, hence edges, inside)."""
    c = (n - 1) / 2
    grid = np.arange(n, dtype=np.float64)
    frac = np.zeros((n, n, n))
    for dk, dj, di in np.ndindex(sub, sub, sub):
        k, j, i = np.meshgrid(*(grid + (d + 0.5) / sub - 0.5 for d in (dk, dj, di)), indexing="ij")
        frac += (i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2 <= radius**2
    affine = np.eye(4)
    affine[:3, 3] = -c  # the ball's centre at the origin
    return volume_from_array((frac / sub**3 * value).astype(np.float32), affine, kind="attenuation")


def test_drr_edges_lie_on_the_silhouette_of_a_ball():
    radius = 25.0
    k = Detector(1000.0, 128, 128, 1.0, 1.0).intrinsics()
    pose = pose_from_positioner(30.0, 10.0, 600.0, torch.zeros(3, dtype=torch.float64))
    drr = render(DRRVolume.from_volume(_ball(radius)), pose.float(), k)[0, 0].numpy()
    edges = drr_edges(drr)
    # Distance from the ball's centre to each pixel's ray: the silhouette is where it equals R.
    d = camera_directions(k, pixel_grid(128, 128, dtype=torch.float64)).numpy()
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    to_centre = (np.linalg.inv(pose.numpy()) @ np.r_[0.0, 0.0, 0.0, 1.0])[:3]  # centre in camera coordinates
    miss = np.linalg.norm(np.cross(d, to_centre), axis=-1)
    footprint = 600.0 / abs(k.fx)  # mm per pixel at the ball
    assert edges.sum() > 100
    on_rim = np.abs(miss[edges] - radius) < 1.5 * footprint + 0.5  # 1 mm voxels, 1 px blur
    assert on_rim.mean() > 0.98
    ring = np.abs(miss - radius) < 0.5 * footprint
    rr, cc = np.nonzero(ring)
    er, ec = np.nonzero(edges)
    gap = np.min(np.hypot(rr[:, None] - er[None], cc[:, None] - ec[None]), axis=1)
    assert (gap <= 2).mean() > 0.95  # the whole silhouette is found
    _, _, mag = gradient_magnitude(drr)
    assert mag[edges].mean() > 5 * mag[~edges].mean()


def test_overlay_picture_content(spine):
    ct, labels, k, pose = spine
    volume = DRRVolume.from_volume(to_attenuation(ct))
    drr = render(volume, torch.as_tensor(pose).float(), k)[0, 0].numpy()
    xray = drr + np.random.default_rng(0).normal(0, 0.02, drr.shape)
    mask = np.zeros(drr.shape, bool)
    mask[5:-5, 8:-8] = True
    volumes = {lab: DRRVolume.from_volume(v) for lab, v in structure_volumes(labels, [31, 32]).items()}
    silhouettes = structure_masks(volumes, pose, k)
    colors = {31: (255, 0, 0), 32: (0, 0, 255)}
    picture = overlay_picture(xray, drr, mask=mask, structures=silhouettes, names={31: "L4", 32: "L3"},
                              colors=colors, text=["similarity 0.900"])
    assert picture.size == (k.width, k.height) and picture.mode == "RGB"
    rgb = np.asarray(picture).astype(int)
    legend = np.zeros(drr.shape, bool)
    legend[:60, :110] = True  # the legend box (top left), generously
    for label, color in colors.items():
        line = outline(silhouettes[label]) & ~legend
        assert (rgb[line] == color).all(-1).mean() > 0.8  # text labels cover a few pixels
    edges = drr_edges(drr) & mask & ~legend
    for label in colors:
        edges &= ~outline(silhouettes[label])
    tinted = rgb[edges]
    green = (tinted[:, 1] > tinted[:, 0] + 30) & (tinted[:, 1] > tinted[:, 2] + 30)
    assert len(tinted) > 50 and green.mean() > 0.97  # the structures' name labels cover a few
    assert EDGE_COLOR[1] == 255
    grey = to_uint8(xray, mask=mask)
    plain = ~legend & ~drr_edges(drr) & ~np.any([outline(s) for s in silhouettes.values()], 0)
    same = np.abs(rgb[plain] - grey[plain][:, None]).max(1) <= 1  # the X-ray itself, windowed on the mask
    assert same.mean() > 0.98  # all but the structures' name labels
    assert rgb[:40, :60].mean() < grey[:40, :60].mean()  # the legend box darkens its corner


def test_checkerboard_alternates_xray_and_drr():
    rng = np.random.default_rng(1)
    xray, drr = rng.random((50, 70)), rng.random((50, 70)) * 5 + 2
    board = checkerboard_picture(xray, drr, tiles=5)
    assert board.size == (70, 50) and board.mode == "L"
    arr = np.asarray(board)
    assert np.array_equal(arr[:10, :10], to_uint8(xray)[:10, :10])
    assert np.array_equal(arr[:10, 10:20], to_uint8(drr)[:10, 10:20])
    assert np.array_equal(arr[10:20, 10:20], to_uint8(xray)[10:20, 10:20])
    with pytest.raises(ValueError, match="differ in size"):
        checkerboard_picture(xray, drr[:, :60])


def test_label_names_from_json_and_colour_table(tmp_path):
    (tmp_path / "n.json").write_text('{"1": "spleen", "5": "liver"}')
    assert read_label_names(tmp_path / "n.json") == ({1: "spleen", 5: "liver"}, {})
    (tmp_path / "c.ctbl").write_text("# Slicer colour table\n0 background 0 0 0 0\n30 vertebrae_L5 220 180 140 255\n")
    names, colors = read_label_names(tmp_path / "c.ctbl")
    assert names[30] == "vertebrae_L5" and colors[30] == (220, 180, 140)
    (tmp_path / "bad.txt").write_text("spleen 1\n")
    with pytest.raises(ValueError, match="colour table"):
        read_label_names(tmp_path / "bad.txt")


def test_outline_of_a_square_and_the_image_border():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:8] = True
    ring = outline(mask)
    assert ring.sum() == 2 * 5 + 2 * 2 and not ring[3:5, 4:7].any()
    cut = np.zeros((10, 12), bool)
    cut[:, :4] = True  # a structure leaving the image: no line along the image border
    assert np.array_equal(np.nonzero(outline(cut))[1], np.full(10, 3))
    assert Image.fromarray(ring).size == (12, 10)
