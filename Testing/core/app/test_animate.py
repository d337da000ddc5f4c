"""Watching a registration: ``register --animate`` records the trajectory and draws it; ``xvrcore animate``
draws it again from the files and refuses files that do not go together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from core_helpers import small_synthetic_xa
from PIL import Image, ImageSequence
from xvrcore.app.cli import main
from xvrcore.io.animation import CAPTION_HEIGHT
from xvrcore.io.pose_json import read_pose_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def xa(torso_ct: Path, tmp_path_factory) -> Path:
    """A 64×64 synthetic XA of the torso CT at LAO 10°, CAU 5° (its header says so)."""
    return small_synthetic_xa(torso_ct, tmp_path_factory.mktemp("xa") / "view.dcm")


@pytest.fixture(scope="module")
def registered(torso_ct: Path, xa: Path, tmp_path_factory) -> Path:
    """``register --animate`` from a start 6° off (--primary-angle 16 for the header's 10), two short stages."""
    out = tmp_path_factory.mktemp("animated")
    code = main(["register", xa, "--volume", torso_ct, "--output", out, "--animate", "--no-retry", "--primary-angle",
                 "16", "--scales", "32", "64", "--n-itrs", "25", "20", "--quiet"])
    assert code == 0
    return out


def _frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB"), dtype=np.float64) for frame in ImageSequence.Iterator(gif)]


def _fusion_correlation(frame: np.ndarray) -> float:
    """Correlation of the fusion panel's DRR (green) with its X-ray (red), over the exposed pixels."""
    panel = frame[CAPTION_HEIGHT:, frame.shape[1] // 2:]
    xray, drr = panel[..., 0], panel[..., 1]
    exposed = (xray > 0) | (drr > 0)
    return float(np.corrcoef(xray[exposed], drr[exposed])[0, 1])


def test_register_records_the_trajectory_it_went_through(registered):
    result = json.loads((registered / "view.json").read_text())
    trajectory = json.loads((registered / "view_trajectory.json").read_text())
    assert result["outputs"]["trajectory"] == "view_trajectory.json"
    assert result["outputs"]["animation"] == "view_animation.gif"
    pose = read_pose_json(registered / "view.json").camera_to_world
    assert np.allclose(trajectory["result"]["camera_to_world"], pose.numpy(), atol=1e-9)
    assert trajectory["result"]["similarity"] == result["similarity"]["final"]
    assert trajectory["initial"]["similarity"] == result["similarity"]["initial"]
    logs = result["registration"]["stages"]
    assert [s["size"] for s in logs] == [[32, 32], [64, 64]]
    for index, log in enumerate(logs):  # every iteration of a short run, as the stage logs count and score them
        stage = [s for s in trajectory["samples"] if s["stage"] == index]
        assert [s["iteration"] for s in stage] == list(range(1, log["iterations"] + 1))
        assert all(s["size"] == log["size"] and s["stages"] == 2 for s in stage)
        assert max(s["similarity"] for s in stage) == log["similarity"]
    last_stage = [s for s in trajectory["samples"] if s["stage"] == 1]
    best = max(last_stage, key=lambda s: s["similarity"])
    assert best["camera_to_world"] == trajectory["result"]["camera_to_world"]  # the stage's best is the result
    assert trajectory["image_size"] == [64, 64] and "view" not in json.dumps(trajectory)


def test_the_animation_shows_the_drr_moving_onto_the_xray(registered):
    trajectory = json.loads((registered / "view_trajectory.json").read_text())
    frames = _frames(registered / "view_animation.gif")
    assert len(frames) == len(trajectory["samples"]) + 2  # the start, every sample, the result
    assert frames[0].shape == (CAPTION_HEIGHT + 256, 2 * 256, 3)  # two 256-pixel panels under the caption
    assert np.abs(frames[0] - frames[-1]).mean() > 1.0
    start, end = _fusion_correlation(frames[0]), _fusion_correlation(frames[-1])
    assert 1 - end < 0.5 * (1 - start), (start, end)  # the mismatch at least halves (measured: 0.12 → 0.035)


def test_animate_draws_the_files_again_at_the_size_asked(registered, torso_ct, xa, tmp_path, capsys):
    output = tmp_path / "again.gif"
    code = main(["animate", "--volume", torso_ct, "--xray", xa, "--trajectory", registered / "view_trajectory.json",
                 "--output", output, "--size", "128", "--fps", "5"])
    assert code == 0 and "again.gif" in capsys.readouterr().out
    frames, before = _frames(output), _frames(registered / "view_animation.gif")
    assert len(frames) == len(before) and frames[0].shape == (CAPTION_HEIGHT + 128, 256, 3)
    with Image.open(output) as gif:
        assert gif.info["duration"] >= 1000 and gif.info["loop"] == 0  # the start is held
        gif.seek(1)
        assert gif.info["duration"] == 200  # 5 frames per second
    assert 1 - _fusion_correlation(frames[-1]) < 0.5 * (1 - _fusion_correlation(frames[0]))


def _error(capsys, *args) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _animate(registered, torso_ct, xa, trajectory, output):
    return ("animate", "--volume", torso_ct, "--xray", xa, "--trajectory", trajectory, "--output", output)


def test_animate_refuses_a_trajectory_of_another_image(registered, torso_ct, xa, tmp_path, capsys):
    record = json.loads((registered / "view_trajectory.json").read_text())
    record["image_size"] = [32, 32]
    record["intrinsics"][0][2], record["intrinsics"][1][2] = 15.5, 15.5
    other = tmp_path / "other_trajectory.json"
    other.write_text(json.dumps(record))
    err = _error(capsys, *_animate(registered, torso_ct, xa, other, tmp_path / "a.gif"))
    assert "other_trajectory.json" in err and "32×32" in err and "view.dcm is 64×64" in err
    assert not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize("content, words", [
    (lambda record: json.dumps({**record, "samples": []}), "is empty"),
    (lambda record: "{not json", "not a readable trajectory file"),
    (lambda record: json.dumps({"intrinsics": record["intrinsics"]}), "not a registration trajectory"),
])
def test_animate_refuses_an_empty_or_bad_trajectory(registered, torso_ct, xa, tmp_path, capsys, content, words):
    record = json.loads((registered / "view_trajectory.json").read_text())
    bad = tmp_path / "bad_trajectory.json"
    bad.write_text(content(record))
    err = _error(capsys, *_animate(registered, torso_ct, xa, bad, tmp_path / "a.gif"))
    assert "bad_trajectory.json" in err and words in err
    assert list(tmp_path.iterdir()) == [bad]


def test_animate_writes_only_gif(registered, torso_ct, xa, tmp_path, capsys):
    err = _error(capsys, *_animate(registered, torso_ct, xa, registered / "view_trajectory.json", tmp_path / "a.mp4"))
    assert "a.mp4" in err and "only a GIF" in err


def test_save_trajectory_alone_writes_no_animation(torso_ct, xa, tmp_path):
    code = main(["register", xa, "--volume", torso_ct, "--output", tmp_path, "--save-trajectory", "--no-retry",
                 "--scales", "32", "--n-itrs", "5", "--quiet"])
    assert code == 0
    assert json.loads((tmp_path / "view.json").read_text())["outputs"]["trajectory"] == "view_trajectory.json"
    assert (tmp_path / "view_trajectory.json").is_file() and not (tmp_path / "view_animation.gif").exists()


def test_a_cancel_while_drawing_writes_no_animation(registered, torso_ct, xa, tmp_path):
    from xvrcore.drr import DRRVolume
    from xvrcore.io.trajectory import read_trajectory
    from xvrcore.registration.animation import write_animation
    from xvrcore.volume import load_volume
    from xvrcore.volume.attenuation import to_attenuation
    from xvrcore.xray import read_xray

    volume = DRRVolume.from_volume(to_attenuation(load_volume(torso_ct)))
    xray, calls = read_xray(xa), []
    stop = lambda: calls.append(1) or len(calls) > 1  # cancelled after the first batch of DRRs
    trajectory = read_trajectory(registered / "view_trajectory.json")
    assert write_animation(tmp_path / "a.gif", volume, xray.pixels, xray.mask, trajectory, should_stop=stop) is None
    assert list(tmp_path.iterdir()) == [] and len(calls) == 2
