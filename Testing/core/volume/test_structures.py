"""Structure-specific rendering (label maps) and the MRA/angiography mode."""

import numpy as np
import pytest
import torch
from xvrcore.drr import DRRVolume, render, render_channels
from xvrcore.geometry.camera import Intrinsics, project, world_to_camera
from xvrcore.geometry.carm import carm_pose
from xvrcore.volume import Volume, load_labelmap, load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.volume.labels import masked_attenuation, structure_volumes

STRUCTURES = [1, 5, 30, 31, 52]  # spleen, liver, two vertebrae, aorta (TotalSegmentator ids)


@pytest.fixture(scope="module")
def torso(shared_data):
    folder = shared_data / "open" / "ct" / "torso_totalseg"
    ct = load_volume(folder / "torso_ct_3mm_crop30.nii.gz")
    labels = load_labelmap(folder / "torso_ct_3mm_crop30_labels.nii.gz", reference=ct)
    return to_attenuation(ct), labels


def _view(center):
    """An oblique frontal view from 700 mm; the 96×80 image spans ~400×330 mm at the centre."""
    return carm_pose(torch.tensor([20.0, 10.0, 0.0, 0.0, -700.0, 0.0], dtype=torch.float64), "PA", torch.as_tensor(center))


K = Intrinsics(-170.0, 170.0, 47.5, 39.5, 96, 80)


def test_structure_channels_add_up_to_the_selected_structures(torso):
    mu, labels = torso
    pose = _view(mu.center)
    k = K
    channels = render_channels(
        [DRRVolume.from_volume(v, dtype=torch.float64) for v in structure_volumes(labels, STRUCTURES, mu).values()],
        pose, k, method="siddon", level=0,
    )
    assert channels.shape == (1, len(STRUCTURES), 80, 96)
    selected = render(DRRVolume.from_volume(masked_attenuation(mu, labels, STRUCTURES), dtype=torch.float64), pose, k,
                      method="siddon", level=0)
    assert torch.allclose(channels.sum(1, keepdim=True), selected, rtol=1e-9, atol=1e-9)
    assert (channels.amax((0, 2, 3)) > 0).all()  # every structure is in view


def test_mask_thickness_outline_covers_the_projected_structure(torso):
    mu, labels = torso
    pose = _view(mu.center)
    k = K
    liver = structure_volumes(labels, [5])[5]
    thickness = render(DRRVolume.from_volume(liver), pose.float(), k, level=0)[0, 0]
    # Every liver voxel centre projects inside the rendered silhouette.
    ijk = np.argwhere(labels.data == 5)[:, ::-1].astype(np.float64)
    uv, _ = project(torch.as_tensor(labels.ijk_to_ras(ijk)), world_to_camera(pose), k)
    cols, rows = uv[0, :, 0].round().long(), uv[0, :, 1].round().long()
    assert float((thickness[rows, cols] > 0).float().mean()) > 0.99
    # Thickness is a length in mm: at most the liver's extent, and the volume is conserved.
    extent = np.ptp(labels.ijk_to_ras(ijk), axis=0)
    assert 0 < float(thickness.max()) <= float(np.linalg.norm(extent)) + 3 * 3.0


def test_mra_mode_renders_only_the_bright_vessels():
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 10.0, size=(40, 48, 56)).astype(np.float32)  # (K, J, I) brain-like background
    k_idx, i_idx = np.meshgrid(np.arange(40), np.arange(56), indexing="ij")
    tube = np.broadcast_to((((k_idx - 20) ** 2 + (i_idx - 28) ** 2) <= 9)[:, None, :], data.shape)  # vessel along j
    data[tube] = 400.0
    mra = Volume(data, np.diag([0.8, 0.8, 0.8, 1.0]), "synthetic-mra", "mra")
    mu = to_attenuation(mra, mode="mra")
    assert float(mu.data[tube].min()) > 0
    leak = mu.data[~tube]  # background noise barely passes the vessel window, and only faintly
    assert float((leak > 0).mean()) < 0.02 and float(leak[leak > 0].mean()) < 0.2 * float(mu.data.max())
    # A frontal view (beam along RAS y): the vessel, parallel to y here, is seen end-on as a bright disc.
    pose = carm_pose(torch.tensor([0.0, 0.0, 0.0, 0.0, -300.0, 0.0], dtype=torch.float64), "PA", torch.as_tensor(mra.center))
    k = Intrinsics(-900.0, 900.0, 31.5, 31.5, 64, 64)
    img = render(DRRVolume.from_volume(mu, dtype=torch.float64), pose, k, level=0)[0, 0]
    axis_point = torch.as_tensor(mra.ijk_to_ras(np.array([[28.0, 24.0, 20.0]])))
    uv, _ = project(axis_point, world_to_camera(pose), k)
    disc = (img > 0.5 * img.max()).double()
    rows, cols = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64), indexing="ij")
    centre = [float((disc * cols).sum() / disc.sum()), float((disc * rows).sum() / disc.sum())]
    assert np.allclose(centre, uv[0, 0].numpy(), atol=0.5)
    # The spot holds the vessel's length times the contrast attenuation; elsewhere almost nothing.
    spot = float(img.max())
    assert spot == pytest.approx(48 * 0.8 * float(mu.data.max()), rel=0.15)
    assert float(np.percentile(img.numpy(), 90)) < 0.1 * spot
