"""Pulling pretrained models: a local repository folder and an offline Hugging Face cache (nothing downloads)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from xvrcore.learning.hub import pull
from xvrcore.learning.model_files import CheckpointError, camera_metadata, load_model, save_model
from xvrcore.learning.network import ArchitectureSpec, InputSpec, PoseRegressor, PoseSpec

COMMIT_MAIN = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "89abcdef0123456789abcdef0123456789abcdef"


def _model_folder(path, parameterization="rotation_6d"):
    arch = ArchitectureSpec("resnet18", 8)
    model = arch.build(PoseSpec(parameterization, "ZXY", "PA", (0.0, -700.0, 0.0), 250.0))
    meta = {"architecture": arch.to_dict(), "camera": camera_metadata(1020.0, 32, 8.7, True),
            "input": InputSpec().to_dict(), "volume": None, "training": {"kind": "patient-agnostic"}}
    return save_model(path, model, meta)


def _xvr_pth(path):
    regressor = PoseRegressor("resnet18", "quaternion_adjugate")
    config = {"model_name": "resnet18", "norm_layer": "groupnorm", "parameterization": "quaternion_adjugate",
              "convention": "ZXY", "height": 128, "sdd": 1020.0, "delx": 2.1764375, "orientation": "AP",
              "reverse_x_axis": False, "unit_conversion_factor": 1000.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": regressor.state_dict(), "config": config}, path)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A local copy of a model repository: a model at the root, another in a folder, an xvr file."""
    root = tmp_path_factory.mktemp("repo")
    _model_folder(root)
    _model_folder(root / "skull", "quaternion_adjugate")
    _xvr_pth(root / "pelvis" / "patient_specific" / "subject01_0350.pth")
    return root


def test_local_repository_folder(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XVR_MODELS_DIR", str(tmp_path / "models"))
    assert pull(str(repo)) == repo
    assert pull(str(repo), file="skull") == repo / "skull"
    converted = pull(str(repo), file="pelvis/patient_specific/subject01_0350.pth")
    assert converted.parent == tmp_path / "models" / "xvr" and (converted / "model.json").is_file()
    stamp = (converted / "model.json").stat().st_mtime_ns
    assert pull(str(repo), file="pelvis/patient_specific/subject01_0350.pth") == converted  # converted once
    assert (converted / "model.json").stat().st_mtime_ns == stamp
    assert load_model(converted).metadata["source"]["kind"] == "xvr"
    with pytest.raises(CheckpointError, match="not in"):
        pull(str(repo), file="vessels")
    with pytest.raises(CheckpointError, match="neither a local folder"):
        pull("not a repo id")


def _fill_cache(cache, repo, name="acme/xvr-models"):
    """The layout huggingface_hub writes: refs/<revision> → commit, snapshots/<commit>/<files> as
    relative links into blobs/<sha256> (a model's files link out of its folder, into one blobs folder)."""
    folder = cache / f"models--{name.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for ref, commit in (("main", COMMIT_MAIN), ("v1", COMMIT_V1)):
        snap = folder / "snapshots" / commit
        for source in sorted(p for p in repo.rglob("*") if p.is_file()):
            blob = folder / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
            shutil.copyfile(source, blob)
            link = snap / source.relative_to(repo)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder


def test_offline_pull_from_the_hugging_face_cache(repo, tmp_path):
    cache = _fill_cache(tmp_path / "hf", repo)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XVR_MODELS_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(
        f"""
        import json
        from xvrcore.learning.hub import pull
        from xvrcore.learning.model_files import CheckpointError
        out = {{
            "main": str(pull("acme/xvr-models", cache_dir={str(tmp_path / 'hf')!r})),
            "v1": str(pull("acme/xvr-models", revision="v1", cache_dir={str(tmp_path / 'hf')!r})),
            "pth": str(pull("acme/xvr-models", file="pelvis/patient_specific/subject01_0350.pth", cache_dir={str(tmp_path / 'hf')!r})),
        }}
        try:
            pull("acme/never-pulled", cache_dir={str(tmp_path / 'hf')!r})
        except CheckpointError as exc:
            out["error"] = str(exc)
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["main"] == str(cache / "snapshots" / COMMIT_MAIN)
    assert out["v1"] == str(cache / "snapshots" / COMMIT_V1)
    assert out["pth"].startswith(str(tmp_path / "models")) and load_model(out["pth"]).metadata["camera"]["mirrored"]
    assert "not in the Hugging Face cache" in out["error"] and "online" in out["error"]


def test_cli_model_pull_and_import(repo, tmp_path):
    cache = _fill_cache(tmp_path / "hf", repo)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XVR_MODELS_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "xvrcore", "model"]
    ok = subprocess.run([*cli, "pull", "acme/xvr-models", "--file", "skull", "--cache-dir", str(tmp_path / "hf")],
                        capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == str(cache / "snapshots" / COMMIT_MAIN / "skull")
    missing = subprocess.run([*cli, "pull", "acme/other", "--cache-dir", str(tmp_path / "hf")],
                             capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=120, check=False)
    assert missing.returncode == 2 and "not in the Hugging Face cache" in missing.stderr
    imported = subprocess.run([*cli, "import-xvr", str(repo / "pelvis" / "patient_specific" / "subject01_0350.pth"),
                               str(tmp_path / "imported")], capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=120, check=False)
    assert imported.returncode == 0, imported.stderr
    assert load_model(tmp_path / "imported").pose_spec.translation_scale == 1000.0
