"""Import of the reference implementation's .pth checkpoints: same weights, same pose meaning, no code run."""

import datetime
import os
import pathlib
import pickle

import pytest
import torch
from xvrcore.geometry.carm import from_diffdrr
from xvrcore.geometry.rotations import make_rigid, quaternion_to_matrix
from xvrcore.learning.model_files import CheckpointError, load_model
from xvrcore.learning.network import PoseRegressor, to_world
from xvrcore.learning.xvr_import import CheckpointSecurityError, import_xvr, read_xvr_checkpoint

CENTER = [5.0, -20.0, 870.0]


def _write_xvr_checkpoint(path, parameterization="quaternion_adjugate", orientation="AP", reverse_x_axis=False, unit=1000.0):
    regressor = PoseRegressor("resnet18", parameterization).eval()
    with torch.no_grad():
        regressor.rot_regression.bias.normal_()
        regressor.xyz_regression.bias.copy_(torch.tensor([0.01, 0.8 if orientation == "AP" else -0.8, -0.02]) * (1000.0 / (unit or 1.0)))
    config = {
        "volpath": pathlib.Path("/data/subject07/volume.nii.gz"), "maskpath": None, "outpath": pathlib.Path("/models"),
        "alphamin": -45.0, "alphamax": 45.0, "sdd": 1020.0, "height": 128, "delx": 2.1764375,
        "orientation": orientation, "reverse_x_axis": reverse_x_axis, "renderer": "trilinear",
        "parameterization": parameterization, "convention": "ZXY", "model_name": "resnet18", "pretrained": False,
        "norm_layer": "groupnorm", "p_augmentation": 0.333, "lr": 2e-4, "batch_size": 116, "patch_size": None,
    }
    if unit is not None:
        config["unit_conversion_factor"] = unit
    optimizer = torch.optim.Adam(regressor.parameters(), lr=2e-4)
    torch.save({
        "model_state_dict": regressor.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": {"last_epoch": 3, "_step_count": 4}, "itr": 4000, "model_number": 4,
        "date": datetime.datetime(2025, 3, 1, 12, 30), "config": config,
    }, path)
    return regressor


def _reference_pose(regressor, x, unit, orientation, reverse_x_axis):
    """The pose as the reference would decode it: quaternion from the adjugate, P = [R | R·t], DiffDRR frame."""
    with torch.no_grad():
        rot, xyz = regressor(x)
    rot, xyz = rot.double(), xyz.double() * unit
    i, j = torch.triu_indices(4, 4)
    a = torch.zeros(rot.shape[0], 4, 4, dtype=torch.float64)
    a[:, i, j] = rot
    a[:, j, i] = rot
    best = a.norm(dim=1).argmax(1)
    q = a[torch.arange(a.shape[0]), best] / a.norm(dim=1).amax(1, keepdim=True)
    r = quaternion_to_matrix(q)
    p = make_rigid(r, (r @ xyz[..., None])[..., 0])
    return from_diffdrr(p, orientation, reverse_x_axis, isocenter=torch.tensor(CENTER, dtype=torch.float64))


@pytest.mark.parametrize(
    ("orientation", "reverse_x_axis", "mirrored"),
    [("AP", False, True), ("AP", True, False), ("PA", False, False), ("PA", True, True)],
)
def test_xvr_checkpoint_import_keeps_weights_and_pose_meaning(tmp_path, orientation, reverse_x_axis, mirrored):
    pth = tmp_path / "0004.pth"
    regressor = _write_xvr_checkpoint(pth, orientation=orientation, reverse_x_axis=reverse_x_axis)
    folder = import_xvr(pth, tmp_path / "imported")
    loaded = load_model(folder)
    for key, value in regressor.state_dict().items():
        assert torch.equal(loaded.model.regressor.state_dict()[key], value)
    meta = loaded.metadata
    assert meta["camera"]["mirrored"] is mirrored and loaded.intrinsics.mirrored is mirrored
    assert meta["camera"]["size"] == 128 and meta["camera"]["pixel_spacing"] == 2.1764375
    assert meta["source"]["date"] == "2025-03-01T12:30:00" and meta["training"]["iteration"] == 4000
    assert "subject07" not in (folder / "model.json").read_text()  # paths are not copied
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        ours = to_world(loaded.model(x).double(), CENTER)
    expected, expected_mirror = _reference_pose(regressor, x, 1000.0, orientation, reverse_x_axis)
    assert expected_mirror is mirrored
    assert torch.allclose(ours, expected, atol=1e-3)


def test_arxiv_era_checkpoint_without_unit_factor_uses_millimetres(tmp_path):
    pth = tmp_path / "old.pth"
    _write_xvr_checkpoint(pth, parameterization="euler_angles", orientation="PA", reverse_x_axis=True, unit=None)
    loaded = load_model(import_xvr(pth, tmp_path / "m"))
    assert loaded.pose_spec.translation_scale == 1.0 and loaded.pose_spec.parameterization == "euler_angles"


def test_restricted_unpickler_reads_dates_and_paths(tmp_path):
    pth = tmp_path / "c.pth"
    _write_xvr_checkpoint(pth)
    ckpt = read_xvr_checkpoint(pth)
    assert ckpt["date"] == datetime.datetime(2025, 3, 1, 12, 30)
    assert ckpt["config"]["volpath"] == "/data/subject07/volume.nii.gz"  # a string, never a Path object
    assert torch.is_tensor(ckpt["model_state_dict"]["backbone.conv1.weight"])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    regressor = PoseRegressor("resnet18", "quaternion_adjugate")
    torch.save({"model_state_dict": regressor.state_dict(), "config": {"note": _Exploit(marker)}}, pth)
    with pytest.raises(CheckpointSecurityError, match="system"):
        import_xvr(pth, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out" / "model.json").exists()
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match="not a PyTorch zip"):
        read_xvr_checkpoint(raw)
    assert not marker.exists()


def test_unsupported_xvr_networks_are_refused_clearly(tmp_path):
    pth = tmp_path / "bn.pth"
    torch.save({"model_state_dict": {}, "config": {"model_name": "resnet18", "norm_layer": "batchnorm", "parameterization": "quaternion",
                                                  "height": 128, "sdd": 1020.0, "delx": 2.0, "orientation": "AP"}}, pth)
    with pytest.raises(CheckpointError, match="GroupNorm"):
        import_xvr(pth, tmp_path / "out")
