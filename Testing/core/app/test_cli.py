"""The command line: the demo on the shipped pelvis CT, and rendering from a written pose JSON."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from xvrcore.app.cli import main
from xvrcore.geometry.camera import project, world_to_camera
from xvrcore.io.pose_json import read_pose_json


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, pelvis_ct_path):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--output", str(out), "--ct", str(pelvis_ct_path), "--size", "160", "--quiet", "--no-registration"]) == 0
    return out


def test_demo_writes_pictures_and_pose_files(demo_dir):
    names = sorted(p.name for p in demo_dir.iterdir())
    assert names == ["pelvis_ap.json", "pelvis_ap.png", "pelvis_lateral.json", "pelvis_lateral.png", "pelvis_views.png"]
    for view in ("ap", "lateral"):
        img = np.asarray(Image.open(demo_dir / f"pelvis_{view}.png"))
        assert img.shape == (100, 160)
        assert img.std() > 20  # a real picture, not a blank
        pose = read_pose_json(demo_dir / f"pelvis_{view}.json")
        data = json.loads((demo_dir / f"pelvis_{view}.json").read_text())
        assert data["handedness"] == "left" and pose.intrinsics.mirrored
        # The principal ray passes through the isocentre: it projects to the principal point.
        iso = torch.tensor([data["carm"]["isocenter_ras"]], dtype=torch.float64)
        uv, depth = project(iso, world_to_camera(torch.as_tensor(pose.camera_to_world)), pose.intrinsics)
        assert np.allclose(uv[0, 0].numpy(), [pose.intrinsics.cx, pose.intrinsics.cy], atol=1e-6)
        assert float(depth) == pytest.approx(800.0)


def test_frontal_view_shows_patient_right_on_the_image_left(demo_dir):
    data = json.loads((demo_dir / "pelvis_ap.json").read_text())
    pose = read_pose_json(demo_dir / "pelvis_ap.json")
    right = torch.tensor([data["carm"]["isocenter_ras"]], dtype=torch.float64) + torch.tensor([[50.0, 0, 0]], dtype=torch.float64)
    uv, _ = project(right, world_to_camera(torch.as_tensor(pose.camera_to_world)), pose.intrinsics)
    assert float(uv[0, 0, 0]) < pose.intrinsics.cx - 10


def test_render_from_the_pose_json_reproduces_the_demo(demo_dir, pelvis_ct_path, tmp_path):
    out = tmp_path / "again.png"
    assert main(["render", "--volume", str(pelvis_ct_path), "--pose", str(demo_dir / "pelvis_ap.json"), "--output", str(out)]) == 0
    again = np.asarray(Image.open(out)).astype(float)
    demo = np.asarray(Image.open(demo_dir / "pelvis_ap.png")).astype(float)
    assert again.shape == demo.shape
    assert np.corrcoef(again.ravel(), demo.ravel())[0, 1] > 0.95  # same view; only the display window differs


def test_clear_errors_for_bad_inputs(tmp_path, capsys):
    assert main(["render", "--volume", str(tmp_path / "missing.nii.gz"), "--carm", "0", "0", "0", "0", "-800", "0",
                 "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.nii.gz" in err and "error" in err
    bad = tmp_path / "pose.json"
    bad.write_text("{}")
    assert main(["render", "--volume", str(tmp_path / "missing.nii.gz"), "--pose", str(bad), "--output", str(tmp_path / "y.png")]) == 2


@pytest.mark.slow
def test_demo_main_job_registers_the_simulated_xray(tmp_path, pelvis_ct_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--ct", str(pelvis_ct_path), "--size", "96", "--quiet"]) == 0
    out = capsys.readouterr().out
    final = float(out.split("after refinement")[0].split(",")[-1].strip().split()[0])
    assert final < 1.0, out
    for name in ("xray/pelvis_xray.dcm", "registration/pelvis_xray.json", "registration/pelvis_xray.tfm",
                 "registration/pelvis_xray_overlay.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_train_profiles_set_defaults_that_explicit_options_override():
    from xvrcore.app.cli import _training_config, build_parser
    from xvrcore.learning.training import PROFILES, profile_settings

    def config(*options):
        return _training_config(build_parser().parse_args(["train", "--volume", "ct.nii.gz", "--output", "out", *options]))

    standard = config()
    assert (standard.image_size, standard.width, standard.batch_size, standard.lr, standard.pose_loss_fraction) == (
        128, 64, 32, 1e-3, 0.0)
    quick = config("--profile", "quick", "--width", "48")
    assert (quick.image_size, quick.width, quick.batch_size, quick.lr, quick.pose_loss_fraction) == (64, 48, 16, 3e-3, 1.0)
    assert config("--pose-loss-fraction", "0.25").pose_loss_fraction == 0.25
    with pytest.raises(ValueError, match="unknown training profile 'fast'"):
        profile_settings("fast")

    # The parser's profile choices are the table itself, so they cannot drift from it.
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "profile")
    assert train.choices is PROFILES
