"""Initial pose prediction: X-rays with any intrinsics are resampled to the model's canonical camera (Fig. S2)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from xvrcore.drr import DRRVolume, render
from xvrcore.geometry.camera import Detector
from xvrcore.learning.inference import PatientFrame, predict_pose, resample_to_intrinsics
from xvrcore.learning.model_files import CheckpointError, CheckpointMismatchError, camera_metadata, save_model
from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseSpec, minmax, prepare_input, to_world
from xvrcore.learning.sampling import PRESETS, keyed_generator, sample_poses
from xvrcore.metrics.similarity import ncc
from xvrcore.volume import load_volume, volume_fingerprint
from xvrcore.volume.attenuation import to_attenuation

PELVIS = PRESETS["pelvis"]
CANONICAL = Detector(PELVIS.sdd, 64, 64, PELVIS.pixel_spacing(64), PELVIS.pixel_spacing(64), mirrored=True).intrinsics()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(shared_data: Path):
    ct = load_volume(shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz")
    volume = DRRVolume.from_volume(to_attenuation(ct))
    poses, _ = sample_poses(PELVIS.ranges, 2, keyed_generator(11, 0), torch.as_tensor(ct.center))
    return ct, volume, poses


def _drr(volume, pose, intrinsics):
    return render(volume, pose.float(), intrinsics, method="siddon")[0, 0]


OTHER_CAMERAS = {
    # finer pixels, longer SDD, principal point off centre, pinhole (non-mirrored) view
    "finer-pinhole": Detector(1100, 240, 300, 0.8, 0.8, principal_offset=(20, -15), mirrored=False).intrinsics(),
    "finer-mirrored": Detector(1100, 240, 300, 0.8, 0.8, principal_offset=(20, -15), mirrored=True).intrinsics(),
    # coarser, shorter SDD, small field of view
    "coarser-mirrored": Detector(950, 90, 70, 3.5, 3.5, principal_offset=(-10, 5), mirrored=True).intrinsics(),
}


@pytest.mark.parametrize("camera", sorted(OTHER_CAMERAS))
def test_resampled_xray_matches_a_drr_rendered_at_the_canonical_intrinsics(scene, camera):
    _, volume, poses = scene
    other = OTHER_CAMERAS[camera]
    for pose in poses:
        xray = _drr(volume, pose, other)
        direct = _drr(volume, pose, CANONICAL)
        resampled, inside = resample_to_intrinsics(xray, None, other, CANONICAL)
        assert resampled.shape == (64, 64) and inside.mean() > 0.3
        assert float(ncc(resampled, direct, mask=inside)) > 0.99
        if other.mirrored != CANONICAL.mirrored:
            # Negative control: ignoring the mirroring gives the wrong picture.
            wrong, _ = resample_to_intrinsics(xray, None, other.with_mirror(CANONICAL.mirrored), CANONICAL)
            assert float(ncc(wrong, direct, mask=inside)) < 0.9


def test_resampling_respects_the_exposure_mask(scene):
    _, volume, poses = scene
    other = OTHER_CAMERAS["finer-mirrored"]
    xray = _drr(volume, poses[0], other)
    mask = torch.ones(other.height, other.width, dtype=torch.bool)
    mask[:, : other.width // 3] = False  # a collimator blade
    resampled, inside = resample_to_intrinsics(xray, mask, other, CANONICAL)
    _, full = resample_to_intrinsics(xray, None, other, CANONICAL)
    assert 0 < inside.sum() < full.sum()
    assert float(resampled[inside == 0].abs().max()) == 0.0
    # Mirrored X-ray: the blade on its left (low columns) is on the mirrored canonical image's left too.
    cols = inside.nonzero()[:, 1]
    assert int(cols.min()) > 0 and int((full > 0).nonzero()[:, 1].min()) < int(cols.min())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, scene):
    ct, _, _ = scene
    arch = ArchitectureSpec("resnet18", 8)
    spec = PoseSpec("quaternion_adjugate", "ZXY", "PA", (0.0, -725.0, 0.0), 275.0)
    torch.manual_seed(3)
    model = arch.build(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.start_at(torch.eye(3))
    meta = {
        "architecture": arch.to_dict(),
        "camera": camera_metadata(PELVIS.sdd, 64, PELVIS.pixel_spacing(64), True),
        "input": InputSpec().to_dict(),
        "volume": {"sha256": volume_fingerprint(ct), "center": [float(v) for v in ct.center]},
        "training": {"kind": "patient-specific"},
    }
    return save_model(tmp_path_factory.mktemp("model") / "m", model, meta)


def test_prediction_is_the_network_on_the_canonical_image_placed_in_the_ct(scene, model_dir):
    from xvrcore.learning import load_model

    ct, volume, poses = scene
    loaded = load_model(model_dir)
    drr = _drr(volume, poses[0], CANONICAL)
    predicted = predict_pose(loaded, drr, None, CANONICAL, ct)
    with torch.no_grad():
        centred = loaded.model(prepare_input(minmax(drr[None, None]), loaded.input_spec)).double()
    assert torch.allclose(predicted, to_world(centred, ct.center)[0], atol=1e-6)
    assert predicted.dtype == torch.float64 and torch.linalg.det(predicted[:3, :3]) == pytest.approx(1.0)
    # Without a frame the model's own CT centre is used.
    assert torch.allclose(predict_pose(model_dir, drr, None, CANONICAL), predicted, atol=1e-6)


def test_prediction_does_not_depend_on_the_xray_intrinsics(scene, model_dir):
    ct, volume, poses = scene
    frame = PatientFrame.from_volume(ct)
    direct = _drr(volume, poses[1], CANONICAL)
    for other in OTHER_CAMERAS.values():
        xray = _drr(volume, poses[1], other)
        pose = predict_pose(model_dir, xray, np.ones((other.height, other.width), bool), other, frame)
        # The network sees the same picture (and the same unexposed part) as a canonical DRR.
        _, inside = resample_to_intrinsics(xray, None, other, CANONICAL)
        reference = predict_pose(model_dir, direct, inside > 0, CANONICAL, frame)
        assert float((pose[:3, 3] - reference[:3, 3]).norm()) < 2.0  # mm, of a 700 mm source distance
        assert torch.allclose(pose[:3, :3], reference[:3, :3], atol=5e-3)


def test_a_patient_specific_model_refuses_another_ct(scene, model_dir, shared_data):
    _, volume, poses = scene
    other_ct = load_volume(shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm_crop30.nii.gz")
    drr = _drr(volume, poses[0], CANONICAL)
    with pytest.raises(CheckpointMismatchError, match="another CT"):
        predict_pose(model_dir, drr, None, CANONICAL, other_ct)
    pose = predict_pose(model_dir, drr, None, CANONICAL, other_ct, allow_other_volume=True)
    assert torch.isfinite(pose).all()


def test_an_image_outside_the_field_of_view_is_refused(scene, model_dir):
    ct, _, _ = scene
    tiny = Detector(1020, 8, 8, 0.5, 0.5, principal_offset=(400, 0)).intrinsics()  # sees nothing of the canonical field
    with pytest.raises(ValueError, match="field of view"):
        predict_pose(model_dir, torch.ones(8, 8), None, tiny, ct)
    with pytest.raises(ValueError, match="intrinsics describe"):
        predict_pose(model_dir, torch.ones(9, 8), None, tiny, ct)


def test_a_model_without_its_ct_needs_the_frame(tmp_path):
    arch = ArchitectureSpec("resnet18", 8)
    model = arch.build(PoseSpec("rotation_6d", "ZXY", "AP", (0.0, 0.0, 0.0), 1000.0))
    meta = {"architecture": arch.to_dict(), "camera": camera_metadata(1020.0, 32, 8.7, True),
            "input": InputSpec().to_dict(), "volume": None, "training": {"kind": "imported"}}
    folder = save_model(tmp_path / "m", model, meta)
    k = Detector(1020.0, 32, 32, 8.7, 8.7).intrinsics()
    with pytest.raises(CheckpointError, match="CT's frame"):
        predict_pose(folder, torch.rand(32, 32), None, k)
    pose = predict_pose(folder, torch.rand(32, 32), None, k, (1.0, 2.0, 3.0))
    assert pose.shape == (4, 4)
