"""Model folders (safetensors + JSON, never pickle) and import of the reference implementation's .pth files."""

import datetime
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from xvrcore.geometry.carm import from_diffdrr
from xvrcore.geometry.rotations import make_rigid, quaternion_to_matrix
from xvrcore.learning.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointSecurityError,
    camera_metadata,
    check_camera,
    check_volume,
    import_xvr,
    load_model,
    load_state,
    read_xvr_checkpoint,
    save_model,
    save_state,
    volume_fingerprint,
)
from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseRegressor, PoseSpec, to_world
from xvrcore.volume.grid import Volume

CENTER = [5.0, -20.0, 870.0]


def _metadata(arch: ArchitectureSpec, sha: str = "ab" * 32) -> dict:
    return {
        "architecture": arch.to_dict(),
        "camera": camera_metadata(1020.0, 32, 8.7, True),
        "input": InputSpec().to_dict(),
        "volume": {"sha256": sha, "center": CENTER},
        "training": {"kind": "patient-specific"},
    }


def _tiny_model():
    arch = ArchitectureSpec("resnet18", 8)
    model = arch.build(PoseSpec("rotation_6d", "ZXY", "PA", (0.0, -700.0, 0.0), 250.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return arch, model.eval()


def test_model_folder_round_trip(tmp_path):
    arch, model = _tiny_model()
    folder = save_model(tmp_path / "m", model, _metadata(arch))
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(folder)
    for key, value in model.regressor.state_dict().items():
        assert torch.equal(loaded.model.regressor.state_dict()[key], value)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format"] == "xvrcore-pose-model" and meta["software"]["xvrcore"]
    assert meta["pose"]["parameterization"] == "rotation_6d" and meta["camera"]["intrinsics"]["fx"] < 0
    assert loaded.intrinsics.width == 32 and loaded.intrinsics.mirrored


def test_loading_never_unpickles(tmp_path, monkeypatch):
    arch, model = _tiny_model()
    folder = save_model(tmp_path / "m", model, _metadata(arch))

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load_model(folder)


def test_a_damaged_or_swapped_weights_file_is_refused(tmp_path):
    arch, model = _tiny_model()
    folder = save_model(tmp_path / "m", model, _metadata(arch))
    _, other = _tiny_model()
    other_folder = save_model(tmp_path / "o", other, _metadata(arch))
    (folder / "model.safetensors").write_bytes((other_folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="no model found"):
        load_model(tmp_path / "missing")


def test_a_checkpoint_for_another_ct_or_geometry_is_refused():
    meta = _metadata(ArchitectureSpec())
    check_volume(meta, "ab" * 32)  # the same CT
    with pytest.raises(CheckpointMismatchError, match="another CT"):
        check_volume(meta, "cd" * 32)
    check_volume(meta, "cd" * 32, allow_other=True)  # finetuning
    check_camera(meta, camera_metadata(1020.0, 32, 8.7, True))
    with pytest.raises(CheckpointMismatchError, match="sdd"):
        check_camera(meta, camera_metadata(1000.0, 32, 8.7, True))
    with pytest.raises(CheckpointMismatchError, match="mirrored"):
        check_camera(meta, camera_metadata(1020.0, 32, 8.7, False))


def test_volume_fingerprint_sees_voxels_and_geometry():
    data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    base = volume_fingerprint(Volume(data, affine))
    assert base == volume_fingerprint(Volume(data.astype(np.float64), affine.astype(np.float32)))
    changed = data.copy()
    changed[3, 3, 3] += 1
    assert volume_fingerprint(Volume(changed, affine)) != base
    shifted = affine.copy()
    shifted[0, 3] = 1.0
    assert volume_fingerprint(Volume(data, shifted)) != base


def test_training_state_round_trip_keeps_types(tmp_path):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    state = {"optimizer": opt.state_dict(), "iteration": 7, "history": [{"mtre_mm": 1.5}], "pair": (1, "a")}
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["iteration"] == 7 and back["pair"] == (1, "a") and back["history"] == [{"mtre_mm": 1.5}]
    assert list(back["optimizer"]["state"]) == [0]  # integer keys stay integers
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt2.load_state_dict(back["optimizer"])


# ---- the reference implementation's checkpoints -----------------------------------------------------------


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
