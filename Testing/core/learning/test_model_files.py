"""Model folders: safetensors + JSON, never pickle; a damaged pair or a model for another CT or camera is refused."""

import json
import pickle

import pytest
import torch
from xvrcore.learning.model_files import (
    CheckpointError,
    CheckpointMismatchError,
    camera_metadata,
    check_camera,
    check_volume,
    load_model,
    save_model,
)
from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseSpec

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
