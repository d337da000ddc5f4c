"""The pose contract at the command line: files with only ``intrinsics``, ``world_to_camera`` and
``projection`` (another tool's) start ``register`` and drive ``render``; ``--init carm`` starts from
the paper's C-arm parameters; a short ``--settings`` schedule keeps each run to a few iterations."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from xvrcore.app.cli import main
from xvrcore.drr import DRRVolume
from xvrcore.geometry.camera import Detector
from xvrcore.geometry.carm import carm_pose
from xvrcore.io.pose_json import camera_pose, pose_to_dict, write_pose_json
from xvrcore.volume import load_volume
from xvrcore.volume.attenuation import to_attenuation
from xvrcore.xray.synthesis import synthesize_xray, write_xray_dicom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETECTOR = Detector(1000.0, 64, 64, 4.8, 4.8)
CARM = [8.0, -4.0, 2.0, 3.0, -650.0, 5.0]  # PA, source posterior


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory):
    """The 3 mm torso CT, a 64×64 XA DICOM of it at the C-arm pose ``CARM``, and a two-stage settings file."""
    ct_path = shared_data / "open" / "ct" / "torso_totalseg" / "torso_ct_3mm.nii.gz"
    ct = load_volume(ct_path)
    truth = carm_pose(torch.tensor(CARM, dtype=torch.float64), "PA", torch.as_tensor(ct.center))
    folder = tmp_path_factory.mktemp("contract")
    image = synthesize_xray(DRRVolume.from_volume(to_attenuation(ct)), truth, DETECTOR, rng=np.random.default_rng(1))
    xray = write_xray_dicom(folder / "view.dcm", image, DETECTOR, truth, ct.center)
    settings = folder / "short.toml"
    settings.write_text("search = false\nretry_searches = []\n\n[[stages]]\nsize = 32\niterations = 3\n"
                        "lr_rotation = 0.001\nlr_translation = 0.1\n")
    return ct_path, truth, xray, settings


def _three_keys(pose, handedness):
    data = pose_to_dict(pose, handedness)
    return {key: data[key] for key in ("intrinsics", "world_to_camera", "projection")}


@pytest.mark.parametrize("handedness", ["left", "right"])
def test_register_starts_from_a_file_with_only_the_three_keys(case, tmp_path, capsys, handedness):
    ct_path, truth, xray, settings = case
    start = tmp_path / "view.json"
    start.write_text(json.dumps(_three_keys(camera_pose(DETECTOR.intrinsics(), truth), handedness)))
    out = tmp_path / "out"
    code = main(["register", str(xray), "--volume", str(ct_path), "--init-pose", str(start), "--settings",
                 str(settings), "--output", str(out), "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    init = json.loads((out / "view.json").read_text())["initialization"]
    assert init["method"] == "pose" and init["handedness"] == handedness and init["mirrored"] is True
    assert np.allclose(init["camera_to_world"], truth.numpy(), atol=1e-6)


def test_register_refuses_a_file_declaring_another_image_size(case, tmp_path, capsys):
    ct_path, truth, xray, settings = case
    start = tmp_path / "view.json"
    start.write_text(json.dumps({**_three_keys(camera_pose(DETECTOR.intrinsics(), truth), "left"),
                                 "image_size": [128, 128]}))
    code = main(["register", str(xray), "--volume", str(ct_path), "--init-pose", str(start), "--settings",
                 str(settings), "--output", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    assert code == 2
    assert "declares a 128×128 image but the image it goes with is 64×64" in capsys.readouterr().err


def test_register_starts_from_carm_parameters(case, tmp_path, capsys):
    ct_path, truth, xray, settings = case
    out = tmp_path / "out"
    code = main(["register", str(xray), "--volume", str(ct_path), "--init", "carm", "--carm", *map(str, CARM),
                 "--orientation", "PA", "--settings", str(settings), "--output", str(out), "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    init = json.loads((out / "view.json").read_text())["initialization"]
    assert init["method"] == "carm" and init["orientation"] == "PA" and init["carm"] == CARM
    assert np.allclose(init["camera_to_world"], truth.numpy(), atol=1e-9)
    # The other orientation is another pose: the option is not ignored.
    ap = carm_pose(torch.tensor(CARM, dtype=torch.float64), "AP", torch.as_tensor(init["isocenter_ras"]))
    assert not np.allclose(ap.numpy(), truth.numpy(), atol=1.0)


@pytest.mark.parametrize("args, words", [
    (["--init", "carm"], "--init carm needs the C-arm parameters"),
    (["--orientation", "AP"], "--orientation is the frame of --carm"),
])
def test_carm_start_options_are_checked_before_any_work(case, tmp_path, capsys, args, words):
    ct_path, _, xray, _ = case
    assert main(["register", str(xray), "--volume", str(ct_path), *args, "--output", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_render_takes_the_size_of_a_three_key_file_from_its_principal_point(case, tmp_path, capsys):
    ct_path, truth, _, _ = case
    ours = write_pose_json(tmp_path / "ours.json", camera_pose(DETECTOR.intrinsics(), truth))
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps(_three_keys(camera_pose(DETECTOR.intrinsics(), truth), "left")))
    assert main(["render", "--volume", str(ct_path), "--pose", str(ours), "--output", str(tmp_path / "a.png")]) == 0
    assert main(["render", "--volume", str(ct_path), "--pose", str(theirs), "--output", str(tmp_path / "b.png")]) == 0
    printed = capsys.readouterr().out
    assert "theirs.json: left-handed" in printed and "64×64 image (size from the principal point)" in printed
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert a.shape == (64, 64) and a.std() > 10
    assert np.array_equal(a, b)
    # --size stands for the image the pose goes with: a file declaring another size is refused.
    assert main(["render", "--volume", str(ct_path), "--pose", str(ours), "--size", "32",
                 "--output", str(tmp_path / "c.png")]) == 2
    assert "declares a 64×64 image but the image it goes with is 32×32" in capsys.readouterr().err
